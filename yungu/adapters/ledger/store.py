"""The durable ledger: the pure ``Book`` rules applied atomically in SQLite or PostgreSQL.

One ``submit`` call is one database transaction: it locks the accounts it touches
(SQLite: ``BEGIN IMMEDIATE`` serialises writers; PostgreSQL: ``SELECT ... FOR UPDATE`` in
account-id order, so concurrent batches cannot deadlock), reads the transfers whose ids it
repeats and the pending transfers it closes, runs the rules, and writes the new transfers,
pending-state changes and balances. Either the whole batch is committed or nothing is.

Batching is the throughput lever: a batch of N transfers costs one commit (one fsync on
PostgreSQL, one WAL append on SQLite) instead of N. Results are per transfer, as in
TigerBeetle: a failed transfer in a non-linked batch changes nothing and does not stop the
others.

PostgreSQL has a set-based fast path (``_submit_set_based``, issue 15.4) for the common batch:
only new single/pending transfers, well formed, distinct ids. It never reads the accounts into
Python: one statement locks them (in id order) and checks, in SQL against the per-account sums
of the batch's debits, that every account exists, has the batch's currency and stays within
its limit even if every debit came first; one more finds repeated ids; then the batch is
COPYed and the balances move by one ``UPDATE ... FROM unnest(deltas)``. Under those
conditions every transfer of the batch succeeds when the rules are applied one by one (a
debit's prefix never exceeds the batch's total debit, credits only add), so the outcomes are
exactly ``ok`` for each. Any other batch, or one the gate refuses, takes the general path
(the ``Book`` rules in Python) in the same transaction, with the locks already held: results
never depend on which path ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Select, String, and_, any_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from yungu.adapters.store.ledger_tables import ledger_accounts as A
from yungu.adapters.store.ledger_tables import ledger_transfers as T
from yungu.domain.clock import Clock
from yungu.domain.errors import Conflict, InsufficientFunds, InvalidInput, NotFound, Unavailable
from yungu.engines.ledger import (
    Account,
    AccountKind,
    Balance,
    Book,
    Outcome,
    PendingState,
    Recorded,
    Result,
    Transfer,
    TransferKind,
    check_shape,
)

CHUNK = 900  # stay under SQLite's bound-parameter limits on IN (...)


def raise_for(outcome: Outcome) -> None:
    """Map a failed outcome to the exception tree (for single-transfer API calls)."""
    r = outcome.result
    if r.ok:
        return
    detail: dict[str, object] = {"transfer_id": outcome.id, "result": r.value}
    msg = f"transfer {outcome.id}: {r.value}" + (f" ({outcome.detail})" if outcome.detail else "")
    if r in (Result.UNKNOWN_ACCOUNT, Result.PENDING_NOT_FOUND):
        raise NotFound(msg, detail=detail)
    if r in (Result.EXISTS_WITH_DIFFERENT_FIELDS, Result.PENDING_ALREADY_CLOSED):
        raise Conflict(msg, detail=detail)
    if r is Result.EXCEEDS_LIMIT:
        raise InsufficientFunds(msg + " / 余额不足", detail=detail)
    raise InvalidInput(msg, detail=detail)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(v: object) -> str:
    """One value in PostgreSQL's COPY text format (one string per batch beats a call per row)."""
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def _account(row: object) -> Account:
    r = row._mapping  # type: ignore[attr-defined]
    return Account(r["id"], AccountKind(r["kind"]), r["currency"], r["credit_limit"], r["owner"], r["name"])


def _balance(row: object) -> Balance:
    r = row._mapping  # type: ignore[attr-defined]
    return Balance(r["debits_posted"], r["credits_posted"], r["debits_pending"], r["credits_pending"])


def _recorded(row: object) -> Recorded:
    r = row._mapping  # type: ignore[attr-defined]
    t = Transfer(r["id"], r["debit_account"], r["credit_account"], r["amount"], r["currency"],
                 TransferKind(r["kind"]), r["pending_id"], r["timeout_s"], r["ref"], r["memo"])
    return Recorded(t, r["created_at"], r["moved"], r["dr"], r["cr"], r["expires_at"],
                    PendingState(r["state"]) if r["state"] else None)


class LedgerStore:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"
        # The PostgreSQL set-based fast path (off: every batch takes the general path; the
        # benchmark's baseline and the equivalence tests switch it). Counts batches it committed.
        self._set_based = self._pg
        self._set_based_batches = 0

    # --- accounts ----------------------------------------------------------------
    def open_accounts(self, accounts: Sequence[Account]) -> list[Outcome]:
        """Create accounts; a repeat with the same fields is ``exists``, else a conflict."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            book = self._load(conn, [], [a.id for a in accounts])
            outs = [book.open(a) for a in accounts]
            new = [a for a, o in zip(accounts, outs, strict=True) if o.result is Result.OK]
            if new:
                conn.execute(insert(A), [
                    {"id": a.id, "kind": a.kind.value, "currency": a.currency, "credit_limit": a.credit_limit,
                     "owner": a.owner, "name": a.name, "debits_posted": 0, "credits_posted": 0,
                     "debits_pending": 0, "credits_pending": 0, "created_at": now} for a in new])
        return outs

    def open_account(self, account: Account) -> Account:
        out = self.open_accounts([account])[0]
        if out.result is Result.INVALID:
            raise InvalidInput(out.detail)
        if out.result is Result.EXISTS_WITH_DIFFERENT_FIELDS:
            raise Conflict(f"account {account.id} exists with different fields")
        return account

    def set_credit_limit(self, account_id: str, credit_limit: int | None) -> None:
        if credit_limit is not None and credit_limit < 0:
            raise InvalidInput("credit_limit must be >= 0 or None")
        with self.engine.begin() as conn:
            row = conn.execute(self._locked(select(A).where(A.c.id == account_id))).first()
            if row is None:
                raise NotFound(f"unknown account {account_id!r}")
            bal = _balance(row)
            if credit_limit is not None and bal.available < -credit_limit:
                raise Conflict(f"account {account_id} is already below -{credit_limit}")
            conn.execute(update(A).where(A.c.id == account_id).values(credit_limit=credit_limit))

    def account(self, account_id: str) -> tuple[Account, Balance]:
        with self.engine.connect() as conn:
            row = conn.execute(select(A).where(A.c.id == account_id)).first()
        if row is None:
            raise NotFound(f"unknown account {account_id!r}")
        return _account(row), _balance(row)

    def accounts(self, owner: str | None = None, currency: str | None = None) -> list[tuple[Account, Balance]]:
        q = select(A).order_by(A.c.id)
        if owner is not None:
            q = q.where(A.c.owner == owner)
        if currency is not None:
            q = q.where(A.c.currency == currency)
        with self.engine.connect() as conn:
            return [(_account(r), _balance(r)) for r in conn.execute(q)]

    # --- transfers ---------------------------------------------------------------
    def submit(self, transfers: Sequence[Transfer], *, linked: bool = False) -> list[Outcome]:
        """Apply a batch atomically; per-transfer outcomes. ``linked``: all or nothing."""
        if not transfers:
            return []
        for attempt in range(5):
            try:
                return self._submit_once(transfers, linked)
            except (IntegrityError, psycopg.IntegrityError):
                # A concurrent batch inserted one of our ids first: run again, it will be seen.
                # (COPY runs on the driver's cursor, so its violation comes unwrapped.)
                if attempt == 4:
                    raise
            except OperationalError as exc:
                if attempt == 4:
                    raise Unavailable("ledger database busy or unreachable") from exc
        raise AssertionError("unreachable")

    def transfer(self, t: Transfer) -> Outcome:
        """One transfer; raises the mapped error when it fails (API convenience)."""
        out = self.submit([t])[0]
        raise_for(out)
        return out

    def expire_due(self, limit: int = 1000) -> list[Outcome]:
        """Expire pending transfers whose timeout passed (run periodically by the billing loop)."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            ids = [r.id for r in conn.execute(
                select(T.c.id).where(and_(T.c.state == PendingState.PENDING.value, T.c.expires_at <= now))
                .order_by(T.c.id).limit(limit))]
            if not ids:
                return []
            book = self._load(conn, ids, [])
            outs = book.expire_due(now)
            self._write(conn, book)
        return outs

    def get_transfer(self, transfer_id: str) -> Recorded:
        with self.engine.connect() as conn:
            row = conn.execute(select(T).where(T.c.id == transfer_id)).first()
        if row is None:
            raise NotFound(f"unknown transfer {transfer_id!r}")
        return _recorded(row)

    def history(self, account_id: str, limit: int = 100, after: str = "") -> list[Recorded]:
        q = (select(T).where(or_(T.c.dr == account_id, T.c.cr == account_id)).where(T.c.id > after)
             .order_by(T.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [_recorded(r) for r in conn.execute(q)]

    def by_ref(self, ref: str) -> list[Recorded]:
        with self.engine.connect() as conn:
            return [_recorded(r) for r in conn.execute(select(T).where(T.c.ref == ref).order_by(T.c.id))]

    def totals(self) -> dict[str, int]:
        """Sum of posted balances per currency: always zero (the double-entry invariant)."""
        out: dict[str, int] = {}
        for acc, bal in self.accounts():
            out[acc.currency] = out.get(acc.currency, 0) + bal.posted
        return out

    # --- internals -----------------------------------------------------------------
    def _in(self, col: Any, values: Sequence[str]) -> Any:
        """``col IN values``; on PostgreSQL one array parameter (``= ANY``), which plans in
        constant time, where a 900-placeholder IN list took a second to plan."""
        if self._pg:
            return col == any_(bindparam("vals", list(values), type_=ARRAY(String)))
        return col.in_(values)

    def _chunks(self, items: Sequence[str]) -> Iterable[Sequence[str]]:
        return [items] if self._pg and items else _chunks(items)

    def _locked(self, q: Select[Any]) -> Select[Any]:
        return q.with_for_update() if self._pg else q

    def _submit_once(self, transfers: Sequence[Transfer], linked: bool) -> list[Outcome]:
        now = self.clock.now()
        with self.engine.begin() as conn:
            if self._set_based:
                fast = self._submit_set_based(conn, transfers, now)
                if fast is not None:
                    return fast
            ids = [t.id for t in transfers if isinstance(t.id, str)]
            pend = [t.pending_id for t in transfers if t.pending_id and isinstance(t.pending_id, str)]
            accounts = [a for t in transfers for a in (t.debit_account, t.credit_account) if a and isinstance(a, str)]
            book = self._load(conn, ids, accounts, pend)
            outs = book.apply_linked(transfers, now) if linked else [book.apply(t, now) for t in transfers]
            self._write(conn, book)
        return outs

    # --- the PostgreSQL set-based fast path ------------------------------------------
    _GATE_SQL = (
        "WITH locked AS (SELECT a.id, a.currency, a.credit_limit, "
        "a.credits_posted - a.debits_posted - a.debits_pending AS avail FROM ledger_accounts AS a "
        "WHERE a.id = ANY(%s::text[]) ORDER BY a.id FOR UPDATE), "
        "v AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[]) AS v(id, currency, debit)) "
        "SELECT (SELECT count(*) FROM locked) AS found, "
        "(SELECT count(*) FROM locked AS l JOIN v ON v.id = l.id WHERE l.currency <> v.currency "
        "OR (v.debit > 0 AND l.credit_limit IS NOT NULL AND l.avail::numeric - v.debit < -l.credit_limit)) AS bad")
    _COPY_COLS = ("id, kind, debit_account, credit_account, amount, currency, pending_id, timeout_s, ref, memo, "
                  "dr, cr, moved, created_at, expires_at, state")

    def _submit_set_based(self, conn: Connection, transfers: Sequence[Transfer], now: datetime) -> list[Outcome] | None:
        """Commit a batch of new, well-formed single/pending transfers with set-based SQL, or
        return None (nothing written) for the general path to decide it transfer by transfer.

        None when any transfer is of another kind, malformed, repeats an id (in the batch or
        in the table), names an unknown account or one of another currency, or when some
        limited account's available balance minus *all* the batch's debits on it would fall
        below its limit. Otherwise every transfer is ``ok`` under the sequential rules (the
        debits before any transfer never exceed the batch's total; credits only add), and the
        balances end at the start plus the batch's sums.
        """
        single, pending = TransferKind.SINGLE, TransferKind.PENDING
        seen: set[str] = set()
        currency: dict[str, str] = {}
        debit: dict[str, int] = {}
        delta: dict[str, list[int]] = {}  # account -> [debits_posted, credits_posted, debits_pending, credits_pending]
        for t in transfers:
            k = t.kind
            if (k is not single and k is not pending) or type(t.id) is not str or t.id in seen:
                return None
            d, c, cur, amount = t.debit_account, t.credit_account, t.currency, t.amount
            if (type(d) is not str or type(c) is not str or type(cur) is not str or type(t.ref) is not str
                    or type(t.memo) is not str or type(t.timeout_s) is not int or type(amount) is not int
                    or t.pending_id != "" or d == c or check_shape(t)):
                return None
            if currency.setdefault(d, cur) != cur or currency.setdefault(c, cur) != cur:
                return None  # one account, two currencies: some transfer fails on it
            seen.add(t.id)
            debit[d] = debit.get(d, 0) + amount
            dd = delta.get(d)
            if dd is None:
                dd = delta[d] = [0, 0, 0, 0]
            cd = delta.get(c)
            if cd is None:
                cd = delta[c] = [0, 0, 0, 0]
            if k is single:
                dd[0] += amount
                cd[1] += amount
            else:
                dd[2] += amount
                cd[3] += amount
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        accounts = sorted(currency)
        found, bad = conn.exec_driver_sql(self._GATE_SQL, (
            accounts, accounts, [currency[a] for a in accounts], [debit.get(a, 0) for a in accounts])).one()
        if found != len(accounts) or bad:
            return None
        if conn.exec_driver_sql("SELECT 1 FROM ledger_transfers WHERE id = ANY(%s::text[]) LIMIT 1",
                                (list(seen),)).first() is not None:
            return None
        proc: Any = T.c.created_at.type._cached_bind_processor(conn.dialect)
        conv: Any = (lambda v: v) if proc is None else proc
        created = _copy_field(conv(now))
        expiry: dict[int, str] = {}
        lines = []
        nulls = 0  # the \N (NULL) markers pasted below: the only backslashes of a clean batch
        for t in transfers:
            if t.kind is single:
                nulls += 2
                lines.append(f"{t.id}\tsingle\t{t.debit_account}\t{t.credit_account}\t{t.amount}\t{t.currency}\t"
                             f"\t0\t{t.ref}\t{t.memo}\t{t.debit_account}\t{t.credit_account}\t"
                             f"{t.amount}\t{created}\t\\N\t\\N\n")
            else:
                exp = expiry.get(t.timeout_s)
                if exp is None:
                    exp = expiry[t.timeout_s] = (_copy_field(conv(now + timedelta(seconds=t.timeout_s)))
                                                 if t.timeout_s else "\\N")
                nulls += exp == "\\N"
                lines.append(f"{t.id}\tpending\t{t.debit_account}\t{t.credit_account}\t{t.amount}\t{t.currency}\t"
                             f"\t{t.timeout_s}\t{t.ref}\t{t.memo}\t{t.debit_account}\t{t.credit_account}\t"
                             f"{t.amount}\t{created}\t{exp}\tpending\n")
        data = "".join(lines)
        # Ids and free text went in raw: if any held a tab, newline, CR or backslash, escape each field.
        if (data.count("\t") != 15 * len(lines) or data.count("\n") != len(lines)
                or data.count("\\") != nulls or "\r" in data):
            data = "".join("\t".join(map(_copy_field, (
                t.id, t.kind.value, t.debit_account, t.credit_account, t.amount, t.currency, "", t.timeout_s,
                t.ref, t.memo, t.debit_account, t.credit_account, t.amount, conv(now),
                conv(now + timedelta(seconds=t.timeout_s)) if t.kind is pending and t.timeout_s else None,
                "pending" if t.kind is pending else None))) + "\n" for t in transfers)
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY ledger_transfers ({self._COPY_COLS}) FROM STDIN") as cp:
            cp.write(data.encode())
        arrays = [list(col) for col in zip(*delta.values(), strict=True)]
        conn.exec_driver_sql(
            "UPDATE ledger_accounts AS a SET debits_posted = a.debits_posted + v.dp, "
            "credits_posted = a.credits_posted + v.cp, debits_pending = a.debits_pending + v.dq, "
            "credits_pending = a.credits_pending + v.cq FROM unnest(%s::int8[], %s::int8[], %s::int8[], "
            "%s::int8[], %s::text[]) AS v(dp, cp, dq, cq, id) WHERE a.id = v.id", (*arrays, list(delta)))
        self._set_based_batches += 1
        return [Outcome(t.id, Result.OK) for t in transfers]

    def _load(self, conn: Connection, transfer_ids: Sequence[str], account_ids: Sequence[str],
              pending_ids: Sequence[str] = ()) -> Book:
        """Lock the accounts a batch touches, then read its repeated ids and pending transfers.

        Reading transfers after the locks means no concurrent batch can close a pending or move
        a balance in between (on SQLite ``BEGIN IMMEDIATE`` already excludes other writers).
        """
        book = Book()
        accs = set(account_ids)
        pids = sorted(set(pending_ids))
        if self._pg:
            # psycopg prepares a statement after 5 runs; PostgreSQL may then reuse a generic plan
            # made when the table was empty (a sequential scan: 10 s per batch at 100k rows).
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            if pids:  # a post/void may leave its accounts to the pending transfer: find them to lock them
                for row in conn.execute(select(T.c.dr, T.c.cr).where(self._in(T.c.id, pids))):
                    accs.update((row.dr, row.cr))
        self._lock_accounts(conn, book, accs)
        for chunk in self._chunks(sorted(set(transfer_ids) | set(pids))):
            for row in conn.execute(select(T).where(self._in(T.c.id, chunk))):
                rec = _recorded(row)
                book.transfers[rec.transfer.id] = rec
        missing = {a for rec in book.transfers.values() if rec.state is not None
                   for a in (rec.debit_account, rec.credit_account)} - set(book.accounts)
        if missing:  # a pending created after the first look (or an expiry batch): lock its accounts too
            self._lock_accounts(conn, book, missing)
        return book

    def _lock_accounts(self, conn: Connection, book: Book, ids: set[str]) -> None:
        for chunk in self._chunks(sorted(ids)):
            for row in conn.execute(self._locked(select(A).where(self._in(A.c.id, chunk)).order_by(A.c.id))):
                book.accounts[row.id] = _account(row)
                book.balances[row.id] = _balance(row)

    def _write(self, conn: Connection, book: Book) -> None:
        """Write a batch with the driver's executemany: the hot path of ledger throughput.

        Values are plain tuples; timestamps go through the column type's bind processor once
        per distinct value, so SQLite and PostgreSQL store exactly what the Core layer would.
        """
        created, closed, balances = book.changes()
        ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        if created:
            proc: Any = T.c.created_at.type._cached_bind_processor(conn.dialect)
            conv: Any = (lambda v: v) if proc is None else proc
            cache: dict[datetime, object] = {}

            def ts(v: datetime | None) -> object:
                if v is None:
                    return None
                if v not in cache:
                    cache[v] = conv(v)
                return cache[v]

            cols = ("id", "kind", "debit_account", "credit_account", "amount", "currency", "pending_id", "timeout_s",
                    "ref", "memo", "dr", "cr", "moved", "created_at", "expires_at", "state")
            rows = [(r.transfer.id, r.transfer.kind.value, r.transfer.debit_account, r.transfer.credit_account,
                     r.transfer.amount, r.transfer.currency, r.transfer.pending_id, r.transfer.timeout_s,
                     r.transfer.ref, r.transfer.memo, r.debit_account, r.credit_account, r.amount,
                     ts(r.created_at), ts(r.expires_at), r.state.value if r.state else None) for r in created]
            if self._pg:
                # COPY streams the batch in one round trip (no per-row statement, no planning).
                cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                with cur.copy(f"COPY ledger_transfers ({', '.join(cols)}) FROM STDIN") as cp:
                    cp.write("".join("\t".join(map(_copy_field, row)) + "\n" for row in rows).encode())
            else:
                conn.exec_driver_sql(
                    f"INSERT INTO ledger_transfers ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))})", rows)
        if closed:
            conn.exec_driver_sql(f"UPDATE ledger_transfers SET state = {ph} WHERE id = {ph}",
                                 [(v.value, k) for k, v in closed.items()])
        if balances:
            vals = [(b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending, k)
                    for k, b in balances.items()]
            if self._pg:
                arrays = [list(col) for col in zip(*vals, strict=True)]
                conn.exec_driver_sql(
                    "UPDATE ledger_accounts AS a SET debits_posted = v.dp, credits_posted = v.cp, "
                    "debits_pending = v.dq, credits_pending = v.cq FROM unnest(%s::int8[], %s::int8[], %s::int8[], "
                    "%s::int8[], %s::text[]) AS v(dp, cp, dq, cq, id) WHERE a.id = v.id", tuple(arrays))
            else:
                conn.exec_driver_sql(
                    f"UPDATE ledger_accounts SET debits_posted = {ph}, credits_posted = {ph}, debits_pending = {ph}, "
                    f"credits_pending = {ph} WHERE id = {ph}", vals)

def new_accounts_for_tenant(tenant_id: str, currency: str = "CNY", credit_limit: int = 0) -> list[Account]:
    return [
        Account(f"tenant:{tenant_id}:wallet", AccountKind.TENANT_WALLET, currency, credit_limit, tenant_id, "wallet"),
        Account(f"tenant:{tenant_id}:arrears", AccountKind.TENANT_ARREARS, currency, None, tenant_id, "arrears"),
    ]


def system_accounts(currency: str = "CNY") -> list[Account]:
    c = currency.lower()
    return [
        Account(f"sys:{c}:external", AccountKind.EXTERNAL, currency, None, "", "bank / outside world"),
        Account(f"sys:{c}:revenue", AccountKind.PLATFORM_REVENUE, currency, None, "", "platform commission"),
        Account(f"sys:{c}:vat", AccountKind.TAX_PAYABLE, currency, None, "", "output VAT payable"),
        Account(f"sys:{c}:escrow", AccountKind.ESCROW, currency, None, "", "budget and reservation escrow"),
    ]


def ensure_system_accounts(store: LedgerStore, currency: str = "CNY") -> None:
    store.open_accounts(system_accounts(currency))


def now_utc(clock: Clock) -> datetime:
    return clock.now()

"""The ledger rules, applied to an in-memory working set of accounts and transfers.

A ``Book`` holds the accounts, balances and already-recorded transfers a batch touches;
the store adapter loads them (locked), calls ``apply``/``apply_linked``, then writes back
``changes()``. The rules have no I/O and take ``now`` as an argument, so the same code
serves the durable store, the reference model in the tests and the simulator.

Rules (each failure leaves the book exactly as it was):

- a transfer id is chosen by the client; a repeat with identical fields returns ``exists``
  (the original result stands), a repeat with different fields is refused;
- a debit may not take an account's available balance (posted minus pending debits) below
  ``-credit_limit``; ``credit_limit`` None is unlimited (external, revenue, clearing);
- a pending transfer reserves on the debit account and can be posted (fully or partly),
  voided, or expired once; a partial post releases the remainder;
- both accounts and the transfer share one currency: there is one ledger per currency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from yungu.domain.money import MINOR_UNITS
from yungu.engines.ledger.model import (
    MAX_AMOUNT,
    MAX_ID_LEN,
    Account,
    AccountKind,
    Balance,
    Outcome,
    PendingState,
    Recorded,
    Result,
    Transfer,
    TransferKind,
)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-]*$")
MAX_TEXT = 500


def valid_id(text: str) -> bool:
    return isinstance(text, str) and 0 < len(text) <= MAX_ID_LEN and _ID_RE.match(text) is not None


def check_account(account: Account) -> str:
    """Why an account definition is malformed, or "" when it is fine."""
    if not valid_id(account.id):
        return f"account id {account.id!r} must be 1..{MAX_ID_LEN} of [A-Za-z0-9._:/@+-]"
    if account.currency not in MINOR_UNITS:
        return f"unknown currency {account.currency!r}"
    if account.credit_limit is not None and (
        isinstance(account.credit_limit, bool) or not isinstance(account.credit_limit, int)
        or not 0 <= account.credit_limit <= MAX_AMOUNT
    ):
        return "credit_limit must be None (unlimited) or 0..1e15 minor units"
    if not isinstance(account.kind, AccountKind):
        return f"unknown account kind {account.kind!r}"
    return ""


def check_shape(t: Transfer) -> str:
    """Why a transfer is malformed on its own (without looking at the book), or ""."""
    if not valid_id(t.id):
        return f"transfer id {t.id!r} must be 1..{MAX_ID_LEN} of [A-Za-z0-9._:/@+-]"
    return _check_fields(t)


def _check_fields(t: Transfer) -> str:
    if isinstance(t.amount, bool) or not isinstance(t.amount, int):
        return "amount must be an integer number of minor units"
    if t.currency not in MINOR_UNITS:
        return f"unknown currency {t.currency!r}"
    if len(t.ref) > MAX_TEXT or len(t.memo) > MAX_TEXT:
        return f"ref and memo are limited to {MAX_TEXT} characters"
    if t.timeout_s < 0 or (t.timeout_s and t.kind is not TransferKind.PENDING):
        return "timeout_s must be >= 0 and only set on pending transfers"
    if t.kind in (TransferKind.SINGLE, TransferKind.PENDING):
        if not 0 < t.amount <= MAX_AMOUNT:
            return f"amount must be 1..{MAX_AMOUNT} minor units, got {t.amount}"
        if t.pending_id:
            return "pending_id is only for post and void"
        if not t.debit_account or not t.credit_account:
            return "debit_account and credit_account are required"
    elif t.kind in (TransferKind.POST, TransferKind.VOID):
        if not 0 <= t.amount <= MAX_AMOUNT:
            return "amount of a post/void must be 0 (all) .. the pending amount"
        if not valid_id(t.pending_id):
            return "post and void need the pending_id of a pending transfer"
    else:
        return f"transfers of kind {t.kind} are made by the ledger, not by clients"
    return ""


@dataclass
class Book:
    """Working state for one batch. Mutated only through ``apply``/``apply_linked``."""

    accounts: dict[str, Account] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    transfers: dict[str, Recorded] = field(default_factory=dict)
    created: list[Recorded] = field(default_factory=list)  # new this batch, in order
    closed: dict[str, PendingState] = field(default_factory=dict)  # pending id -> new state
    touched: set[str] = field(default_factory=set)

    # --- accounts -------------------------------------------------------------
    def open(self, account: Account) -> Outcome:
        why = check_account(account)
        if why:
            return Outcome(account.id, Result.INVALID, why)
        old = self.accounts.get(account.id)
        if old is not None:
            return Outcome(account.id, Result.EXISTS if old == account else Result.EXISTS_WITH_DIFFERENT_FIELDS)
        self.accounts[account.id] = account
        self.balances[account.id] = Balance()
        return Outcome(account.id, Result.OK)

    # --- transfers -------------------------------------------------------------
    def apply(self, t: Transfer, now: datetime) -> Outcome:
        """Apply one transfer; on failure nothing changes."""
        if not valid_id(t.id):
            return Outcome(str(t.id)[:MAX_ID_LEN], Result.INVALID, check_shape(t))
        old = self.transfers.get(t.id)
        if old is not None:
            if old.transfer == t:
                return Outcome(t.id, Result.EXISTS)
            return Outcome(t.id, Result.EXISTS_WITH_DIFFERENT_FIELDS, "the id was used for a different transfer")
        why = _check_fields(t)
        if why:
            return Outcome(t.id, Result.INVALID, why)
        if t.kind in (TransferKind.SINGLE, TransferKind.PENDING):
            return self._apply_new(t, now)
        return self._apply_close(t, now)

    def apply_linked(self, entry: Sequence[Transfer], now: datetime) -> list[Outcome]:
        """All transfers of a journal entry succeed together, or none does."""
        saved = self._save(entry)
        outcomes: list[Outcome] = []
        failed = -1
        for i, t in enumerate(entry):
            o = self.apply(t, now)
            outcomes.append(o)
            if not o.ok:
                failed = i
                break
        if failed < 0:
            return outcomes
        self._restore(saved)
        return [
            outcomes[i] if i == failed else Outcome(t.id, Result.LINKED_FAILED, f"entry failed at {entry[failed].id}")
            for i, t in enumerate(entry)
        ]

    def expire_due(self, now: datetime) -> list[Outcome]:
        """Expire every loaded pending transfer whose timeout has passed."""
        due = [
            r for r in self.transfers.values()
            if r.state is PendingState.PENDING and r.transfer.id not in self.closed
            and r.expires_at is not None and r.expires_at <= now
        ]
        outs = []
        for r in sorted(due, key=lambda r: r.transfer.id):
            t = Transfer(f"{r.transfer.id}:expired", "", "", 0, r.transfer.currency, TransferKind.EXPIRE,
                         pending_id=r.transfer.id)
            outs.append(self._close(t, r, 0, PendingState.EXPIRED, now))
        return outs

    def changes(self) -> tuple[list[Recorded], dict[str, PendingState], dict[str, Balance]]:
        """What to persist: new transfers, pending state changes, final balances of touched accounts."""
        return self.created, self.closed, {a: self.balances[a] for a in sorted(self.touched)}

    # --- internals ---------------------------------------------------------------
    def _accounts_ok(self, t: Transfer) -> Outcome | None:
        for acc_id in (t.debit_account, t.credit_account):
            acc = self.accounts.get(acc_id)
            if acc is None:
                return Outcome(t.id, Result.UNKNOWN_ACCOUNT, f"unknown account {acc_id!r}")
            if acc.currency != t.currency:
                return Outcome(t.id, Result.CURRENCY_MISMATCH,
                               f"account {acc_id!r} is in {acc.currency}, transfer in {t.currency}")
        if t.debit_account == t.credit_account:
            return Outcome(t.id, Result.ACCOUNTS_MUST_DIFFER, "debit and credit account are the same")
        return None

    def _apply_new(self, t: Transfer, now: datetime) -> Outcome:
        bad = self._accounts_ok(t)
        if bad is not None:
            return bad
        debit = self.accounts[t.debit_account]
        db = self.balances[t.debit_account]
        if debit.credit_limit is not None and db.available - t.amount < -debit.credit_limit:
            return Outcome(t.id, Result.EXCEEDS_LIMIT,
                           f"account {debit.id!r} has {db.available + debit.credit_limit} available, "
                           f"transfer needs {t.amount}")
        cb = self.balances[t.credit_account]
        if t.kind is TransferKind.PENDING:
            db.debits_pending += t.amount
            cb.credits_pending += t.amount
            expires = now + timedelta(seconds=t.timeout_s) if t.timeout_s else None
            rec = Recorded(t, now, t.amount, t.debit_account, t.credit_account, expires, PendingState.PENDING)
        else:
            db.debits_posted += t.amount
            cb.credits_posted += t.amount
            rec = Recorded(t, now, t.amount, t.debit_account, t.credit_account)
        self.touched.update((t.debit_account, t.credit_account))
        self._record(rec)
        return Outcome(t.id, Result.OK)

    def _apply_close(self, t: Transfer, now: datetime) -> Outcome:
        p = self.transfers.get(t.pending_id)
        if p is None or p.state is None:
            return Outcome(t.id, Result.PENDING_NOT_FOUND, f"no pending transfer {t.pending_id!r}")
        state = self.closed.get(p.transfer.id, p.state)
        if state is not PendingState.PENDING or (p.expires_at is not None and p.expires_at <= now):
            return Outcome(t.id, Result.PENDING_ALREADY_CLOSED,
                           f"pending transfer {t.pending_id!r} is {state.value}"
                           + (" (timed out)" if state is PendingState.PENDING else ""))
        if (t.debit_account and t.debit_account != p.debit_account) or (
            t.credit_account and t.credit_account != p.credit_account
        ) or t.currency != p.transfer.currency:
            return Outcome(t.id, Result.PENDING_MISMATCH, "post/void must name the pending transfer's accounts")
        if t.kind is TransferKind.VOID:
            if t.amount not in (0, p.amount):
                return Outcome(t.id, Result.PENDING_MISMATCH, "a void releases the whole pending amount")
            return self._close(t, p, 0, PendingState.VOIDED, now)
        amount = t.amount or p.amount
        if amount > p.amount:
            return Outcome(t.id, Result.PENDING_MISMATCH, f"post of {amount} exceeds the pending {p.amount}")
        return self._close(t, p, amount, PendingState.POSTED, now)

    def _close(self, t: Transfer, p: Recorded, amount: int, state: PendingState, now: datetime) -> Outcome:
        db = self.balances[p.debit_account]
        cb = self.balances[p.credit_account]
        db.debits_pending -= p.amount
        cb.credits_pending -= p.amount
        db.debits_posted += amount
        cb.credits_posted += amount
        self.touched.update((p.debit_account, p.credit_account))
        self.closed[p.transfer.id] = state
        self._record(Recorded(t, now, amount, p.debit_account, p.credit_account))
        return Outcome(t.id, Result.OK)

    def _record(self, rec: Recorded) -> None:
        self.transfers[rec.transfer.id] = rec
        self.created.append(rec)

    def _save(self, entry: Iterable[Transfer]) -> tuple[dict[str, Balance], dict[str, PendingState], int, set[str]]:
        return ({k: b.copy() for k, b in self.balances.items()}, dict(self.closed), len(self.created),
                set(self.touched))

    def _restore(self, saved: tuple[dict[str, Balance], dict[str, PendingState], int, set[str]]) -> None:
        balances, closed, n, touched = saved
        for rec in self.created[n:]:
            del self.transfers[rec.transfer.id]
        del self.created[n:]
        self.balances, self.closed, self.touched = balances, closed, touched


def resolved_post(t: Transfer, pending: Recorded) -> Transfer:
    """A post with its accounts filled in from the pending transfer (for display)."""
    return replace(t, debit_account=pending.debit_account, credit_account=pending.credit_account)

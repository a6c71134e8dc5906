"""Hypothesis: random operation sequences on the real SQLite ledger against a reference model.

The model is written independently of ``yungu.engines.ledger`` (plain dicts). After every
step: each currency's balances sum to zero, no account is below its limit, the store equals
the model, and replaying any prefix of the successful transfers with the same ids changes
nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from yungu.adapters.ledger.store import LedgerStore
from yungu.adapters.store.db import create_engine, migrate
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Account, AccountKind, Result, Transfer, TransferKind

_counter = itertools.count()


@dataclass
class Model:
    limit: dict[str, int | None] = field(default_factory=dict)
    currency: dict[str, str] = field(default_factory=dict)
    posted: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)  # pending debits
    pending: dict[str, tuple[str, str, int, datetime | None]] = field(default_factory=dict)  # open holds
    seen: dict[str, Transfer] = field(default_factory=dict)

    def available(self, a: str) -> int:
        return self.posted[a] - self.held[a]

    def can_debit(self, a: str, amount: int) -> bool:
        lim = self.limit[a]
        return lim is None or self.available(a) - amount >= -lim

    def apply(self, t: Transfer, now: datetime) -> bool:
        if t.id in self.seen:
            return self.seen[t.id] == t
        if t.kind in (TransferKind.SINGLE, TransferKind.PENDING):
            d, c = t.debit_account, t.credit_account
            if d == c or self.currency[d] != t.currency or self.currency[c] != t.currency:
                return False
            if t.amount <= 0 or not self.can_debit(d, t.amount):
                return False
            if t.kind is TransferKind.SINGLE:
                self.posted[d] -= t.amount
                self.posted[c] += t.amount
            else:
                self.held[d] += t.amount
                exp = now + timedelta(seconds=t.timeout_s) if t.timeout_s else None
                self.pending[t.id] = (d, c, t.amount, exp)
        else:
            p = self.pending.get(t.pending_id)
            if p is None or (p[3] is not None and p[3] <= now):
                return False
            d, c, amt, _ = p
            move = t.amount or amt if t.kind is TransferKind.POST else 0
            if move > amt or (t.kind is TransferKind.VOID and t.amount not in (0, amt)):
                return False
            del self.pending[t.pending_id]
            self.held[d] -= amt
            self.posted[d] -= move
            self.posted[c] += move
        self.seen[t.id] = t
        return True

    def expire(self, now: datetime) -> None:
        for pid, (d, _c, amt, exp) in list(self.pending.items()):
            if exp is not None and exp <= now:
                del self.pending[pid]
                self.held[d] -= amt


ENGINE = None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    e = create_engine(f"sqlite:///{tmp_path_factory.mktemp('model') / 'l.db'}")
    migrate(e)
    return e


class LedgerMachine(RuleBasedStateMachine):
    engine = None

    @initialize()
    def setup(self) -> None:
        self.ns = f"m{next(_counter)}"
        self.clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
        self.store = LedgerStore(LedgerMachine.engine, self.clock)  # type: ignore[arg-type]
        self.model = Model()
        self.accounts: list[str] = []
        self.ok: list[Transfer] = []
        self.n = 0
        for name, limit, cur in (("bank", None, "CNY"), ("a", 0, "CNY"), ("b", 0, "CNY"), ("c", 300, "CNY"),
                                 ("u", None, "USD")):
            self._open(name, limit, cur)

    def _open(self, name: str, limit: int | None, cur: str) -> None:
        acc = f"{self.ns}:{name}"
        assert self.store.open_accounts([Account(acc, AccountKind.TENANT_WALLET, cur, limit)])[0].result is Result.OK
        self.model.limit[acc], self.model.currency[acc] = limit, cur
        self.model.posted[acc] = self.model.held[acc] = 0
        self.accounts.append(acc)

    def _submit(self, t: Transfer) -> None:
        expected = self.model.apply(t, self.clock.now())
        out = self.store.submit([t])[0]
        assert out.ok == expected, (t, out)
        if out.result is Result.OK:
            self.ok.append(t)

    def _id(self) -> str:
        self.n += 1
        return f"{self.ns}.t{self.n}"

    @rule(d=st.integers(0, 4), c=st.integers(0, 4), amount=st.integers(-5, 700), pending=st.booleans(),
          timeout=st.sampled_from([0, 0, 30, 120]))
    def transfer(self, d: int, c: int, amount: int, pending: bool, timeout: int) -> None:
        kind = TransferKind.PENDING if pending else TransferKind.SINGLE
        self._submit(Transfer(self._id(), self.accounts[d], self.accounts[c], amount,
                              self.model.currency[self.accounts[d]], kind, timeout_s=timeout if pending else 0))

    @rule(d=st.integers(1, 3), c=st.integers(0, 3), delta=st.sampled_from([-1, 0, 1]), pending=st.booleans())
    def transfer_at_limit(self, d: int, c: int, delta: int, pending: bool) -> None:
        """Aim exactly at the edge of a limited account's headroom (off-by-one hunting)."""
        acc = self.accounts[d]
        headroom = self.model.available(acc) + (self.model.limit[acc] or 0)
        kind = TransferKind.PENDING if pending else TransferKind.SINGLE
        self._submit(Transfer(self._id(), acc, self.accounts[c], headroom + delta, "CNY", kind))

    @precondition(lambda self: bool(self.model.pending))
    @rule(data=st.data(), void=st.booleans(), fraction=st.sampled_from([0, 1, 2, 3, 4, 9]))
    def close(self, data: st.DataObject, void: bool, fraction: int) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model.pending)))
        amt = self.model.pending[pid][2]
        cur = self.model.currency[self.model.pending[pid][0]]
        kind = TransferKind.VOID if void else TransferKind.POST
        self._submit(Transfer(self._id(), "", "", 0 if void else amt * fraction // 4, cur, kind, pending_id=pid))

    @rule(seconds=st.integers(1, 100))
    def tick_and_expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.store.expire_due()
        self.model.expire(self.clock.now())

    @precondition(lambda self: bool(self.ok))
    @rule(data=st.data())
    def replay_prefix(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(1, len(self.ok)))
        before = self._state()
        outs = self.store.submit(self.ok[:k])
        assert all(o.result is Result.EXISTS for o in outs)
        assert self._state() == before

    @precondition(lambda self: bool(self.ok))
    @rule(data=st.data())
    def conflicting_replay(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(self.ok))
        before = self._state()
        bad = Transfer(t.id, t.debit_account, t.credit_account, t.amount + 1, t.currency, t.kind, t.pending_id,
                       t.timeout_s)
        assert self.store.submit([bad])[0].result is Result.EXISTS_WITH_DIFFERENT_FIELDS
        assert self._state() == before

    def _state(self) -> dict[str, tuple[int, int]]:
        out = {}
        for acc in self.accounts:
            _, bal = self.store.account(acc)
            out[acc] = (bal.posted, bal.debits_pending)
        return out

    @invariant()
    def store_equals_model_and_invariants_hold(self) -> None:
        if not hasattr(self, "store"):
            return
        state = self._state()
        for acc, (posted, held) in state.items():
            assert (posted, held) == (self.model.posted[acc], self.model.held[acc]), acc
            lim = self.model.limit[acc]
            assert lim is None or posted - held >= -lim
        for cur in ("CNY", "USD"):
            assert sum(p for a, (p, _) in state.items() if self.model.currency[a] == cur) == 0


def test_ledger_matches_reference_model(engine) -> None:  # type: ignore[no-untyped-def]
    LedgerMachine.engine = engine
    run = LedgerMachine.TestCase
    run.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                            suppress_health_check=list(HealthCheck))
    run().runTest()

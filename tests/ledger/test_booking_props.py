"""Hypothesis: the money rules of booking — never created or lost, each usage booked once.

1. ``plan_booking`` on random charges, holds and wallets: the entry balances (escrow nets to
   zero), the tenant pays exactly the charge less any write-off, a prepaid tenant never pays
   more than its holds plus its wallet's room, the provider is paid its share of the whole
   run, and the entry applies on a real ``Book``.
2. A state machine over the billing loop on the real SQLite ledger: random finished jobs,
   admission holds and extensions, top-ups, booking passes, and crashes between the ledger
   commit and the usage mark. After every step: the ledger sums to zero, escrow holds no
   posted money, every usage is booked at most once and exactly as charged, prepaid tenants
   are never in arrears nor past their credit line, providers are paid for every run.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.ledger.billing_world import WORLD, finished_job
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts, new_accounts_for_tenant
from yungu.adapters.store.db import create_engine, migrate
from yungu.control.billing import BillingLoop
from yungu.control.budgets import Budgets
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Account, AccountKind, Book, Result, Transfer, TransferKind
from yungu.engines.ledger.accounts import arrears, hold_id, receivable, sys_account, wallet
from yungu.engines.ledger.booking import Hold, Payer, charged_of, plan_booking
from yungu.engines.ledger.rating import split_charge

NOW = datetime(2026, 4, 2, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(rated=st.integers(0, 10**7), holds=st.lists(st.integers(1, 10**6), max_size=4),
       room=st.integers(-100, 10**7), prepaid=st.booleans(), credit=st.integers(0, 10**6))
def test_a_booking_plan_balances_and_respects_the_budget(rated: int, holds: list[int], room: int, prepaid: bool,
                                                        credit: int) -> None:
    hs = [Hold(hold_id("j", n), a) for n, a in enumerate(holds)]
    payer = Payer(wallet("t"), room, "" if prepaid else arrears("t"))
    plan = plan_booking("usage:j.0", "j", rated, hs, payer, "acme-idc")
    t = plan.transfers
    assert plan.charged + plan.written_off == rated and plan.written_off >= 0
    assert len({x.id for x in t}) == len(t)  # one transfer per id
    posted = sum(x.amount for x in t if x.kind is TransferKind.POST)
    assert [x.pending_id for x in t if x.kind in (TransferKind.POST, TransferKind.VOID)] == [h.id for h in hs]
    into_escrow = posted + sum(x.amount for x in t if x.credit_account == sys_account("escrow"))
    out_of_escrow = sum(x.amount for x in t if x.debit_account == sys_account("escrow"))
    assert into_escrow == out_of_escrow == plan.charged == charged_of(t)  # escrow nets to zero
    if prepaid:
        assert plan.charged <= sum(holds) + max(0, room)
        assert not [x for x in t if x.debit_account == arrears("t")]
    else:
        assert plan.written_off == 0
    to_provider = sum(x.amount for x in t if x.credit_account == receivable("acme-idc"))
    assert to_provider == split_charge(rated).provider  # paid for the whole run, write-off or not

    # ... and it applies, all or nothing, on the real rules with the holds and the wallet as given.
    book = Book()
    for acc in (Account(sys_account("external"), AccountKind.EXTERNAL, credit_limit=None),
                Account(wallet("t"), AccountKind.TENANT_WALLET, credit_limit=credit),
                Account(arrears("t"), AccountKind.TENANT_ARREARS, credit_limit=None),
                *(Account(sys_account(n), k, credit_limit=None) for n, k in
                  (("escrow", AccountKind.ESCROW), ("vat", AccountKind.TAX_PAYABLE),
                   ("revenue", AccountKind.PLATFORM_REVENUE))),
                Account(receivable("acme-idc"), AccountKind.PROVIDER_RECEIVABLE, credit_limit=None)):
        book.open(acc)
    funds = sum(holds) + max(0, room) - credit
    if funds > 0:
        assert book.apply(Transfer("topup", sys_account("external"), wallet("t"), funds), NOW).ok
    for h in hs:
        assert book.apply(Transfer(h.id, wallet("t"), sys_account("escrow"), h.amount, kind=TransferKind.PENDING),
                          NOW).ok
    assert book.balances[wallet("t")].available + credit == max(0, room) or funds <= 0
    outs = book.apply_linked(list(t), NOW)
    if funds > 0 or prepaid:
        assert all(o.ok for o in outs), outs
    if all(o.ok for o in outs):
        assert sum(b.posted for b in book.balances.values()) == 0
        assert book.balances[sys_account("escrow")].posted == 0
        w = book.balances[wallet("t")]
        assert w.posted - w.debits_pending >= -credit


_ns = itertools.count()


class BillingMachine(RuleBasedStateMachine):
    folder = None  # a fresh database per example: rows of one example never leak into the next

    @initialize()
    def setup(self) -> None:
        n = next(_ns)
        engine = create_engine(f"sqlite:///{BillingMachine.folder}/b{n}.db")
        migrate(engine)
        self.tenants = {f"pre{n}": True, f"cre{n}": True, f"post{n}": False}  # tenant -> prepaid
        self.credit = {f"pre{n}": 0, f"cre{n}": 500_00, f"post{n}": 0}
        self.clock = FixedClock(NOW)
        self.ledger = LedgerStore(engine, self.clock)
        ensure_system_accounts(self.ledger)
        for t, limit in self.credit.items():
            self.ledger.open_accounts(new_accounts_for_tenant(t, credit_limit=limit))
        self.ledger.open_accounts([Account(receivable("acme-idc"), AccountKind.PROVIDER_RECEIVABLE, "CNY", None,
                                           "acme-idc", "acme-idc receivable")])
        self.usage = BillingStore(engine, self.clock)
        self.budgets = Budgets(self.ledger)
        self.loop = self._loop()
        self.topped = dict.fromkeys(self.tenants, 0)
        self.jobs: list = []  # type: ignore[type-arg]
        self.rated: dict[str, int] = {}
        self.ns = n

    def _loop(self) -> BillingLoop:
        return BillingLoop(self.ledger, self.usage, WORLD, self.clock, is_prepaid=lambda t: self.tenants[t])

    @rule(t=st.integers(0, 2), amount=st.integers(1, 300_00))
    def topup(self, t: int, amount: int) -> None:
        tenant = sorted(self.tenants)[t]
        tid = f"topup:{tenant}:{len(self.jobs)}:{amount}:{self.topped[tenant]}"
        if self.ledger.submit([Transfer(tid, sys_account("external"), wallet(tenant), amount)])[0].ok:
            self.topped[tenant] += amount

    @rule(t=st.integers(0, 2), minutes=st.integers(0, 400), devices=st.integers(1, 8),
          reserve=st.sampled_from([None, 0, 1, 50_00, 900_00]), extensions=st.lists(st.integers(1, 80_00), max_size=2))
    def a_job_finishes(self, t: int, minutes: int, devices: int, reserve: int | None, extensions: list[int]) -> None:
        tenant = sorted(self.tenants)[t]
        i = len(self.jobs)
        job = finished_job(i, tenant, NOW - timedelta(days=5, minutes=minutes), minutes, devices)
        job = replace(job, id=f"m{self.ns}j{i}")
        if reserve:
            self.budgets.reserve(tenant, job.id, reserve)
        for amount in extensions:
            self.budgets.extend(tenant, job.id, amount)
        self.jobs.append(job)
        self.loop.meter([job])
        [row] = [r for r in self.usage.usage(tenant, limit=100_000) if r.usage.job_id == job.id]
        self.rated[row.usage.id] = row.gross

    @rule(limit=st.sampled_from([1, 3, 500]))
    def book(self, limit: int) -> None:
        self.loop.book(limit)

    @rule(data=st.data())
    def crash_after_the_ledger_commit(self, data: st.DataObject) -> None:
        """The entry is committed; the process dies before the usage row is marked booked."""
        due = self.usage.due(500, self.clock.now())
        if not due:
            return
        row = data.draw(st.sampled_from(due))
        u = row.usage
        payer = Payer(wallet(u.tenant_id), self.budgets.room(u.tenant_id),
                      "" if self.tenants[u.tenant_id] else arrears(u.tenant_id))
        plan = plan_booking(u.id, u.job_id, row.gross, self.budgets.holds(u.job_id), payer, u.provider)
        already = bool(self.ledger.by_ref(u.id))
        outs = self.ledger.submit(list(plan.transfers), linked=True)
        if already and plan.transfers:  # a second, differently planned entry never lands beside the first
            assert not all(o.ok for o in outs) or all(o.result is Result.EXISTS for o in outs), outs
        self.loop = self._loop()  # the restarted platform

    @rule()
    def meter_everything_again(self) -> None:
        assert self.loop.meter(self.jobs) == 0  # same ids: nothing new

    @invariant()
    def money_is_neither_made_nor_lost_and_each_usage_is_booked_once(self) -> None:
        if not hasattr(self, "ledger"):
            return
        rows = {r.usage.id: r for t in self.tenants for r in self.usage.usage(t, limit=100_000)}
        assert set(rows) == set(self.rated)
        assert self.ledger.totals().get("CNY", 0) == 0
        assert self.ledger.account(sys_account("escrow"))[1].posted == 0
        provider_due = 0
        for uid, r in rows.items():
            legs = [x.transfer for x in self.ledger.by_ref(uid)]
            if r.booked:
                assert charged_of(legs) == r.gross and r.gross + r.written_off == self.rated[uid]
                event("a prepaid overrun was written off" if r.written_off else "booked in full")
                provider_due += split_charge(self.rated[uid]).provider
            elif legs:  # committed before a "crash", not marked yet: booked once all the same
                provider_due += split_charge(self.rated[uid]).provider
        assert self.ledger.account(receivable("acme-idc"))[1].posted == provider_due
        for t, prepaid in self.tenants.items():
            w = self.ledger.account(wallet(t))[1]
            arr = self.ledger.account(arrears(t))[1].posted
            assert w.posted - w.debits_pending >= -self.credit[t]
            if prepaid:
                assert arr == 0  # a prepaid tenant is never sent into arrears
            charged = sum(charged_of([x.transfer for x in self.ledger.by_ref(u)]) for u, r in rows.items()
                          if r.usage.tenant_id == t)
            assert self.topped[t] - w.posted - arr == charged  # what left the tenant is what it was charged


@pytest.mark.timeout(900)  # a failure's shrinking replays many examples, each with its own database
def test_billing_loop_keeps_the_money_rules(tmp_path: Path) -> None:
    BillingMachine.folder = tmp_path  # type: ignore[assignment]
    run = BillingMachine.TestCase
    run.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                            suppress_health_check=list(HealthCheck))
    run().runTest()

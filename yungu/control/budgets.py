"""Prepaid budgets that hold: reserve at admission, extend while running, stop when spent.

A prepaid tenant can never spend more than its wallet's balance plus its credit line:

1. **admission** reserves the job's estimated cost — its estimate plus ``HOLD_MARGIN_S``
   (one check and a stop's margin, so an honest estimate is never cut short) on the dearest
   pool it may land on — as a pending hold ``budget:<job>`` from the wallet to escrow. The
   wallet's limit is checked under the ledger's row lock, so concurrent admissions can never
   reserve more than it holds. A job **without an estimate** is priced at
   ``DEFAULT_ESTIMATE_S`` (10 minutes); if the wallet holds less, it starts on what the
   wallet holds, provided that covers ``MIN_START_S`` (10 seconds). A wallet that cannot pay
   holds the job (``UNSCHEDULABLE``, "budget exhausted") until it is topped up.
2. **while it runs**, the ``BudgetEnforcer`` checks every ``CHECK_INTERVAL_S`` that the job's
   holds cover its cost up to the next check plus ``STOP_MARGIN_S``. If not, it extends the
   reservation from the wallet (``budget:<job>:x<n>``: as long again as the job has run, at
   most ``EXTEND_S``, or whatever the wallet still has); if the wallet cannot cover even
   that, it stops the job, with the reason on the job ("预算用尽 prepaid budget exhausted").
3. **booking** posts the holds up to the metered charge and voids the rest
   (``yungu.engines.ledger.booking``). A prepaid tenant is never sent into arrears: what a
   stop took beyond ``STOP_MARGIN_S`` to end (a job that ignores SIGTERM runs until its
   grace period ends), or what ran while the platform itself was down, is written off by
   the platform and raised as an alert — the tenant's spend stays within its budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from yungu.domain.clock import Clock
from yungu.domain.errors import NotFound
from yungu.domain.job import PLATFORM_STOP, Job, JobSpec, JobState
from yungu.domain.status import Code, Status
from yungu.domain.world import World
from yungu.engines.ledger import Result, Transfer, TransferKind
from yungu.engines.ledger.accounts import hold_id, hold_number, job_ref, settle_id, sys_account, wallet
from yungu.engines.ledger.booking import Hold
from yungu.engines.ledger.model import PendingState
from yungu.engines.ledger.rating import cost_of_seconds, from_minor, job_price, rate_device_time
from yungu.ports.billing import BudgetJobsPort, JobControlPort, LedgerPort

log = logging.getLogger("yungu.budgets")

BUDGET_TIMEOUT_S = 30 * 86400  # a hold that is never settled is released after 30 days
DEFAULT_ESTIMATE_S = 600  # a job without an estimate is priced at 10 minutes at admission
MIN_START_S = 10  # ... and starts on a smaller wallet only if it covers 10 seconds
CHECK_INTERVAL_S = 1.0  # how often running prepaid jobs are checked against their holds
STOP_MARGIN_S = 2.0  # holds must cover this much beyond the next check (a stop takes time)
HOLD_MARGIN_S = int(CHECK_INTERVAL_S + STOP_MARGIN_S) + 1  # added to an estimate at admission
EXTEND_S = 60.0  # the most a running job's reservation grows by at a time


def estimate_fen(spec: JobSpec, world: World, default_s: int | None = None, margin_s: int = 0) -> int | None:
    """A conservative cost estimate for admission: the estimated duration (or ``default_s``)
    plus ``margin_s`` on the dearest pool the job may land on (its pinned pool, else any
    pool). None when the job gives no duration and no default is asked for."""
    seconds = spec.estimated_duration_s or default_s
    if seconds is None:
        return None
    seconds += margin_s
    pools = [world.pool(spec.pool)] if spec.pool else list(world.pools)
    if spec.resources.accelerators:
        units = spec.resources.accelerators * spec.replicas
        price = max((p.price_cny_per_device_hour for p in pools if p.accelerators_per_node), default=Decimal(0))
    else:
        units = spec.resources.cpus * spec.replicas
        price = max((p.price_cny_per_cpu_hour for p in pools), default=Decimal(0))
    return rate_device_time(seconds * units, price)


class Budgets:
    """Holds on a tenant's wallet for one job: ``reserve`` / ``extend`` / ``release``."""

    def __init__(self, ledger: LedgerPort, currency: str = "CNY") -> None:
        self.ledger = ledger
        self.currency = currency

    def _hold(self, tenant_id: str, job_id: str, n: int, amount: int, memo: str) -> Transfer:
        return Transfer(hold_id(job_id, n), wallet(tenant_id), sys_account("escrow", self.currency), amount,
                        self.currency, TransferKind.PENDING, timeout_s=BUDGET_TIMEOUT_S, ref=job_ref(job_id),
                        memo=memo)

    def reserve(self, tenant_id: str, job_id: str, estimated_fen: int) -> Status:
        """The admission hold. A repeat after a crash finds the first one (whatever its amount)."""
        out = self.ledger.submit([self._hold(tenant_id, job_id, 0, estimated_fen, "budget reservation at admission")])[0]
        if out.ok or (out.result is Result.EXISTS_WITH_DIFFERENT_FIELDS and self._is_open_hold(job_id, tenant_id)):
            return Status.success("budget")
        if out.result is Result.EXCEEDS_LIMIT:
            return Status(Code.UNSCHEDULABLE, (f"预算不足 budget exhausted: {out.detail}",), "budget")
        return Status(Code.ERROR, (f"{out.result.value}: {out.detail}",), "budget")

    def reserve_up_to(self, tenant_id: str, job_id: str, wanted_fen: int, minimum_fen: int) -> Status:
        """Reserve ``wanted_fen``, or what the wallet still has if that is at least ``minimum_fen``."""
        st = self.reserve(tenant_id, job_id, wanted_fen)
        if st.code is not Code.UNSCHEDULABLE:
            return st
        room = self.room(tenant_id)
        if room < max(1, minimum_fen):
            return st
        return self.reserve(tenant_id, job_id, room)

    def _is_open_hold(self, job_id: str, tenant_id: str) -> bool:
        try:
            r = self.ledger.get_transfer(hold_id(job_id))
        except NotFound:
            return False
        return r.state is PendingState.PENDING and r.debit_account == wallet(tenant_id)

    def room(self, tenant_id: str) -> int:
        """How much more the tenant's wallet may be debited now: available + credit line."""
        try:
            account, balance = self.ledger.account(wallet(tenant_id))
        except NotFound:
            return 0
        if account.credit_limit is None:
            return 10**15
        return max(0, balance.available + account.credit_limit)

    def holds(self, job_id: str) -> list[Hold]:
        """The job's open holds, admission first, then extensions in order."""
        found = []
        for r in self.ledger.by_ref(job_ref(job_id)):
            n = hold_number(job_id, r.transfer.id)
            if n is not None and r.transfer.kind is TransferKind.PENDING and r.state is PendingState.PENDING:
                found.append((n, Hold(r.transfer.id, r.amount)))
        return [h for _, h in sorted(found)]

    def _next_hold(self, job_id: str) -> int:
        numbers = [n for r in self.ledger.by_ref(job_ref(job_id))
                   if (n := hold_number(job_id, r.transfer.id)) is not None]
        return max(numbers, default=-1) + 1

    def extend(self, tenant_id: str, job_id: str, wanted_fen: int) -> int:
        """Add a hold of ``wanted_fen`` (or all the wallet still has); returns the fen added."""
        if wanted_fen <= 0:
            return 0
        n = self._next_hold(job_id)
        for amount in (wanted_fen, min(wanted_fen, self.room(tenant_id))):
            if amount <= 0:
                break
            out = self.ledger.submit([self._hold(tenant_id, job_id, n, amount, "budget extension while running")])[0]
            if out.ok:
                return amount
            if out.result is not Result.EXCEEDS_LIMIT:
                log.error("budget extension %s refused: %s %s", hold_id(job_id, n), out.result.value, out.detail)
                break
        return 0

    def settle(self, job_id: str, actual_fen: int) -> Status:
        """Post the job's holds up to ``actual_fen`` (admission first) and void the rest.

        Billing books usage through ``engines.ledger.booking`` instead (the same legs, linked
        with the charge's split); this is the budget-only settlement for direct API use.
        """
        holds = self.holds(job_id)
        if not holds:
            return Status(Code.SKIP, ("no open reservation",), "budget")
        left, legs = actual_fen, []
        for h in holds:
            take = min(left, h.amount)
            left -= take
            legs.append(Transfer(settle_id(h.id), "", "", take, self.currency,
                                 TransferKind.POST if take > 0 else TransferKind.VOID, pending_id=h.id,
                                 ref=job_ref(job_id)))
        outs = self.ledger.submit(legs, linked=True)
        if all(o.ok for o in outs):
            return Status.success("budget")
        return Status(Code.ERROR, tuple(f"{o.id}: {o.result.value} {o.detail}" for o in outs if not o.ok), "budget")

    def release(self, job_id: str) -> Status:
        """Void every open hold of the job (it ended without running)."""
        holds = self.holds(job_id)
        if not holds:
            return Status(Code.SKIP, ("no open reservation",), "budget")
        outs = self.ledger.submit([Transfer(settle_id(h.id), "", "", 0, self.currency, TransferKind.VOID,
                                            pending_id=h.id, ref=job_ref(job_id)) for h in holds])
        bad = [o for o in outs if not o.ok]
        if not bad:
            return Status.success("budget")
        return Status(Code.SKIP, tuple(f"{o.id}: {o.result.value}" for o in bad), "budget")


def budget_admission(budgets: Budgets, world: World, is_prepaid: Callable[[str], bool]) -> Callable[[Job], Status]:
    """The admission hook for the job loop.

    Prepaid tenants get the job's estimated cost (plus ``HOLD_MARGIN_S``; ``DEFAULT_ESTIMATE_S``
    without an estimate) reserved from their wallet; an exhausted (or never topped-up) wallet holds the job
    (``UNSCHEDULABLE``) until it is topped up. Post-paid tenants are admitted; their usage is
    booked and invoiced (arrears if unpaid).
    """

    def check(job: Job) -> Status:
        if not is_prepaid(job.tenant_id):
            return Status(Code.SKIP, ("post-paid tenant",), "budget")
        est = estimate_fen(job.spec, world, margin_s=HOLD_MARGIN_S)
        if est is None:
            wanted = estimate_fen(job.spec, world, DEFAULT_ESTIMATE_S) or 0
            minimum = estimate_fen(job.spec, world, MIN_START_S) or 0
            st = budgets.reserve_up_to(job.tenant_id, job.id, wanted, minimum) if wanted else None
        else:
            st = budgets.reserve(job.tenant_id, job.id, est) if est else None
        if st is None:
            return Status(Code.SKIP, ("free of charge: nothing to reserve",), "budget")
        if st.code is Code.ERROR and any("unknown_account" in r for r in st.reasons):
            return Status(Code.UNSCHEDULABLE, ("钱包未充值 the tenant's wallet has not been topped up",), "budget")
        return st

    return check


def release_unused(budgets: Budgets) -> Callable[[list[Job]], None]:
    """The transition hook: a job that ends without ever running gets its reservation back."""

    def on_transition(jobs: list[Job]) -> None:
        for j in jobs:
            if j.state.terminal and j.started_at is None:
                budgets.release(j.id)

    return on_transition


class BudgetEnforcer:
    """Keeps every running prepaid job inside its holds (module docstring, step 2)."""

    def __init__(self, budgets: Budgets, jobs: BudgetJobsPort, world: World, clock: Clock,
                 interval_s: float = CHECK_INTERVAL_S, stop_margin_s: float = STOP_MARGIN_S,
                 extend_s: float = EXTEND_S) -> None:
        self.budgets, self.jobs, self.world, self.clock = budgets, jobs, world, clock
        self.lookahead_s = interval_s + stop_margin_s
        self.interval_s = interval_s
        self.extend_s = extend_s
        self._held: dict[str, int] = {}  # job -> fen held (only this enforcer extends holds)
        self._stopped: set[str] = set()

    def run_once(self) -> list[str]:
        """One check of every running prepaid job; returns the jobs it asked to stop."""
        now = self.clock.now()
        running = [j for j in self.jobs.running() if j.state in (JobState.DISPATCHED, JobState.RUNNING)]
        prepaid: dict[str, bool] = {}
        stopped = []
        for j in running:
            if j.started_at is None or j.allocation is None or j.cancel_requested or j.id in self._stopped:
                continue
            if prepaid.setdefault(j.tenant_id, self.jobs.is_prepaid(j.tenant_id)) is False:
                continue
            why = self._check(j, now)
            if why:
                self._stopped.add(j.id)
                self.jobs.stop(j.id, why)
                stopped.append(j.id)
        live = {j.id for j in running}
        self._held = {k: v for k, v in self._held.items() if k in live}
        self._stopped &= live
        return stopped

    def _check(self, j: Job, now: datetime) -> str:
        """"" when the job may run on, else why it must stop."""
        assert j.started_at is not None
        try:
            units, price = job_price(j, self.world)
        except KeyError:
            return ""  # the pool left the configuration: metering will raise the alert
        elapsed = _elapsed(j, now)
        need = cost_of_seconds(elapsed + self.lookahead_s, units, price)
        held = self._held.get(j.id)
        if held is None:
            held = self._held[j.id] = sum(h.amount for h in self.budgets.holds(j.id))
        if need <= held:
            return ""
        if not self.jobs.still_running(j.id):
            # It ended since this pass listed it: its usage may be booked already, which settles
            # the holds it had then; a hold added now would stay pending (30 days). The billing
            # runner books only between budget passes, so a job still running here is booked later.
            return ""
        step = min(self.extend_s, max(self.interval_s, elapsed))  # grow as long again as it has run
        wanted = cost_of_seconds(elapsed + self.lookahead_s + step, units, price) - held
        held = self._held[j.id] = held + self.budgets.extend(j.tenant_id, j.id, wanted)
        if need <= held:
            return ""
        spent = cost_of_seconds(elapsed, units, price)
        log.warning("stopping job %s: prepaid budget exhausted (held %s fen, about %s fen used)", j.id, held, spent)
        return (f"{PLATFORM_STOP}预算用尽 prepaid budget exhausted: reserved {from_minor(held)} CNY, "
                f"about {from_minor(spent)} CNY used; top up the wallet to run more / 请充值后重新提交")


CLOCK_SKEW_S = 60.0  # an engine whose clock is further off than this from ours is not trusted for budgets


def _elapsed(j: Job, now: datetime) -> float:
    """How long the job has run: the executor's start against our clock. An engine whose
    clock disagrees with ours (a start before the job was even submitted, or in the future)
    is timed from our own record of the start instead (the job's last transition)."""
    assert j.started_at is not None
    skew = timedelta(seconds=CLOCK_SKEW_S)
    if j.started_at < j.submitted_at - skew or j.started_at > now + skew:
        return max(0.0, (now - j.updated_at).total_seconds())
    return max(0.0, (now - j.started_at).total_seconds())


class LoopJobs:
    """``BudgetJobsPort`` over the job store and the job loop: a stop is a cancel request that
    carries the platform's reason, and a wake so the loop acts on it at once."""

    def __init__(self, store: JobControlPort, clock: Clock, wake: Callable[[], None]) -> None:
        self.store, self.clock, self.wake = store, clock, wake

    def running(self) -> list[Job]:
        return self.store.in_states((JobState.DISPATCHED, JobState.RUNNING))

    def still_running(self, job_id: str) -> bool:
        return self.store.get(job_id).state in (JobState.DISPATCHED, JobState.RUNNING)

    def is_prepaid(self, tenant_id: str) -> bool:
        return self.store.is_prepaid(tenant_id)

    def stop(self, job_id: str, reason: str) -> None:
        self.store.request_cancel(job_id, self.clock.now(), reason=reason)
        self.wake()

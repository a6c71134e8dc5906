"""Metering -> rating -> booking -> invoicing, and budgets at admission.

Exactly-once by construction, not by care: every id is derived from the job attempt
(``usage:<job>.<attempt>``), so a retry after a crash at any point re-derives the same usage
record, the same ledger transfer ids and the same invoice line. The ledger answers a repeat
with ``exists``; the usage table ignores a repeated insert; an invoice is unique per tenant
and period. The loop is therefore safe to kill -9 and restart at any point.

Steps (each a separate, atomic, re-runnable transaction):

1. **meter**: a finished job attempt becomes a usage record, rated at its pool's posted price.
   If the usage's own period is already closed, it is booked into the first open period and
   keeps ``late_from`` as its reference (never lost, never rewritten into a closed invoice).
2. **book**: one linked ledger entry per usage record: settle the job's budget reservation
   (post up to the charge; the rest is released), charge any excess to the wallet (or, if the
   wallet cannot cover it, to the tenant's arrears receivable), then split the charge from
   escrow to VAT payable, platform commission and the provider's receivable.
3. **invoice**: closing a period issues one invoice per tenant over the usage booked into it.

Budgets: ``reserve`` places a pending transfer ``budget:<job>`` from the tenant's wallet to
escrow; the wallet's limit is checked under the ledger's row lock, so concurrent admissions
can never reserve more than the wallet holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput, NotFound
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.status import Code, Status
from yungu.domain.world import World
from yungu.engines.ledger import Account, AccountKind, Outcome, Recorded, Result, Transfer, TransferKind
from yungu.engines.ledger.invoice import Invoice, Party
from yungu.engines.ledger.rating import (
    DEFAULT_VAT,
    Usage,
    next_period,
    period_of,
    rate_device_time,
    split_charge,
    usage_id,
)

log = logging.getLogger("yungu.billing")

BUDGET_TIMEOUT_S = 30 * 86400  # an admission that never settles is released after 30 days


class LedgerPort(Protocol):
    def submit(self, transfers: Sequence[Transfer], *, linked: bool = False) -> list[Outcome]: ...
    def open_accounts(self, accounts: Sequence[Account]) -> list[Outcome]: ...
    def get_transfer(self, transfer_id: str) -> Recorded: ...


@dataclass(frozen=True)
class UsageRow:
    usage: Usage
    gross: int
    usage_period: str
    booked_period: str
    late_from: str
    booked: bool
    invoice_id: str | None
    spec: str = ""


class UsagePort(Protocol):
    def add_usage(self, rows: Sequence[UsageRow]) -> int: ...
    def unbooked(self, limit: int) -> list[UsageRow]: ...
    def mark_booked(self, usage_ids: Sequence[str]) -> None: ...
    def closed_periods(self) -> set[str]: ...
    def close_period(self, period: str) -> None: ...
    def tenants_to_invoice(self, period: str) -> list[str]: ...
    def issue_invoice(self, tenant_id: str, period: str, build: InvoiceBuilder) -> Invoice | None: ...


class InvoiceBuilder(Protocol):
    def __call__(self, number: str, rows: Sequence[UsageRow]) -> Invoice: ...


def wallet(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:wallet"


def arrears(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:arrears"


def receivable(provider: str) -> str:
    return f"provider:{provider}:receivable"


def sys_account(name: str, currency: str = "CNY") -> str:
    return f"sys:{currency.lower()}:{name}"


# --- budgets -------------------------------------------------------------------------

def estimate_fen(spec: JobSpec, world: World) -> int | None:
    """A conservative cost estimate for admission: the estimated duration on the dearest pool
    the job may land on (its pinned pool, else any pool). None when no duration is given."""
    if spec.estimated_duration_s is None:
        return None
    pools = [world.pool(spec.pool)] if spec.pool else list(world.pools)
    if spec.resources.accelerators:
        units = spec.resources.accelerators * spec.replicas
        price = max((p.price_cny_per_device_hour for p in pools if p.accelerators_per_node), default=Decimal(0))
    else:
        units = spec.resources.cpus * spec.replicas
        price = max((p.price_cny_per_cpu_hour for p in pools), default=Decimal(0))
    return rate_device_time(spec.estimated_duration_s * units, price)


class Budgets:
    """The admission-time budget check: ``reserve`` / ``settle`` / ``release`` by job id."""

    def __init__(self, ledger: LedgerPort, currency: str = "CNY") -> None:
        self.ledger = ledger
        self.currency = currency

    def reserve(self, tenant_id: str, job_id: str, estimated_fen: int) -> Status:
        t = Transfer(f"budget:{job_id}", wallet(tenant_id), sys_account("escrow", self.currency), estimated_fen,
                     self.currency, TransferKind.PENDING, timeout_s=BUDGET_TIMEOUT_S, ref=f"job:{job_id}",
                     memo="budget reservation at admission")
        out = self.ledger.submit([t])[0]
        if out.ok:
            return Status.success("budget")
        if out.result is Result.EXCEEDS_LIMIT:
            return Status(Code.UNSCHEDULABLE, (f"预算不足 budget exhausted: {out.detail}",), "budget")
        return Status(Code.ERROR, (f"{out.result.value}: {out.detail}",), "budget")

    def settle(self, job_id: str, actual_fen: int) -> Status:
        """Post up to the actual cost; the rest of the reservation is released."""
        try:
            pending = self.ledger.get_transfer(f"budget:{job_id}")
        except NotFound:  # nothing was reserved for this job
            return Status(Code.SKIP, ("no reservation",), "budget")
        amount = min(actual_fen, pending.amount)
        kind = TransferKind.POST if amount > 0 else TransferKind.VOID
        t = Transfer(f"budget:{job_id}:settle", "", "", amount, self.currency, kind, pending_id=f"budget:{job_id}",
                     ref=f"job:{job_id}")
        out = self.ledger.submit([t])[0]
        return Status.success("budget") if out.ok else Status(Code.ERROR, (out.result.value, out.detail), "budget")

    def release(self, job_id: str) -> Status:
        t = Transfer(f"budget:{job_id}:settle", "", "", 0, self.currency, TransferKind.VOID,
                     pending_id=f"budget:{job_id}", ref=f"job:{job_id}")
        out = self.ledger.submit([t])[0]
        if out.ok:
            return Status.success("budget")
        return Status(Code.SKIP, (out.result.value, out.detail), "budget")


# --- the loop ---------------------------------------------------------------------------

def meter(job: Job, world: World, catalogue: Catalogue | None, closed: set[str]) -> UsageRow | None:
    """A finished job attempt -> its rated usage record (None if it never held devices)."""
    if job.state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        return None
    if job.allocation is None or job.started_at is None or job.finished_at is None:
        return None
    try:
        pool = world.pool(job.allocation.pool_id)
    except KeyError:
        # The pool left the configuration: keep the job unmetered (it is retried every pass)
        # rather than guessing a price; the operator sees it in the log.
        log.warning("job %s ran on unknown pool %s: not metered", job.id, job.allocation.pool_id)
        return None
    site = world.site(pool.site_id)
    seconds = max(0, int((job.finished_at - job.started_at).total_seconds()))
    devices = job.allocation.devices or len(job.allocation.replicas) * job.allocation.cpus_per_replica
    dev_s = seconds * devices
    rel = Decimal("1")
    power_w = Decimal("0")
    if catalogue is not None and pool.accelerator:
        try:
            spec = catalogue.get(pool.accelerator)
            rel = Decimal(str(spec.relative_throughput))
            power_w = Decimal(str(spec.tdp_w))
        except (KeyError, InvalidInput):  # not in the catalogue: normalise at 1.0, no energy figure
            pass
    cu = (Decimal(dev_s) / 3600 * rel).quantize(Decimal("0.000001"))
    kwh = (Decimal(dev_s) / 3600 * power_w / 1000 * Decimal(str(site.pue))).quantize(Decimal("0.000001"))
    tokens_in = int(job.spec.labels.get("tokens_in", "0") or 0) if job.spec.labels else 0
    tokens_out = int(job.spec.labels.get("tokens_out", "0") or 0) if job.spec.labels else 0
    u = Usage(usage_id(job.id, job.attempt), job.tenant_id, job.id, pool.id, site.provider, job.started_at,
              job.finished_at, dev_s, cu, kwh, tokens_in, tokens_out)
    u.validate()
    # Accelerator pools price device-hours; CPU-only pools price CPU-hours.
    price = pool.price_cny_per_device_hour if job.allocation.devices else pool.price_cny_per_cpu_hour
    gross = rate_device_time(dev_s, price)
    up = period_of(job.finished_at)
    booked = up
    while booked in closed:
        booked = next_period(booked)
    return UsageRow(u, gross, up, booked, up if booked != up else "", False, None,
                    f"{pool.id} {pool.accelerator or 'cpu'}")


def booking_entry(row: UsageRow, reserved: int | None, excess_from: str, currency: str = "CNY") -> list[Transfer]:
    """The linked ledger entry that books one usage record (ids derived from the usage id)."""
    u = row.usage
    uid = u.id
    escrow = sys_account("escrow", currency)
    out: list[Transfer] = []
    posted = 0
    if reserved is not None:
        posted = min(row.gross, reserved)
        kind = TransferKind.POST if posted > 0 else TransferKind.VOID
        out.append(Transfer(f"budget:{u.job_id}:settle", "", "", posted, currency, kind,
                            pending_id=f"budget:{u.job_id}", ref=f"job:{u.job_id}"))
    excess = row.gross - posted
    if excess > 0:
        out.append(Transfer(f"{uid}:charge", excess_from, escrow, excess, currency, ref=uid, memo="usage charge"))
    s = split_charge(row.gross, DEFAULT_VAT)
    for suffix, account, amount in (("vat", sys_account("vat", currency), s.tax),
                                    ("fee", sys_account("revenue", currency), s.commission),
                                    ("provider", receivable(u.provider), s.provider)):
        if amount > 0:
            out.append(Transfer(f"{uid}:{suffix}", escrow, account, amount, currency, ref=uid))
    return out


class BillingLoop:
    def __init__(self, ledger: LedgerPort, usage: UsagePort, world: World, clock: Clock,
                 catalogue: Catalogue | None = None, seller: Party | None = None,
                 buyers: Callable[[str], Party] | None = None, currency: str = "CNY") -> None:
        self.ledger, self.usage, self.world, self.clock = ledger, usage, world, clock
        self.catalogue = catalogue
        self.currency = currency
        self.seller = seller or Party(world.platform_name, "")
        self.buyers = buyers or (lambda tenant_id: Party(tenant_id, ""))  # name + 统一社会信用代码 per tenant

    def meter(self, jobs: Iterable[Job]) -> int:
        closed = self.usage.closed_periods()
        rows = [r for j in jobs if (r := meter(j, self.world, self.catalogue, closed)) is not None]
        return self.usage.add_usage(rows) if rows else 0

    def book(self, limit: int = 500) -> int:
        rows = self.usage.unbooked(limit)
        done: list[str] = []
        providers = sorted({r.usage.provider for r in rows})
        tenants = sorted({r.usage.tenant_id for r in rows})
        self.ledger.open_accounts(
            [Account(receivable(p), AccountKind.PROVIDER_RECEIVABLE, self.currency, None, p, "provider receivable")
             for p in providers]
            + [Account(wallet(t), AccountKind.TENANT_WALLET, self.currency, 0, t, "wallet") for t in tenants]
            + [Account(arrears(t), AccountKind.TENANT_ARREARS, self.currency, None, t, "arrears") for t in tenants])
        for row in rows:
            if row.gross == 0:  # nothing to charge, but a budget reservation must not linger
                self._release_reservation(row.usage.job_id)
                done.append(row.usage.id)
            elif self._book_one(row):
                done.append(row.usage.id)
        if done:
            self.usage.mark_booked(done)
        return len(done)

    def _release_reservation(self, job_id: str) -> None:
        """Void the job's admission reservation (same id as ``Budgets.release``: idempotent)."""
        self.ledger.submit([Transfer(f"budget:{job_id}:settle", "", "", 0, self.currency, TransferKind.VOID,
                                     pending_id=f"budget:{job_id}", ref=f"job:{job_id}")])

    def _book_one(self, row: UsageRow) -> bool:
        reserved: int | None
        try:
            pending = self.ledger.get_transfer(f"budget:{row.usage.job_id}")
            reserved = pending.amount
        except NotFound:  # the job was admitted without a budget reservation
            reserved = None
        for excess_from in (wallet(row.usage.tenant_id), arrears(row.usage.tenant_id)):
            entry = booking_entry(row, reserved, excess_from, self.currency)
            outs = self.ledger.submit(entry, linked=True)
            if all(o.ok for o in outs):
                return True
            failed = [o for o in outs if o.result is not Result.LINKED_FAILED]
            if failed and failed[0].result is Result.PENDING_ALREADY_CLOSED and reserved is not None:
                reserved = None  # the reservation expired or was released: charge in full
                return self._book_one_unreserved(row)
        return False

    def _book_one_unreserved(self, row: UsageRow) -> bool:
        for excess_from in (wallet(row.usage.tenant_id), arrears(row.usage.tenant_id)):
            outs = self.ledger.submit(booking_entry(row, None, excess_from, self.currency), linked=True)
            if all(o.ok for o in outs):
                return True
        return False

    def close_period(self, period: str) -> list[Invoice]:
        """Close a period and invoice every tenant with usage booked into it (idempotent)."""
        self.usage.close_period(period)
        out = []
        for tenant in self.usage.tenants_to_invoice(period):
            inv = self.usage.issue_invoice(tenant, period, self._builder(tenant, period))
            if inv is not None:
                out.append(inv)
        return out

    def _builder(self, tenant: str, period: str) -> InvoiceBuilder:
        from yungu.engines.gateway.invoice import is_token_usage, token_line
        from yungu.engines.ledger.invoice import build_invoice, line_for

        buyer = self.buyers(tenant)  # looked up before the store opens its write transaction

        def build(number: str, rows: Sequence[UsageRow]) -> Invoice:
            lines = [token_line(r.usage, f"{r.usage.id}:charge", r.gross, DEFAULT_VAT, period, r.late_from)
                     if is_token_usage(r.usage) else  # issue 14: token usage is priced per million tokens
                     line_for(r.usage.id, f"{r.usage.id}:charge", r.spec, r.usage.device_seconds, r.gross,
                              DEFAULT_VAT, period, r.late_from) for r in rows if r.gross > 0]
            return build_invoice(number, period, self.clock.now(), buyer,
                                 self.seller, lines)

        return build

    def run_once(self, jobs: Iterable[Job]) -> tuple[int, int, int]:
        """One reconcile pass: meter finished jobs, book what is unbooked, expire stale holds."""
        metered = self.meter(jobs)
        booked = 0
        while (n := self.book()) > 0:
            booked += n
        expire = getattr(self.ledger, "expire_due", None)
        expired = len(expire()) if expire else 0
        return metered, booked, expired


def now_of(clock: Clock) -> datetime:
    return clock.now()


def budget_admission(budgets: Budgets, world: World, is_prepaid: Callable[[str], bool]) -> Callable[[Job], Status]:
    """The admission hook for the job loop.

    Prepaid tenants get the job's estimated cost reserved from their wallet; an exhausted (or
    never topped-up) wallet holds the job (``UNSCHEDULABLE``) until the wallet is topped up.
    Post-paid tenants are admitted; their usage is booked and invoiced (arrears if unpaid).
    Jobs without a duration estimate cannot be priced in advance and are admitted.
    """

    def check(job: Job) -> Status:
        if not is_prepaid(job.tenant_id):
            return Status(Code.SKIP, ("post-paid tenant",), "budget")
        est = estimate_fen(job.spec, world)
        if not est:
            return Status(Code.SKIP, ("no cost estimate",), "budget")
        st = budgets.reserve(job.tenant_id, job.id, est)
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

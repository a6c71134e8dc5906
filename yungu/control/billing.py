"""Metering -> rating -> booking -> invoicing.

Exactly-once by construction, not by care: every id is derived from the job attempt
(``usage:<job>.<attempt>``), so a retry after a crash at any point re-derives the same usage
record, the same ledger transfer ids and the same invoice line. The ledger answers a repeat
with ``exists``; the usage table ignores a repeated insert; an invoice is unique per tenant
and period. The loop is therefore safe to kill -9 and restart at any point.

Steps (each a separate, atomic, re-runnable transaction):

1. **meter**: a finished job attempt becomes a usage record, rated at its pool's posted price,
   over the run's real times (the executor's start and end, recorded by the job loop).
   If the usage's own period is already closed, it is booked into the first open period and
   keeps ``late_from`` as its reference (never lost, never rewritten into a closed invoice).
   A job that cannot be metered (its pool left the configuration, bad token labels) is
   parked, logged and raised as an alert, and retried at the next start.
2. **book**: one linked ledger entry per usage record (``yungu.engines.ledger.booking``).
   Before planning it, the loop asks the ledger whether the entry is already there (every
   leg carries the usage id as ``ref``), so a crash between booking and marking books nothing
   twice. A row that fails is never silent: it is logged with its reason, raised as an
   alert, and parked with back-off (5 s, doubling, at most an hour) so it never blocks the
   rows behind it; it is retried until it books, and the alert resolves when it does.
3. **invoice**: closing a period issues one invoice per tenant over the usage booked into it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from yungu.control.budgets import Budgets, budget_admission, estimate_fen, release_unused
from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput
from yungu.domain.job import Job, JobState
from yungu.domain.world import World
from yungu.engines.ledger import Account, AccountKind, Result
from yungu.engines.ledger.accounts import arrears, receivable, sys_account, wallet
from yungu.engines.ledger.booking import Payer, charged_of, plan_booking
from yungu.engines.ledger.invoice import Invoice, Party
from yungu.engines.ledger.rating import (
    DEFAULT_VAT,
    Usage,
    job_price,
    next_period,
    period_of,
    rate_device_time,
    unit_seconds,
    usage_id,
)
from yungu.ports.billing import (
    AlertPort,
    Booked,
    InvoiceBuilder,
    LedgerPort,
    MeteringPort,
    UsagePort,
    UsageRow,
)

__all__ = [  # the account helpers and budget names are re-exported for the API and tests
    "BillingLoop", "Budgets", "UsageRow", "arrears", "budget_admission", "estimate_fen", "meter", "receivable",
    "release_unused", "sys_account", "wallet",
]

log = logging.getLogger("yungu.billing")

RETRY_S = 5.0  # a failed booking is retried after 5 s, then 10, 20, ... at most an hour
MAX_RETRY_S = 3600.0
ALERT_BOOKING = "billing_unbooked"
ALERT_METERING = "billing_unmetered"
ALERT_OVERRUN = "budget_overrun"


def meter(job: Job, world: World, catalogue: Catalogue | None, closed: set[str]) -> UsageRow | None:
    """A finished job attempt -> its rated usage record (None if it never ran).

    Raises ``KeyError`` (pool not in the world) or ``InvalidInput`` (bad labels): the caller
    parks the job and raises an alert.
    """
    if job.state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        return None
    if job.allocation is None or job.started_at is None or job.finished_at is None:
        return None
    if "/" in job.allocation.pool_id and not world.has_pool(job.allocation.pool_id):
        return None  # a peer's pool ("platform/pool", issue 12): booked from the peer's signed usage receipt
    pool = world.pool(job.allocation.pool_id)
    site = world.site(pool.site_id)
    units, price = job_price(job, world)
    ended = max(job.finished_at, job.started_at)  # an executor's clock may step back a little
    dev_s = unit_seconds(job.started_at, ended, units)
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
    u = Usage(usage_id(job.id, job.attempt), job.tenant_id, job.id, pool.id, site.provider_id, job.started_at,
              ended, dev_s, cu, kwh, _tokens(job, "tokens_in"), _tokens(job, "tokens_out"))
    u.validate()
    gross = rate_device_time(dev_s, price)
    up = period_of(ended)
    booked = up
    while booked in closed:
        booked = next_period(booked)
    return UsageRow(u, gross, up, booked, up if booked != up else "", False, None,
                    f"{pool.id} {pool.accelerator or 'cpu'}")


def _tokens(job: Job, label: str) -> int:
    raw = (job.spec.labels or {}).get(label, "") or "0"
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"job {job.id}: label {label}={raw!r} is not a whole number of tokens")
    return int(raw)


@dataclass
class Metered:
    added: int = 0  # new usage records
    done: list[str] = field(default_factory=list)  # jobs metered (or with nothing to meter)
    parked: dict[str, str] = field(default_factory=dict)  # job -> why it could not be metered


class BillingLoop:
    def __init__(self, ledger: LedgerPort, usage: UsagePort, world: World, clock: Clock,
                 catalogue: Catalogue | None = None, seller: Party | None = None,
                 buyers: Callable[[str], Party] | None = None, currency: str = "CNY",
                 is_prepaid: Callable[[str], bool] | None = None, alerts: AlertPort | None = None) -> None:
        self.ledger, self.usage, self.world, self.clock = ledger, usage, world, clock
        self.catalogue = catalogue
        self.currency = currency
        self.seller = seller or Party(world.platform_name, "")
        self.buyers = buyers or (lambda tenant_id: Party(tenant_id, ""))  # name + 统一社会信用代码 per tenant
        self.is_prepaid = is_prepaid or (lambda tenant_id: False)
        self.alerts = alerts
        self.budgets = Budgets(ledger, currency)
        self._lock = threading.Lock()  # one pass at a time (the runner and POST /billing/run)

    # --- metering -------------------------------------------------------------------
    def meter_jobs(self, jobs: Iterable[Job]) -> Metered:
        with self._lock:
            return self._meter_jobs(jobs)

    def _meter_jobs(self, jobs: Iterable[Job]) -> Metered:
        closed = self.usage.closed_periods()
        out = Metered()
        rows = []
        for j in jobs:
            try:
                row = meter(j, self.world, self.catalogue, closed)
            except (KeyError, InvalidInput) as exc:
                why = (f"pool {exc.args[0]!r} is not in the configuration" if isinstance(exc, KeyError)
                       else str(exc))
                out.parked[j.id] = why
                log.error("job %s not metered: %s", j.id, why)
                self._alert(ALERT_METERING, j.id, "critical", f"作业未计量 job {j.id} (tenant {j.tenant_id}) could not "
                            f"be metered: {why}; it is retried at the next start")
                continue
            if row is not None:
                rows.append(row)
            out.done.append(j.id)
        out.added = self.usage.add_usage(rows) if rows else 0
        return out

    def meter(self, jobs: Iterable[Job]) -> int:
        """Meter these jobs (new usage records only); returns how many records were new."""
        return self.meter_jobs(jobs).added

    def meter_from(self, source: MeteringPort, batch: int = 1000) -> int:
        """Meter every finished job the store has not marked, in batches; returns new records."""
        added = 0
        while True:
            jobs = source.unmetered(batch)
            if not jobs:
                return added
            m = self.meter_jobs(jobs)
            source.mark_metered(m.done, list(m.parked))
            added += m.added
            if len(jobs) < batch:
                return added

    # --- booking --------------------------------------------------------------------
    def book(self, limit: int = 500) -> int:
        """Book one batch of due usage records; returns how many were booked."""
        return self._book_batch(limit)[1]

    def book_due(self, limit: int = 500) -> int:
        """Book every due usage record (parked ones wait for their retry time)."""
        total = 0
        while True:
            handled, booked = self._book_batch(limit)
            total += booked
            if handled < limit:
                return total

    def _book_batch(self, limit: int) -> tuple[int, int]:
        with self._lock:
            now = self.clock.now()
            rows = self.usage.due(limit, now)
            if not rows:
                return 0, 0
            self._open_accounts(rows)
            done: list[Booked] = []
            for row in rows:
                result: Booked | str
                try:
                    result = self._book_one(row)
                except Exception as exc:  # a bug or the database: park the row, keep the others going
                    log.exception("booking %s failed", row.usage.id)
                    result = f"internal error: {type(exc).__name__}"
                if isinstance(result, Booked):
                    done.append(result)
                    if row.attempts:
                        self._resolve(ALERT_BOOKING, row.usage.id)
                    if result.written_off:
                        self._overrun(row, result)
                else:
                    self._park(row, result, now)
            if done:
                self.usage.mark_booked(done)
            return len(rows), len(done)

    def _provider(self, name_or_id: str) -> str:
        """The provider's stable id: usage from other areas (token batches) may carry a site's
        display name; one that names no site (a peer's provider id) is kept as it is."""
        return self.world.provider_id_of(name_or_id) or name_or_id

    def _open_accounts(self, rows: Sequence[UsageRow]) -> None:
        providers = sorted({self._provider(r.usage.provider) for r in rows})
        tenants = sorted({r.usage.tenant_id for r in rows})
        self.ledger.open_accounts(
            [Account(receivable(p), AccountKind.PROVIDER_RECEIVABLE, self.currency, None, p,
                     f"{self.world.provider_name(p)} receivable") for p in providers]
            + [Account(wallet(t), AccountKind.TENANT_WALLET, self.currency, 0, t, "wallet") for t in tenants]
            + [Account(arrears(t), AccountKind.TENANT_ARREARS, self.currency, None, t, "arrears") for t in tenants])

    def _book_one(self, row: UsageRow) -> Booked | str:
        """Book one usage record; a ``Booked`` or why it could not be booked (nothing changed)."""
        u = row.usage
        legs = self.ledger.by_ref(u.id)
        if legs:  # booked before a crash (or by a concurrent pass): the entry stands as it is
            charged = charged_of([r.transfer for r in legs])
            return Booked(u.id, charged, max(0, row.gross - charged))
        prepaid = self.is_prepaid(u.tenant_id)
        why = ""
        for _attempt in range(3):  # the wallet or the holds may change under us: plan again
            payer = Payer(wallet(u.tenant_id), self.budgets.room(u.tenant_id), "" if prepaid else arrears(u.tenant_id))
            plan = plan_booking(u.id, u.job_id, row.gross, self.budgets.holds(u.job_id), payer,
                                self._provider(u.provider), self.currency)
            outs = self.ledger.submit(list(plan.transfers), linked=True) if plan.transfers else []
            if all(o.ok for o in outs):
                return Booked(u.id, plan.charged, plan.written_off)
            bad = next((o for o in outs if not o.ok and o.result is not Result.LINKED_FAILED), outs[0])
            why = f"{bad.id}: {bad.result.value}" + (f" ({bad.detail})" if bad.detail else "")
            if bad.result not in (Result.EXCEEDS_LIMIT, Result.PENDING_ALREADY_CLOSED, Result.PENDING_NOT_FOUND):
                break
        return why

    def _park(self, row: UsageRow, why: str, now: datetime) -> None:
        attempts = row.attempts + 1
        retry_at = now + timedelta(seconds=min(MAX_RETRY_S, RETRY_S * 2 ** (attempts - 1)))
        self.usage.park(row.usage.id, why, retry_at)
        log.error("usage %s (tenant %s, %s fen) not booked, attempt %d, retry at %s: %s", row.usage.id,
                  row.usage.tenant_id, row.gross, attempts, retry_at.isoformat(), why)
        self._alert(ALERT_BOOKING, row.usage.id, "critical",
                    f"计费入账失败 usage {row.usage.id} of tenant {row.usage.tenant_id} could not be booked "
                    f"(attempt {attempts}; next try {retry_at.isoformat()}): {why}")

    def _overrun(self, row: UsageRow, b: Booked) -> None:
        log.warning("usage %s: %s fen over the prepaid budget written off", row.usage.id, b.written_off)
        self._alert(ALERT_OVERRUN, row.usage.id, "warning",
                    f"预付超支核销 job {row.usage.job_id} of prepaid tenant {row.usage.tenant_id} ran past its budget; "
                    f"{b.written_off} fen were not charged (the platform pays the provider's share)")

    def _alert(self, kind: str, subject: str, severity: str, message: str) -> None:
        if self.alerts is None:
            return
        try:
            self.alerts.raise_alert(kind, subject, severity, message, self.clock.now())
        except Exception:  # the alert is a courtesy: the log line above already says it all
            log.exception("could not raise alert %s %s", kind, subject)

    def _resolve(self, kind: str, subject: str) -> None:
        if self.alerts is not None:
            try:
                self.alerts.resolve_alert(kind, subject, self.clock.now())
            except Exception:
                log.exception("could not resolve alert %s %s", kind, subject)

    # --- invoicing ------------------------------------------------------------------
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
            return build_invoice(number, period, self.clock.now(), buyer, self.seller, lines)

        return build

    def run_once(self, jobs: Iterable[Job]) -> tuple[int, int, int]:
        """One pass over the given jobs: meter them, book what is due, expire stale holds."""
        metered = self.meter(jobs)
        booked = self.book_due()
        expired = len(self.ledger.expire_due())
        return metered, booked, expired

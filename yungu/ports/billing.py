"""What the billing loop, the budgets and the billing runner need from the outside world.

Implemented by ``yungu.adapters.ledger`` (ledger, usage, alerts) and the job store
(``yungu.adapters.store.job_store.SqlStore``: metering marks, running jobs, stops).

What callers may assume of every implementation:

- ``LedgerPort.submit`` is idempotent by transfer id (a repeat answers ``exists``), and a
  ``linked`` batch is all or nothing. Expected failures are ``Outcome`` values.
- ``UsagePort.add_usage`` ignores a usage id it already holds; ``mark_booked`` and ``park``
  are idempotent; ``due`` returns only rows whose retry time has come (a parked row never
  blocks the rows behind it).
- ``MeteringPort.unmetered`` returns finished jobs not yet marked; a job is marked only after
  its usage record is stored, so a crash in between meters it again (same usage id: harmless).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from yungu.domain.job import Job, JobState
from yungu.engines.ledger import Account, Balance, Outcome, Recorded, Transfer
from yungu.engines.ledger.invoice import Invoice
from yungu.engines.ledger.rating import Usage


class LedgerPort(Protocol):
    def submit(self, transfers: Sequence[Transfer], *, linked: bool = False) -> list[Outcome]: ...
    def open_accounts(self, accounts: Sequence[Account]) -> list[Outcome]: ...
    def get_transfer(self, transfer_id: str) -> Recorded: ...
    def by_ref(self, ref: str) -> list[Recorded]: ...
    def account(self, account_id: str) -> tuple[Account, Balance]: ...
    def expire_due(self, limit: int = 1000) -> list[Outcome]: ...


@dataclass(frozen=True)
class UsageRow:
    """A usage record as stored: rated (``gross``) and, once booked, what the tenant paid."""

    usage: Usage
    gross: int  # fen, tax inclusive: the rated charge; once booked, what the tenant was charged
    usage_period: str
    booked_period: str
    late_from: str
    booked: bool
    invoice_id: str | None
    spec: str = ""
    written_off: int = 0  # fen not charged to a prepaid tenant (an overrun the platform absorbed)
    attempts: int = 0  # failed booking attempts so far
    error: str = ""  # why the last booking attempt failed


@dataclass(frozen=True)
class Booked:
    usage_id: str
    charged: int
    written_off: int


class InvoiceBuilder(Protocol):
    def __call__(self, number: str, rows: Sequence[UsageRow]) -> Invoice: ...


class UsagePort(Protocol):
    def add_usage(self, rows: Sequence[UsageRow]) -> int: ...
    def due(self, limit: int, now: datetime) -> list[UsageRow]: ...
    def mark_booked(self, booked: Sequence[Booked]) -> None: ...
    def park(self, usage_id: str, error: str, retry_at: datetime) -> None: ...
    def closed_periods(self) -> set[str]: ...
    def close_period(self, period: str) -> None: ...
    def tenants_to_invoice(self, period: str) -> list[str]: ...
    def issue_invoice(self, tenant_id: str, period: str, build: InvoiceBuilder) -> Invoice | None: ...


class AlertPort(Protocol):
    """Operator alerts (the telemetry alert list): one open alert per (kind, subject)."""

    def raise_alert(self, kind: str, subject: str, severity: str, message: str, now: datetime) -> None: ...
    def resolve_alert(self, kind: str, subject: str, now: datetime) -> None: ...


class MeteringPort(Protocol):
    def unmetered(self, limit: int) -> list[Job]:
        """Finished jobs (succeeded, failed, cancelled) not yet marked metered, oldest first."""
        ...

    def mark_metered(self, job_ids: Sequence[str], parked: Sequence[str] = ()) -> None:
        """Mark jobs metered; ``parked`` ones could not be (see ``unpark_metering``)."""
        ...

    def unpark_metering(self) -> None:
        """Make parked jobs unmetered again (once per start: the configuration may have changed)."""
        ...


class JobControlPort(Protocol):
    """The few job-store calls a budget needs (``SqlStore`` implements them)."""

    def in_states(self, states: Iterable[JobState]) -> list[Job]: ...
    def get(self, job_id: str) -> Job: ...
    def is_prepaid(self, tenant_id: str) -> bool: ...
    def request_cancel(self, job_id: str, now: datetime, reason: str = "") -> Job: ...


class BudgetJobsPort(Protocol):
    """The running jobs a budget watches, and the one effect it may ask for: a stop."""

    def running(self) -> list[Job]: ...
    def still_running(self, job_id: str) -> bool: ...
    def is_prepaid(self, tenant_id: str) -> bool: ...
    def stop(self, job_id: str, reason: str) -> None: ...

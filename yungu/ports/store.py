"""What the control loop and the API need from durable storage: jobs, tenants, keys, leases.

``yungu.adapters.store`` implements these (``SqlStore``, ``SqlLeaseStore``; a test checks
that every method here exists there with the same parameters). The control loop is typed
against ``JobStore`` and ``LeaseStore`` only.

Fencing: a process that leads the control loop holds a lease whose ``token`` grows at every
change of holder. ``JobStore.fenced(fence)`` returns a view whose writes first check, in
the same transaction, that the token is still current, and raise ``Fenced`` otherwise; so a
leader that was paused past its lease, and then wakes up, cannot overwrite what the new
leader wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from yungu.domain.errors import Conflict
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.tenancy import ApiKey, Principal, Role, Tenant
from yungu.engines.apply import Transition

__all__ = ["Fence", "Fenced", "JobStore", "Lease", "LeaseStore", "PlatformStore", "TenantStore", "Transition"]


@dataclass(frozen=True)
class Fence:
    """The lease a write is made under: refused unless ``token`` is still the lease's."""

    lease: str
    token: int


class Fenced(Conflict):
    """A write carried a fencing token that is no longer current: another process leads."""

    code = "fenced"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_in_s: float  # on the database's clock, at the time of the call
    address: str = ""  # where the holder serves its API (for operators)

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.token)


class LeaseStore(Protocol):
    def acquire(self, name: str, holder: str, ttl_s: float, address: str = "") -> Lease | None:
        """Take the lease if it is free or expired (a new token), or renew it if ``holder``
        already holds it (same token). None when someone else holds it."""
        ...

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a held lease; None if it was lost (expired and taken, or released)."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean shutdown), so a standby need not wait for expiry."""
        ...

    def current(self, name: str) -> Lease | None: ...


class JobStore(Protocol):
    # -- writes by the API (never fenced: every server serves the API)
    def submit(self, tenant_id: str, spec: JobSpec, now: datetime, job_id: str,
               idempotency_key: str | None = None, body_hash: str | None = None) -> tuple[Job, bool]: ...

    def submit_many(self, items: Sequence[tuple[str, JobSpec, str, str | None]], now: datetime) -> list[Job]: ...

    def request_cancel(self, job_id: str, now: datetime, reason: str = "") -> Job: ...

    # -- reads
    def get(self, job_id: str) -> Job: ...

    def page(self, tenant_id: str | None, states: Iterable[JobState] = (), after: str | None = None,
             limit: int = 50) -> list[Job]: ...

    def in_states(self, states: Iterable[JobState]) -> list[Job]: ...

    def waiting(self, now: datetime, resting: bool = False) -> list[Job]:
        """Pending jobs, and queued ones not resting (unless a cancel was asked for); with
        ``resting``, every queued one."""
        ...

    def finished_since(self, since: datetime | None, limit: int = 5000) -> list[Job]: ...

    def counts(self) -> dict[str, int]: ...

    def events(self, job_id: str) -> list[dict[str, Any]]: ...

    def blocks_event_loop(self) -> bool:
        """True when a read waits on a network (run it off an async event loop)."""
        ...

    async def get_async(self, job_id: str) -> Job:
        """``get``, awaited on an async event loop without blocking it (the API's status read)."""
        ...

    # -- writes by the control loop (fenced when a fence is set)
    def record(self, transitions: Sequence[Transition]) -> list[Job]:
        """Apply transitions atomically; returns those applied (stale ones are skipped)."""
        ...

    def rest(self, until: Mapping[str, datetime]) -> None: ...

    def set_reasons(self, reasons: Mapping[str, str]) -> None: ...

    def fenced(self, fence: Fence | None) -> JobStore:
        """The same store whose loop writes carry ``fence`` (None: unfenced)."""
        ...


class TenantStore(Protocol):
    def platform_value(self, key: str) -> str | None: ...

    def set_platform_value(self, key: str, value: str) -> None: ...

    def create_tenant(self, tenant_id: str, name: str, now: datetime, social_credit_code: str = "",
                      prepaid: bool = False) -> Tenant: ...

    def is_prepaid(self, tenant_id: str) -> bool: ...

    def tenants(self) -> list[Tenant]: ...

    def tenant(self, tenant_id: str) -> Tenant: ...

    def tenant_by_name(self, name: str) -> Tenant | None: ...

    def create_key(self, key_id: str, role: Role, tenant_id: str | None, name: str,
                   now: datetime, provider: str | None = None) -> tuple[ApiKey, str]: ...

    def api_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str) -> None: ...

    def principal(self, secret: str) -> Principal | None: ...

    def count_admin_keys(self) -> int: ...


class PlatformStore(JobStore, TenantStore, Protocol):
    """Both, as one SQL store implements them (what the API is handed)."""


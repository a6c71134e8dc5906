"""Small ports the API is handed by the composition root: ids, submission batching, the audit
log (``adapters/store/audit_store.py``) and the stores of signed documents
(``adapters/store/record_store.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from yungu.domain.job import Job, JobSpec


class IdSource(Protocol):
    def new(self) -> str:
        """A new globally unique, time-ordered id (UUIDv7)."""
        ...


class Submitter(Protocol):
    async def submit(self, tenant_id: str, spec: JobSpec, job_id: str, body_hash: str | None, now: datetime) -> Job:
        """Insert a pending job (group commit with concurrent submissions); durable on return."""
        ...


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    key_id: str
    role: str
    action: str
    subject: str
    reason: str
    outcome: str
    detail: dict[str, Any]


class AuditLog(Protocol):
    """Who moved money or changed keys, when, why, with what outcome (append only)."""

    def record(self, at: datetime, key_id: str, role: str, action: str, subject: str, reason: str,
               outcome: str, detail: dict[str, Any] | None = None) -> None: ...

    def entries(self, after: int = 0, limit: int = 100) -> list[AuditEntry]: ...


class CertificateStore(Protocol):
    def add(self, body: dict[str, Any], canonical: bytes, signature: str, key_id: str, issued_at: datetime) -> None: ...

    def get(self, cert_id: str) -> dict[str, Any] | None: ...


class StatementStore(Protocol):
    def save(self, statement_id: str, period: str, currency: str, canonical: bytes,
             signatures: dict[str, str], now: datetime) -> bool: ...

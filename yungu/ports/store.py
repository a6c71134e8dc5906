"""What the control loop and the API need from durable storage of jobs and tenants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from yungu.domain.job import Event, Job, JobSpec, JobState


@dataclass(frozen=True)
class Transition:
    """One state change to record: applied with compare-and-set on (state, attempt)."""

    before: Job
    after: Job
    event: Event
    reason: str = ""


class JobStore(Protocol):
    def submit(self, tenant_id: str, spec: JobSpec, now: datetime, job_id: str,
               idempotency_key: str | None = None, body_hash: str | None = None) -> tuple[Job, bool]: ...

    def get(self, job_id: str) -> Job: ...

    def in_states(self, states: Iterable[JobState]) -> list[Job]: ...

    def record(self, transitions: Sequence[Transition]) -> list[Job]:
        """Apply transitions atomically; returns those applied (stale ones are skipped)."""
        ...

    def set_reason(self, job_id: str, reason: str) -> None: ...

    def request_cancel(self, job_id: str, now: datetime) -> Job: ...

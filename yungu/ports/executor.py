"""The executor contract: where jobs really run (local processes, Slurm, Ray, a peer).

What callers may assume of every executor:

- ``submit`` is **idempotent by request id**: a second submit with the same id never starts
  a second copy; it returns the status of the first. A retry after a crash is harmless.
- Calls are synchronous but the engine is asynchronous and eventually consistent: a job
  submitted may show ``pending`` for a while; ``observe`` is the source of truth.
- Expected failures (engine unreachable, launch rejected, request unknown) come back as
  ``ExecError`` values, never as exceptions. Exceptions mean bugs.
- ``list_active`` returns every request the engine still runs for this platform, so a
  restarted platform can re-adopt them instead of submitting twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class ExecPhase(StrEnum):
    PENDING = "pending"  # accepted, not yet running
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ran and exited non-zero (or was killed by the engine)
    CANCELLED = "cancelled"  # stopped at our request
    LOST = "lost"  # the engine no longer knows it and no outcome was recorded


class ExecErrorCode(StrEnum):
    UNREACHABLE = "unreachable"  # retry later; the job stays where it is
    REJECTED = "rejected"  # the engine will never run this launch as given
    NOT_FOUND = "not_found"  # unknown request id
    INTERNAL = "internal"


@dataclass(frozen=True)
class ExecError:
    code: ExecErrorCode
    message: str

    @property
    def retryable(self) -> bool:
        return self.code is ExecErrorCode.UNREACHABLE


@dataclass(frozen=True)
class ReplicaLaunch:
    node: int
    devices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Launch:
    """One attempt of one job, as handed to an executor."""

    request_id: str  # f"{job_id}.{attempt}": stable across retries of the same attempt
    job_id: str
    tenant_id: str
    pool_id: str
    command: str  # run by /bin/sh -c
    replicas: tuple[ReplicaLaunch, ...]
    cpus_per_replica: int = 1
    memory_gb_per_replica: int = 1
    accelerators_per_replica: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    time_limit_s: int | None = None


@dataclass(frozen=True)
class ExecStatus:
    request_id: str
    phase: ExecPhase
    exit_code: int | None = None
    reason: str = ""
    native_id: str = ""  # the engine's own id (pid, Slurm job id, Ray submission id)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.phase in (ExecPhase.SUCCEEDED, ExecPhase.FAILED, ExecPhase.CANCELLED, ExecPhase.LOST)


@dataclass(frozen=True)
class Capabilities:
    """What this executor supports; unsupported features map to the reason."""

    name: str
    gangs: bool = True
    devices: bool = True
    logs: bool = True
    energy_accounting: bool = False
    unsupported: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    eof: bool  # the job is done and no more output will come


class Executor(Protocol):
    """(An executor may also expose ``max_gang: int``, the largest gang it can ever launch;
    the API refuses bigger gangs at submission instead of failing them at launch.)"""

    name: str

    def capabilities(self) -> Capabilities: ...

    def submit(self, launch: Launch) -> ExecStatus | ExecError: ...

    def cancel(self, request_id: str, grace_s: float = 10.0) -> ExecStatus | ExecError: ...

    def status(self, request_id: str) -> ExecStatus | ExecError: ...

    def observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        """Batch status: one engine round-trip for many requests where the engine allows."""
        ...

    def logs(self, request_id: str, stream: str = "stdout", offset: int = 0, limit: int = 1 << 20) -> LogChunk | ExecError: ...

    def list_active(self) -> Sequence[ExecStatus] | ExecError: ...

    def check(self) -> Mapping[str, object]:
        """Reachability and the capacity the engine sees, for ``yungu sites check``."""
        ...

    def close(self) -> None: ...

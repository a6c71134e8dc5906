"""Jobs: the spec a tenant submits, and the one place where job states change.

State machine (every transition is listed in ``TRANSITIONS``; nothing else may change a
job's state)::

    pending ──admit──▶ queued ──place──▶ scheduled ──dispatch──▶ dispatched ──start──▶ running
       │                 ▲  ▲               │                       │                  │
       │                 │  └────unplace────┘                       │                  │
       └─reject─▶ failed │                                          ▼                  ▼
                         └──────requeue────── preempted ◀─preempt── (dispatched|running)
                                  (also: lost dispatched/running ──requeue──▶ queued)
    (dispatched|running) ──succeed/fail──▶ succeeded / failed
    (pending|queued|scheduled|dispatched|running) ──cancel──▶ cancelled

``dispatched`` means the executor accepted the launch request (idempotent by request id);
``running`` means the executor reported processes running.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from yungu.domain.errors import InvalidInput, InvalidTransition


class JobKind(StrEnum):
    BATCH = "batch"
    TRAINING = "training"
    INFERENCE = "inference"  # a long-running service


class Objective(StrEnum):
    TIME = "time"
    COST = "cost"
    GREEN = "green"
    BALANCED = "balanced"


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) capacity on a pool."""
        return self in (JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING)


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Event(StrEnum):
    ADMIT = "admit"
    REJECT = "reject"
    PLACE = "place"
    UNPLACE = "unplace"
    DISPATCH = "dispatch"
    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    PREEMPT = "preempt"
    REQUEUE = "requeue"


S = JobState
TRANSITIONS: Mapping[tuple[JobState, Event], JobState] = {
    (S.PENDING, Event.ADMIT): S.QUEUED,
    (S.PENDING, Event.REJECT): S.FAILED,
    (S.QUEUED, Event.PLACE): S.SCHEDULED,
    (S.QUEUED, Event.REJECT): S.FAILED,  # infeasible forever
    (S.SCHEDULED, Event.UNPLACE): S.QUEUED,
    (S.SCHEDULED, Event.DISPATCH): S.DISPATCHED,
    (S.SCHEDULED, Event.FAIL): S.FAILED,  # the engine rejected the launch
    (S.DISPATCHED, Event.START): S.RUNNING,
    (S.DISPATCHED, Event.SUCCEED): S.SUCCEEDED,  # finished before we saw it run
    (S.DISPATCHED, Event.FAIL): S.FAILED,
    (S.RUNNING, Event.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, Event.FAIL): S.FAILED,
    (S.DISPATCHED, Event.PREEMPT): S.PREEMPTED,
    (S.RUNNING, Event.PREEMPT): S.PREEMPTED,
    (S.PREEMPTED, Event.REQUEUE): S.QUEUED,
    (S.DISPATCHED, Event.REQUEUE): S.QUEUED,  # the engine lost it before it ran
    (S.RUNNING, Event.REQUEUE): S.QUEUED,  # the engine lost it; run again
    (S.PENDING, Event.CANCEL): S.CANCELLED,
    (S.QUEUED, Event.CANCEL): S.CANCELLED,
    (S.SCHEDULED, Event.CANCEL): S.CANCELLED,
    (S.DISPATCHED, Event.CANCEL): S.CANCELLED,
    (S.RUNNING, Event.CANCEL): S.CANCELLED,
    (S.PREEMPTED, Event.CANCEL): S.CANCELLED,
}


def next_state(state: JobState, event: Event) -> JobState:
    """The state after ``event``; raises ``InvalidTransition`` if not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(
            f"job in state {state.value!r} cannot {event.value}",
            detail={"state": state.value, "event": event.value},
        ) from None


# Hard limits that reject absurd specs before they reach the store.
MAX_REPLICAS = 1024
MAX_ACCELERATORS_PER_REPLICA = 64
MAX_CPUS_PER_REPLICA = 1024
MAX_MEMORY_GB_PER_REPLICA = 16384
MAX_COMMAND_BYTES = 64 * 1024
MAX_DURATION_S = 90 * 86400
MAX_NAME_CHARS = 200
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 63
MAX_LABEL_VALUE_CHARS = 256
MAX_ENV_VARS = 256
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_BYTES = 128 * 1024  # all names and values together: well inside any kernel's ARG_MAX
# Deadlines and earliest starts at most a century ahead: far enough for "not before I say so"
# (benchmarks park jobs in 2099), near enough that date arithmetic never overflows year 9999.
MAX_SCHEDULE_AHEAD_S = 36525 * 86400
# POSIX portable environment names (IEEE Std 1003.1, 8.1): what every shell and executor accepts.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_nul(what: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL byte / {what} 含有 NUL 字节")


@dataclass(frozen=True)
class Resources:
    """Per-replica resources. ``accelerator_types`` empty means any accelerator (or none)."""

    cpus: int = 1
    memory_gb: int = 1
    accelerators: int = 0
    accelerator_types: tuple[str, ...] = ()

    def validate(self) -> None:
        if not 0 < self.cpus <= MAX_CPUS_PER_REPLICA:
            raise InvalidInput(f"cpus must be 1..{MAX_CPUS_PER_REPLICA}, got {self.cpus}")
        if not 0 <= self.memory_gb <= MAX_MEMORY_GB_PER_REPLICA:
            raise InvalidInput(f"memory_gb must be 0..{MAX_MEMORY_GB_PER_REPLICA}, got {self.memory_gb}")
        if not 0 <= self.accelerators <= MAX_ACCELERATORS_PER_REPLICA:
            raise InvalidInput(
                f"accelerators must be 0..{MAX_ACCELERATORS_PER_REPLICA}, got {self.accelerators}"
            )


# The scheduler's built-in score terms: the names ``objective_weights`` may use.
OBJECTIVE_TERMS = ("cost", "carbon", "green", "latency", "wait", "finish", "deadline_risk")
MAX_OBJECTIVE_WEIGHT = 100.0


@dataclass(frozen=True)
class JobSpec:
    """What a tenant asks for. Validated once, at admission."""

    name: str
    command: str
    kind: JobKind = JobKind.BATCH
    resources: Resources = field(default_factory=Resources)
    replicas: int = 1  # a gang: all replicas start together or none do
    estimated_duration_s: int | None = None
    deadline: datetime | None = None
    earliest_start: datetime | None = None
    priority: int = 0
    max_price_cny_per_hour: Decimal | None = None
    objective: Objective = Objective.BALANCED
    objective_weights: Mapping[str, float] = field(default_factory=dict)
    data_location: str | None = None  # region id where the job's data lives
    pool: str | None = None  # pin to one pool
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Every rule that needs no clock and no world: limits, names, NUL bytes."""
        if not self.name or len(self.name) > MAX_NAME_CHARS:
            raise InvalidInput(f"name must be 1..{MAX_NAME_CHARS} characters")
        if _CONTROL.search(self.name):
            raise InvalidInput("name must not contain control characters (NUL, newline, ...) / 名称不得含控制字符")
        _no_nul("command", self.command)
        if not self.command.strip():
            raise InvalidInput("command must not be empty")
        if len(self.command.encode()) > MAX_COMMAND_BYTES:
            raise InvalidInput(f"command is longer than {MAX_COMMAND_BYTES} bytes")
        self.resources.validate()
        for acc in self.resources.accelerator_types:
            if not acc or len(acc) > 64 or _CONTROL.search(acc):
                raise InvalidInput(f"accelerator type {acc[:64]!r} must be 1..64 printable characters")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise InvalidInput(f"replicas must be 1..{MAX_REPLICAS}, got {self.replicas}")
        if self.estimated_duration_s is not None and not 0 < self.estimated_duration_s <= MAX_DURATION_S:
            raise InvalidInput(f"estimated_duration_s must be 1..{MAX_DURATION_S}")
        if not -1000 <= self.priority <= 1000:
            raise InvalidInput("priority must be -1000..1000")
        if self.max_price_cny_per_hour is not None and (
            not self.max_price_cny_per_hour.is_finite() or self.max_price_cny_per_hour < 0
        ):
            raise InvalidInput("max_price_cny_per_hour must not be negative")
        for when in (self.deadline, self.earliest_start):
            if when is not None and when.tzinfo is None:
                raise InvalidInput("timestamps need a time zone, e.g. 2026-11-23T08:00:00+08:00")
        if self.deadline and self.earliest_start and self.deadline <= self.earliest_start:
            raise InvalidInput("deadline must be after earliest_start")
        for k, v in self.objective_weights.items():
            if k not in OBJECTIVE_TERMS:
                raise InvalidInput(f"unknown objective weight {k!r}; use one of: {', '.join(OBJECTIVE_TERMS)}")
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= MAX_OBJECTIVE_WEIGHT or math.isnan(v):
                raise InvalidInput(f"objective weight {k!r} must be a number 0..{MAX_OBJECTIVE_WEIGHT:g}, got {v!r}")
        for what, where in (("data_location", self.data_location), ("pool", self.pool)):
            if where is not None and (not where or len(where) > 128 or _CONTROL.search(where)):
                raise InvalidInput(f"{what} must be 1..128 printable characters")
        self._validate_labels()
        self._validate_env()

    def _validate_labels(self) -> None:
        if len(self.labels) > MAX_LABELS:
            raise InvalidInput(f"at most {MAX_LABELS} labels, got {len(self.labels)}")
        for k, v in self.labels.items():
            if len(k) > MAX_LABEL_KEY_CHARS or not LABEL_KEY.fullmatch(k):
                raise InvalidInput(
                    f"label key {k[:80]!r} must be 1..{MAX_LABEL_KEY_CHARS} ASCII letters, digits, '.', '_', "
                    f"'-' or '/', starting and ending with a letter or digit / 标签名无效")
            if len(v) > MAX_LABEL_VALUE_CHARS or _CONTROL.search(v):
                raise InvalidInput(f"label {k!r}: the value must be at most {MAX_LABEL_VALUE_CHARS} printable "
                                   f"characters / 标签值过长或含控制字符")

    def _validate_env(self) -> None:
        if len(self.env) > MAX_ENV_VARS:
            raise InvalidInput(f"at most {MAX_ENV_VARS} environment variables, got {len(self.env)}")
        total = 0
        for k, v in self.env.items():
            if len(k) > MAX_ENV_NAME_CHARS or not ENV_NAME.fullmatch(k):
                raise InvalidInput(
                    f"environment variable name {k[:80]!r} is not a POSIX name: use ASCII letters, digits and "
                    f"'_', not starting with a digit, at most {MAX_ENV_NAME_CHARS} characters / 环境变量名无效")
            if k.startswith("YUNGU_"):
                raise InvalidInput(f"environment variable {k!r}: names starting with YUNGU_ are set by the "
                                   f"platform / YUNGU_ 前缀保留给平台")
            _no_nul(f"environment variable {k}", v)
            size = len(v.encode())
            if size > MAX_ENV_VALUE_BYTES:
                raise InvalidInput(f"environment variable {k!r} is longer than {MAX_ENV_VALUE_BYTES} bytes")
            total += len(k) + 1 + size
        if total > MAX_ENV_BYTES:
            raise InvalidInput(f"the environment is {total} bytes; at most {MAX_ENV_BYTES} / 环境变量总量过大")

    def validate_times(self, now: datetime) -> None:
        """The rules that need the submission time: no deadline in the past (the job would run
        anyway and miss it), nothing scheduled more than a century ahead."""
        horizon = now + timedelta(seconds=MAX_SCHEDULE_AHEAD_S)
        if self.deadline is not None:
            if self.deadline <= now:
                raise InvalidInput(f"deadline {self.deadline.isoformat()} is not in the future (now "
                                   f"{now.isoformat()}) / 截止时间已过")
            if self.deadline > horizon:
                raise InvalidInput("deadline is more than 100 years ahead / 截止时间超过一百年")
        if self.earliest_start is not None and self.earliest_start > horizon:
            raise InvalidInput("earliest_start is more than 100 years ahead / 最早开始时间超过一百年")


@dataclass(frozen=True)
class ReplicaPlacement:
    """Where one replica of a gang runs: a node of the pool and device indices on it."""

    node: int
    devices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Allocation:
    job_id: str
    pool_id: str
    replicas: tuple[ReplicaPlacement, ...]
    cpus_per_replica: int
    memory_gb_per_replica: int

    @property
    def devices(self) -> int:
        return sum(len(r.devices) for r in self.replicas)


@dataclass(frozen=True)
class Job:
    id: str
    platform_id: str
    tenant_id: str
    spec: JobSpec
    state: JobState
    submitted_at: datetime
    updated_at: datetime
    attempt: int = 0
    allocation: Allocation | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    cancel_requested: bool = False

    @property
    def request_id(self) -> str:
        """The executor request id of the current attempt: retries of a dispatch reuse it."""
        return f"{self.id}.{self.attempt}"

    def apply(self, event: Event, now: datetime, **changes: object) -> Job:
        """Return the job after ``event``; the only way a job's state changes."""
        new = next_state(self.state, event)
        job = replace(self, state=new, updated_at=now, **changes)  # type: ignore[arg-type]
        if event is Event.START and job.started_at is None:
            job = replace(job, started_at=now)
        if new.terminal and job.finished_at is None:
            job = replace(job, finished_at=now)
        if event is Event.REQUEUE:
            job = replace(job, attempt=self.attempt + 1, allocation=None, started_at=None, exit_code=None)
        if event is Event.UNPLACE:
            job = replace(job, allocation=None)
        return job

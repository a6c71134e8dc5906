"""The scheduler's request and reply: a frozen snapshot in, a plan out.

``schedule(snapshot) -> Plan`` reads nothing else: no database, no clock, no executor.
A snapshot and its plan can be logged and replayed (the simulator does exactly that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Allocation, Job
from yungu.domain.status import Status
from yungu.domain.world import World


@dataclass(frozen=True)
class NodeFree:
    """Free capacity on one node of a pool."""

    cpus: int
    memory_gb: int
    devices: tuple[int, ...]  # free device indices


@dataclass(frozen=True)
class PoolState:
    pool_id: str
    nodes: tuple[NodeFree, ...]
    available: bool = True  # the site's executor is reachable


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    world: World
    catalogue: Catalogue
    pools: Mapping[str, PoolState]
    pending: tuple[Job, ...]  # queued jobs, in submission order
    running: tuple[Job, ...] = ()  # jobs holding capacity (scheduled/dispatched/running)
    signals: Mapping[str, object] = field(default_factory=dict)  # per-site energy signals/forecasts


@dataclass(frozen=True)
class Start:
    job_id: str
    allocation: Allocation
    explanation: str = ""


@dataclass(frozen=True)
class Defer:
    job_id: str
    until: datetime | None
    status: Status


@dataclass(frozen=True)
class Preempt:
    job_id: str  # the victim
    for_job_id: str
    reason: str


@dataclass(frozen=True)
class Infeasible:
    job_id: str
    status: Status


@dataclass(frozen=True)
class Plan:
    starts: tuple[Start, ...] = ()
    defers: tuple[Defer, ...] = ()
    preempts: tuple[Preempt, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()


class Scheduler(Protocol):
    def schedule(self, snapshot: Snapshot) -> Plan: ...


@runtime_checkable
class IncrementalScheduler(Scheduler, Protocol):
    """A scheduler that can carry derived state from round to round.

    The caller holds the carry (``new_carry()``) and passes it to every round; the plan is the
    same as without it. Dropping the carry (or passing a new one) is always safe.
    """

    def new_carry(self) -> Any: ...

    def schedule(self, snapshot: Snapshot, carry: Any = None) -> Plan: ...

"""Simulator inputs and outputs as plain values (readers in ``yungu.adapters.traces`` build them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Objective
from yungu.domain.world import World
from yungu.engines.energy.signals import ForecastErrorModel, SiteSignal


@dataclass(frozen=True)
class TraceJob:
    """One job of a trace, independent of the trace's format.

    ``duration_s`` is the run time on the reference accelerator (relative throughput 1.0);
    the simulator scales it by the pool's throughput. ``deadline_s`` is relative to submission.
    """

    id: str
    submit_s: float
    duration_s: float
    num_gpus: int
    home: str | None = None  # region id where the job is submitted (its data lives)
    gpu_types: tuple[str, ...] = ()
    deadline_s: float | None = None
    tenant: str = "default"
    objective: Objective = Objective.BALANCED
    priority: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    world: World
    catalogue: Catalogue
    start: datetime  # wall-clock time of trace second 0
    jobs: tuple[TraceJob, ...]
    truth: Mapping[str, SiteSignal]  # per site: what really happens (the sim's ground truth)
    error_model: ForecastErrorModel = field(default_factory=ForecastErrorModel)
    horizon_hours: int = 48
    round_interval_s: float = 300.0
    gpus_per_node: int = 8
    power_load: float = 0.8
    source: str = ""


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant: str
    submit: datetime
    start: datetime | None
    end: datetime | None
    pool_id: str | None
    site_id: str | None
    devices: int
    energy_kwh: float
    carbon_g: float
    green_kwh: float
    cost_cny: Decimal
    deadline: datetime | None
    deadline_feasible: bool  # a pool had room at submission to finish by the deadline
    attempts: int
    state: str  # succeeded | failed | unfinished
    reason: str = ""

    @property
    def jct_s(self) -> float | None:
        return None if self.end is None else (self.end - self.submit).total_seconds()

    @property
    def wait_s(self) -> float | None:
        return None if self.start is None else (self.start - self.submit).total_seconds()

    @property
    def missed(self) -> bool:
        return self.deadline is not None and (self.end is None or self.end > self.deadline)


@dataclass(frozen=True)
class SimResult:
    scenario: str
    policy: str
    records: tuple[JobRecord, ...]
    round_s: tuple[float, ...]  # wall time of each scheduler call (as measured by the given timer)
    rounds: int
    start: datetime
    end: datetime
    capacity_devices: Mapping[str, int]  # per site
    site_load: Mapping[str, tuple[float, ...]]  # per site: busy devices per hour from ``start``
    site_green: Mapping[str, tuple[float, ...]]  # per site: grid renewable share per hour
    preemptions: int = 0
    site_carbon: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # gCO2e/kWh per hour (truth)
    site_price: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # CNY/kWh per hour (truth)

"""Policy names the simulator and benchmarks understand -> scheduler instances."""

from __future__ import annotations

from yungu.domain.catalogue import Catalogue
from yungu.domain.errors import InvalidInput
from yungu.engines.scheduler.baselines import BASELINES
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig
from yungu.engines.scheduler.types import Scheduler

POLICIES = ("yungu", *BASELINES)


def make(name: str, catalogue: Catalogue, policy: PolicyConfig) -> Scheduler:
    if name == "yungu":
        return GreenScheduler(catalogue, policy)
    cls = BASELINES.get(name)
    if cls is None:
        raise InvalidInput(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    sched: Scheduler = cls(catalogue, policy.default_carbon_g_per_kwh)  # type: ignore[assignment]
    return sched

"""Filter and score plugins, and the one registry that holds them.

A *filter* says whether a pool can ever take a job this round (a :class:`Status`, with the
reason when not). A *score* turns one option's estimated metrics into a term in about
``[0, 1]`` (smaller is better); the job's objective weights combine the terms. Both are
one-method Protocols so a plugin is a small class, testable on its own with a table.
Plugins are registered by name in a :class:`Registry`; registering a name twice is an error,
so two plugins can never silently shadow each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from yungu.domain.errors import Conflict
from yungu.domain.job import Job
from yungu.domain.status import Code, Status
from yungu.domain.world import Pool, Site
from yungu.engines.scheduler.firstfit import fits_declared


class Option(NamedTuple):
    """One way to run a job: a pool, a start time and the estimates that go with it.

    A named tuple rather than a frozen dataclass: a round builds tens of thousands of them,
    and a tuple is several times cheaper to create.
    """

    pool_id: str
    site_id: str
    region_id: str
    start: datetime
    run_s: float  # estimated run time on this pool's accelerator
    wait_s: float  # start - now
    cost_cny: float  # indicative score input; money is computed in Decimal by the ledger/sim
    carbon_g: float
    energy_kwh: float
    green_share: float  # 0..1, energy-weighted (contracted green + grid renewable share)
    latency_ms: float
    slack_s: float | None  # time between the estimated end and the deadline (None: no deadline)
    room_now: bool = True


@dataclass(frozen=True)
class Reference:
    """Per-job normalisers: the largest value of each metric over the job's candidate options."""

    cost: float
    carbon: float
    latency: float
    finish: float = 0.0  # the latest estimated finish (wait + run, seconds) among the options


@dataclass(frozen=True)
class OptionArrays:
    """Start-now options on every pool as arrays (one entry per pool), for batch scoring.

    The scheduler ranks all pools once per (weights, data location, run-length bucket) per
    round; scoring 100 pools with one numpy expression per term instead of 100 Python calls
    is what keeps a 1,000-job round fast. These options start now and carry no deadline.
    """

    cost: NDArray[np.float64]
    carbon: NDArray[np.float64]
    green: NDArray[np.float64]
    latency: NDArray[np.float64]
    run: NDArray[np.float64] | None = None  # run seconds on each pool (start-now: the finish time)


@dataclass(frozen=True)
class PoolView:
    """What a filter may look at: the pool, its site, and whether the site is reachable."""

    pool: Pool
    site: Site
    available: bool
    hourly_price_cny: Decimal  # the job's devices (or CPUs) x the pool's price per hour


class FilterPlugin(Protocol):
    def filter(self, job: Job, pool: PoolView) -> Status: ...


class KeyedFilterPlugin(FilterPlugin, Protocol):
    """Optional: a filter whose answer depends on more of the job than its feasibility shape
    (resources, replicas, pinned pool, data location, max price) — e.g. a tenant's pin, prefer
    or forbid list of remote platforms. ``key(job)`` names what else it reads; the round's
    filter memo (kept between rounds by the carry) is then keyed by it too. A filter that
    reads pool state beyond reachability must also be added to ``Carry.begin``'s check."""

    def key(self, job: Job) -> object: ...


class ScorePlugin(Protocol):
    def score(self, job: Job, option: Option, ref: Reference) -> float: ...


class BatchScorePlugin(ScorePlugin, Protocol):
    """Optional: a score plugin that can also score :class:`OptionArrays` at once.

    It must agree with :meth:`score` on each entry (a test checks the built-ins); plugins
    without it are scored one option at a time.
    """

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]: ...


class Registry:
    """Named filter and score plugins; duplicate names are rejected."""

    def __init__(self) -> None:
        self._filters: dict[str, FilterPlugin] = {}
        self._scores: dict[str, ScorePlugin] = {}

    def add_filter(self, name: str, plugin: FilterPlugin) -> None:
        if name in self._filters or name in self._scores:
            raise Conflict(f"a scheduler plugin named {name!r} is already registered")
        self._filters[name] = plugin

    def add_score(self, name: str, plugin: ScorePlugin) -> None:
        if name in self._filters or name in self._scores:
            raise Conflict(f"a scheduler plugin named {name!r} is already registered")
        self._scores[name] = plugin

    def filters(self) -> Iterator[tuple[str, FilterPlugin]]:
        return iter(self._filters.items())

    def keyed_filters(self) -> tuple[KeyedFilterPlugin, ...]:
        """The filters that declare ``key(job)`` (see :class:`KeyedFilterPlugin`)."""
        return tuple(p for p in self._filters.values() if callable(getattr(p, "key", None)))  # type: ignore[misc]

    def scores(self) -> Mapping[str, ScorePlugin]:
        return self._scores


# ---------------------------------------------------------------- filters


class DeclaredFit:
    """The pool's node shape, accelerator type and pinning admit the job (even when empty)."""

    def filter(self, job: Job, pool: PoolView) -> Status:
        reasons = fits_declared(job, pool.pool)
        if reasons:
            return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, tuple(reasons), "declared-fit")
        return Status.success("declared-fit")


class Reachable:
    """The site's executor answers; an unreachable site is a wait, not a failure."""

    def filter(self, job: Job, pool: PoolView) -> Status:
        if not pool.available:
            return Status(Code.UNSCHEDULABLE, (f"site {pool.site.id} unreachable",), "reachable")
        return Status.success("reachable")


class MaxPrice:
    """The pool's hourly price for the job stays within the tenant's ``max_price_cny_per_hour``."""

    def filter(self, job: Job, pool: PoolView) -> Status:
        cap = job.spec.max_price_cny_per_hour
        if cap is not None and pool.hourly_price_cny > cap:
            return Status(
                Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                (f"pool costs {pool.hourly_price_cny} CNY/h > max price {cap} CNY/h",),
                "max-price",
            )
        return Status.success("max-price")


class HomeOnly:
    """Keep every job at the site of its data (for the Let's-Wait-Awhile style baseline)."""

    def filter(self, job: Job, pool: PoolView) -> Status:
        if job.spec.data_location and pool.site.region_id != job.spec.data_location:
            return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ("not the home region",), "home-only")
        return Status.success("home-only")


# ---------------------------------------------------------------- scores


class CostScore:
    """Estimated cost (device-hours x pool price + energy x electricity price) over the max."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        return option.cost_cny / ref.cost if ref.cost > 0 else 0.0

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return opts.cost / ref.cost if ref.cost > 0 else np.zeros_like(opts.cost)


class CarbonScore:
    """Estimated emissions (energy x forecast intensity over the run) over the max."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        return option.carbon_g / ref.carbon if ref.carbon > 0 else 0.0

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return opts.carbon / ref.carbon if ref.carbon > 0 else np.zeros_like(opts.carbon)


class GreenScore:
    """One minus the energy-weighted green share (contracted green + grid renewables)."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        return 1.0 - option.green_share

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return 1.0 - opts.green


class LatencyScore:
    """Distance from the job's data region (region latency matrix) over the max."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        return option.latency_ms / ref.latency if ref.latency > 0 else 0.0

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return opts.latency / ref.latency if ref.latency > 0 else np.zeros_like(opts.latency)


class WaitScore:
    """Waiting relative to run time (the job's slow-down), or to its slack when it has a deadline."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        if option.wait_s <= 0:
            return 0.0
        scale = option.run_s
        if option.slack_s is not None:
            scale = max(scale, option.wait_s + option.slack_s)
        return option.wait_s / max(scale, 1.0)

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return np.zeros_like(opts.cost)  # start-now options do not wait


class FinishScore:
    """Estimated time to finish (wait + run on this pool's accelerator) over the latest finish.

    The wait term alone measures slow-down; this one also rewards a faster accelerator, so a
    job that asks for speed (or a cost job choosing between two pools of about the same price
    per unit of work) picks the pool that finishes first.
    """

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        return (option.wait_s + option.run_s) / ref.finish if ref.finish > 0 else 0.0

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        if opts.run is None or ref.finish <= 0:
            return np.zeros_like(opts.cost)
        return opts.run / ref.finish  # start-now options do not wait


class DeadlineRiskScore:
    """Grows as the estimated end nears the deadline (little slack left for estimate errors)."""

    def score(self, job: Job, option: Option, ref: Reference) -> float:
        if option.slack_s is None:
            return 0.0
        if option.slack_s <= 0:
            return 1.0
        return max(0.0, 1.0 - option.slack_s / max(option.run_s, 1.0))

    def score_batch(self, opts: OptionArrays, ref: Reference) -> NDArray[np.float64]:
        return np.zeros_like(opts.cost)  # batch options carry no deadline


def default_registry(*, home_only: bool = False) -> Registry:
    reg = Registry()
    reg.add_filter("declared-fit", DeclaredFit())
    reg.add_filter("reachable", Reachable())
    reg.add_filter("max-price", MaxPrice())
    if home_only:
        reg.add_filter("home-only", HomeOnly())
    reg.add_score("cost", CostScore())
    reg.add_score("carbon", CarbonScore())
    reg.add_score("green", GreenScore())
    reg.add_score("latency", LatencyScore())
    reg.add_score("wait", WaitScore())
    reg.add_score("finish", FinishScore())
    reg.add_score("deadline_risk", DeadlineRiskScore())
    return reg

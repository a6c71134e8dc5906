# Frozen copy of yungu/engines/scheduler/green.py at 0d62c6f (before the split), kept only so
# tests can show the split kernel makes identical plans. Do not edit; do not import outside tests.
# ruff: noqa
"""Yungu's scheduler: green-power- and price-aware placement across every region's pools.

One round (``schedule(snapshot) -> Plan``), pure and deterministic:

1. **Order** the queue: deadline-urgent jobs first, then priority, then tenants within their
   quota before borrowers, then weighted fair share (usage / weight), then submission time.
2. **Filter** pools per job with the registered filter plugins (declared fit, reachable,
   max price, ...). A job no pool can ever take is *infeasible* with every pool's reason.
3. **Score** options: starting *now* on each feasible pool, and for a job with a deadline
   (or window), starting *later* at the forecast-best hour of each site. Each option carries
   estimated cost, carbon, green share, wait, latency and deadline slack; score plugins turn
   them into terms and the job's objective weights (``time``/``cost``/``green``/``balanced``
   or explicit weights, clamped to operator limits) combine them.
4. **Decide**: start the best option with room now (gangs all-or-nothing, best fit on
   nodes), defer to a better future hour if the forecast says it pays, or, when nothing has
   room, reserve the earliest pool for the job (EASY backfill: later jobs may use the hole
   only if they end before the reservation or fit beside it), or preempt lower-priority work,
   choosing the victims with the least lost work.

Time shifting uses forecasts only (``Snapshot.signals``), and never defers a job past the
last start that still meets its deadline with a safety margin; once that point nears, the
job is *urgent*: it goes first and may preempt work that has no deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Job, Objective
from yungu.domain.status import Code, Status
from yungu.domain.world import Pool, Site
from yungu.engines.energy.signals import floor_hour
from yungu.engines.scheduler.capacity import (
    Free,
    RunningInfo,
    device_power_w,
    devices,
    first_fit_time,
    fit_timeline,
    ref_duration_s,
    running_by_pool,
    throughput,
)
from yungu.engines.scheduler.outlook import Curve, SiteOutlook, outlook_from_signal
from yungu.engines.scheduler.plugins import (
    Option,
    OptionArrays,
    PoolView,
    Reference,
    Registry,
    default_registry,
)
from yungu.engines.scheduler.types import Defer, Infeasible, Plan, Preempt, Snapshot, Start

PRESETS: Mapping[Objective, Mapping[str, float]] = {
    Objective.TIME: {"wait": 1.0, "finish": 1.0, "cost": 0.05, "carbon": 0.05, "latency": 0.1},
    Objective.COST: {"cost": 1.0, "finish": 0.5, "wait": 0.3, "carbon": 0.05, "latency": 0.05, "deadline_risk": 0.1},
    Objective.GREEN: {"carbon": 1.0, "green": 0.2, "wait": 0.3, "latency": 0.05, "deadline_risk": 0.1},
    Objective.BALANCED: {
        "cost": 0.5,
        "carbon": 0.5,
        "green": 0.1,
        "wait": 0.5,
        "finish": 0.25,
        "latency": 0.1,
        "deadline_risk": 0.2,
    },
}


@dataclass(frozen=True)
class TenantPolicy:
    """Fair-share weight and quota (normalised compute units: devices x relative throughput)."""

    weight: float = 1.0
    quota_units: float | None = None  # None: no quota
    borrow_units: float = float("inf")  # how far above the quota idle capacity may be borrowed


@dataclass(frozen=True)
class PolicyConfig:
    """Operator policy. Defaults are what the benchmarks use unless a scenario says otherwise."""

    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)  # region pairs
    default_latency_ms: float = 150.0  # between regions absent from the matrix
    weight_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    objective_override: Objective | None = None  # operator: force one objective for all jobs
    weights_override: Mapping[str, float] = field(default_factory=dict)  # operator default weights
    power_load: float = 0.8  # average device load for energy estimates
    default_carbon_g_per_kwh: float = 500.0  # where a site has no forecast
    time_shift: bool = True
    backfill: bool = True
    preemption: bool = True
    deadline_margin_frac: float = 0.1  # safety margin before a deadline, fraction of run time
    deadline_margin_s: float = 1800.0
    urgent_lead_s: float = 3600.0  # a deadline job becomes urgent this long before its last start
    shift_gain: float = 0.05  # a later start must beat starting now by this fraction of the score
    max_shift_hours: int = 48
    preempt_pools: int = 5  # preemption looks for victims on the job's best N pools
    reserve_pools: int = 10  # EASY reservations: the earliest fit among the job's best N pools
    max_wait_frac: float = 0.25  # wait at most this fraction of the run for a clearly better full pool
    # Jobs that weigh waiting lightly (weight < flexible_below: the green and cost presets) may
    # wait longer for a clearly better full pool, and a job without a deadline may be time-shifted
    # up to flex_shift_frac of its run after submission (an implicit window). Both are scored
    # with the wait term, so they happen only when the carbon or cost gain outweighs the wait.
    flexible_below: float = 0.5
    flexible_wait_frac: float = 0.5
    flex_shift_frac: float = 1.0
    flex_min_run_s: float = 7200.0  # shorter jobs without a deadline are never shifted implicitly
    wait_pools: int = 5  # how many of the job's best pools to consider waiting for

    def latency(self, a: str | None, b: str) -> float:
        if a is None or a == b:
            return 0.0
        return self.latency_ms.get((a, b), self.latency_ms.get((b, a), self.default_latency_ms))


class _Terms(Mapping[str, float]):
    """The weighted terms of one option of a batch ranking, read from the ranking's columns
    (built on demand: most ranked options are never explained)."""

    __slots__ = ("_cols", "_i", "_names")

    def __init__(self, names: tuple[str, ...], cols: tuple[list[float], ...], i: int) -> None:
        self._names, self._cols, self._i = names, cols, i

    def __getitem__(self, key: str) -> float:
        try:
            return self._cols[self._names.index(key)][self._i]
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Scored(NamedTuple):
    """An option with its total score and weighted terms (a tuple: rankings build thousands)."""

    option: Option
    score: float
    terms: Mapping[str, float]


class Ranking(Sequence[Scored]):
    """Start-now options on a set of pools, best first (score, then pool id).

    Built from one batch scoring and materialised lazily: a round ranks ~100 pools dozens of
    times but looks at only a few entries of most rankings (the pools with room, the best few
    to wait for), so a :class:`Scored` is made when an entry is first read. ``order`` holds
    the pool indices (positions in ``World.pools``) in rank order; a :meth:`subset` shares
    the scores and keeps the order. ``ref`` is the normaliser the scores were computed with.
    """

    __slots__ = ("_cols", "_made", "_names", "_opts", "_tot", "order", "ref")

    def __init__(
        self,
        opts: list[Option],
        order: list[int],
        tot: list[float],
        names: tuple[str, ...],
        cols: tuple[list[float], ...],
        ref: Reference,
    ) -> None:
        self._opts, self.order, self._tot, self._names, self._cols, self.ref = opts, order, tot, names, cols, ref
        self._made: list[Scored | None] = [None] * len(order)

    def __len__(self) -> int:
        return len(self.order)

    @overload
    def __getitem__(self, i: int) -> Scored: ...

    @overload
    def __getitem__(self, i: slice) -> list[Scored]: ...

    def __getitem__(self, i: int | slice) -> Scored | list[Scored]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self.order)))]
        got = self._made[i]
        if got is None:
            j = self.order[i]
            got = self._made[i] = Scored(self._opts[j], self._tot[j], _Terms(self._names, self._cols, j))
        return got

    def subset(self, keep: Callable[[int], bool]) -> Ranking:
        """The entries whose pool index passes ``keep``, in the same order."""
        return Ranking(self._opts, [j for j in self.order if keep(j)], self._tot, self._names, self._cols, self.ref)


@dataclass(frozen=True)
class Alternative:
    """One row of an explanation."""

    pool_id: str
    site_id: str
    start: datetime
    wait_s: float
    run_s: float
    cost_cny: Decimal
    carbon_kg: float
    energy_kwh: float
    green_share: float
    latency_ms: float
    room_now: bool
    score: float
    chosen: bool
    why_lost: tuple[str, ...]


@dataclass(frozen=True)
class Explanation:
    job_id: str
    at: datetime
    decision: str  # "start", "defer", "wait", "infeasible"
    summary: str
    weights: Mapping[str, float]
    alternatives: tuple[Alternative, ...]
    filtered: Mapping[str, tuple[str, ...]]  # pool -> reasons it was excluded


_LOG_BUCKET = math.log(1.5)


def _fast_enough(tput: list[float], fast: tuple[float, ...], j: int) -> bool:
    return tput[j] in fast


def _bucket(ref_s: float) -> int:
    """Run-length bucket (log scale, ratio 1.5) of the start-now rankings."""
    return round(math.log(max(ref_s, 60.0)) / _LOG_BUCKET)


def _margin(policy: PolicyConfig, run_s: float) -> float:
    return policy.deadline_margin_s + policy.deadline_margin_frac * run_s


class _Round:
    """Everything derived from one snapshot; lives for one ``schedule()`` call."""

    def __init__(self, sched: GreenScheduler, snapshot: Snapshot) -> None:
        self.s = sched
        self.snap = snapshot
        self.now = snapshot.now
        self.next_hour = floor_hour(self.now) + timedelta(hours=1)  # the first start a time shift may pick
        w = snapshot.world
        self.pools: dict[str, Pool] = {p.id: p for p in w.pools}
        self.sites: dict[str, Site] = {s.id: s for s in w.sites}
        self.free: dict[str, Free] = {pid: Free(st) for pid, st in snapshot.pools.items()}
        self.outlooks: dict[str, SiteOutlook] = {
            site.id: sched.outlook(site, snapshot.signals.get(site.id), self.now) for site in w.sites
        }
        self.running = running_by_pool(snapshot.running, self.pools, sched.catalogue, self.now)
        self.tput: dict[str, float] = {p.id: throughput(sched.catalogue, p) for p in w.pools}
        self.tput_idx: list[float] = [self.tput[p.id] for p in w.pools]  # by pool index
        load = sched.policy.power_load
        # Per-pool constants of the estimates, computed once per round (not once per option).
        self.kw_dev: dict[str, float] = {
            p.id: device_power_w(sched.catalogue, p, load) / 1000.0 * self.sites[p.site_id].pue for p in w.pools
        }
        self.dev_price: dict[str, float] = {p.id: float(p.price_cny_per_device_hour) for p in w.pools}
        self.cpu_price: dict[str, float] = {p.id: float(p.price_cny_per_cpu_hour) for p in w.pools}
        # Tie-break of the batch ranking: pool id order, as the per-option sort used.
        ids = [p.id for p in w.pools]
        self.id_rank = np.empty(len(ids), dtype=np.int64)
        self.id_rank[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(len(ids))
        self.usage: dict[str, float] = {}
        self.means_cache: dict[tuple[str, int], tuple[float, float, float]] = {}
        self.cut_cache: dict[tuple[int, int], Ranking] = {}
        self.best_cache: dict[str, tuple[float, float, float]] = {}
        for j in snapshot.running:
            if j.allocation and j.allocation.pool_id in self.pools:
                self.usage[j.tenant_id] = self.usage.get(j.tenant_id, 0.0) + j.allocation.devices * self.tput[
                    j.allocation.pool_id
                ]
        self.reservations: dict[str, list[float]] = {}  # pool -> [shadow epoch s, extra devices]
        self.preempted: set[str] = set()
        self.claimed: dict[str, int] = {}  # pool -> devices promised to jobs waiting for it
        self.views: dict[tuple[object, ...], tuple[list[Pool], dict[str, Status]]] = {}
        self.now_cache: dict[tuple[object, ...], Ranking] = {}
        self.rank_cache: dict[tuple[object, ...], Ranking] = {}
        self.opt_cache: dict[tuple[object, ...], tuple[list[Option], Reference, OptionArrays]] = {}
        self.fit_cache: dict[tuple[object, ...], list[tuple[datetime, int, int]]] = {}
        self.version_of: dict[str, int] = {}  # pool -> times its free capacity changed this round
        self.node_max: dict[str, int] = {
            pid: (max((len(d) for d in f.devs), default=0) if f.available else 0) for pid, f in self.free.items()
        }
        self.max_node_free = max(self.node_max.values(), default=0)
        # The same two numbers by pool index, for the quick room test of a whole ranking.
        self.pidx: dict[str, int] = {pid: i for i, pid in enumerate(ids)}
        self.free_list: list[int] = [
            self.free[pid].free_devices if pid in self.free and self.free[pid].available else -1 for pid in ids
        ]
        self.nmax_list: list[int] = [self.node_max.get(pid, -1) for pid in ids]
        self.version = 0  # bumped whenever a pool's free capacity changes this round
        # Capacity only shrinks within a round (starts take devices; preemptions free them in a
        # later round): (ranking id, devices, per-node devices) -> (version, positions with room).
        self.room_cache: dict[tuple[int, int, int], tuple[int, list[int]]] = {}
        # Likewise a job shape that found no full pool worth waiting for (with no room now)
        # finds none later in the round for runs up to the same length: ranking id, resources,
        # replicas, wait fraction -> the longest reference run that failed.
        self.no_wait: dict[tuple[object, ...], float] = {}
        self.tput_values = sorted(set(self.tput.values()))
        # Deadline-filtered rankings, by (id of the ranking, throughputs fast enough); kept
        # alive for the round because their id() keys other caches.
        self.fit_lists: dict[tuple[int, tuple[float, ...]], Ranking] = {}
        self.tmax = max((throughput(sched.catalogue, p) for p in w.pools), default=1.0)
        self.tmin = min((throughput(sched.catalogue, p) for p in w.pools), default=1.0)
        self.weight_cache: dict[tuple[object, ...], Mapping[str, float]] = {}
        self.urgent_cache: dict[str, bool] = {}

    # ------------------------------------------------------------ estimates

    def room_positions(self, job: Job, scored: Ranking) -> list[int]:
        """Positions in ``scored`` of the pools that pass the quick room test (enough free
        devices in the pool and on one node).

        Capacity only shrinks within a round, so a shape's list can only lose entries: the
        first test walks the whole ranking, later ones re-check only the positions that passed
        last time (and only when some pool changed since).
        """
        key = (id(scored), devices(job), job.spec.resources.accelerators)
        hit = self.room_cache.get(key)
        if hit is not None and (hit[0] == self.version or not hit[1]):
            return hit[1]
        order, fa, nm, n, a = scored.order, self.free_list, self.nmax_list, key[1], key[2]
        positions = hit[1] if hit is not None else range(len(order))
        got = [p for p in positions if fa[order[p]] >= n and nm[order[p]] >= a]
        self.room_cache[key] = (self.version, got)
        return got

    def took(self, pid: str) -> None:
        """Capacity of ``pid`` changed this round: refresh its quick-test numbers."""
        f = self.free[pid]
        self.version += 1
        self.version_of[pid] = self.version_of.get(pid, 0) + 1
        was = self.node_max[pid]
        now_max = self.node_max[pid] = max((len(d) for d in f.devs), default=0) if f.available else 0
        if was == self.max_node_free and now_max < was:  # the largest hole may have been this one
            self.max_node_free = max(self.node_max.values(), default=0)
        i = self.pidx[pid]
        self.free_list[i] = f.free_devices if f.available else -1
        self.nmax_list[i] = now_max

    def units(self, job: Job, pool: Pool) -> float:
        return devices(job) * self.tput[pool.id]

    def hourly(self, job: Job, pool_id: str) -> float:
        """The job's price per hour on a pool (devices, or CPUs for a CPU-only job), for scores."""
        n = devices(job)
        if n:
            return self.dev_price[pool_id] * n
        return self.cpu_price[pool_id] * job.spec.resources.cpus * job.spec.replicas

    def hourly_price(self, job: Job, pool: Pool) -> Decimal:
        if devices(job):
            return pool.price_cny_per_device_hour * devices(job)
        return pool.price_cny_per_cpu_hour * job.spec.resources.cpus * job.spec.replicas

    def option(
        self,
        job: Job,
        pool: Pool,
        start: datetime,
        ref_s: float,
        room: bool,
        *,
        with_deadline: bool = True,
        means: tuple[float, float, float] | None = None,
    ) -> Option:
        site = self.sites[pool.site_id]
        run = ref_s / self.tput[pool.id]
        n = devices(job)
        kwh = n * self.kw_dev[pool.id] * run / 3600
        if means is None:
            ol = self.outlooks[site.id]
            price, ci, re = ol.price.mean(start, run), ol.carbon.mean(start, run), ol.renewable.mean(start, run)
        else:
            price, ci, re = means
        cost = self.hourly(job, pool.id) * run / 3600 + kwh * price
        green = site.green_contract_share + (1 - site.green_contract_share) * re
        slack = None
        if with_deadline and job.spec.deadline is not None:
            slack = (job.spec.deadline - start).total_seconds() - run
        return Option(
            pool.id,
            site.id,
            site.region_id,
            start,
            run,
            max(0.0, (start - self.now).total_seconds()),
            cost,
            kwh * ci,
            kwh,
            green,
            self.s.policy.latency(job.spec.data_location, site.region_id),
            slack,
            room,
        )

    def start_note(self, job: Job, pool: Pool, ref_s: float, chosen: Scored, among: int) -> str:
        """The one-line reason stored with a start: the job's own cost and carbon estimate.

        Device count, run time, power and prices are the job's own; the forecast means over the
        run are those of the run-length bucket the ranking used (the same ones it decided by),
        so writing the note costs no new forecast integrals.
        """
        o = self.option(job, pool, self.now, ref_s, True, with_deadline=False, means=self.bucket_means(pool, _bucket(ref_s)))
        return (
            f"{pool.id}: score {chosen.score:.3f} (best of {among}), est. {o.cost_cny:.2f} CNY, "
            f"{o.carbon_g / 1000:.2f} kgCO2e, green {o.green_share:.0%}"
        )

    def bucket_means(self, pool: Pool, bucket: int) -> tuple[float, float, float]:
        """Forecast price, carbon intensity and renewable share over a start-now run of the
        bucket's representative length on ``pool`` (cached for the round)."""
        key = (pool.id, bucket)
        hit = self.means_cache.get(key)
        if hit is None:
            run = math.exp(bucket * _LOG_BUCKET) / self.tput[pool.id]
            ol = self.outlooks[pool.site_id]
            hit = self.means_cache[key] = (
                ol.price.mean(self.now, run),
                ol.carbon.mean(self.now, run),
                ol.renewable.mean(self.now, run),
            )
        return hit

    def wait_floor(
        self, job: Job, sc: Scored, wait_s: float, run: float, w: Mapping[str, float], ref: Reference
    ) -> float:
        """A lower bound on the score of starting on ``sc``'s pool ``wait_s`` from now or later,
        without forecast integrals (used to skip waits and shifts that cannot win).

        Exact: the wait term (it grows with the wait), the latency term, the deadline-risk
        term at ``wait_s`` (it grows with the start). Bounded: energy cost, carbon and green
        share at the site's most favourable forecast hour (no mean over a run beats the best
        hour); the device-hour part of the cost does not depend on the start.
        """
        o = sc.option
        n = devices(job)
        kwh = n * self.kw_dev[o.pool_id] * run / 3600
        best = self.best_hours(o.site_id)
        floor = 0.0
        wt = w.get("wait", 0.0)
        if wt or w.get("deadline_risk", 0.0):
            scale = run
            if job.spec.deadline is not None:
                slack = (job.spec.deadline - self.now).total_seconds() - wait_s - run
                scale = max(run, wait_s + slack)
                wr = w.get("deadline_risk", 0.0)
                if wr:
                    floor += wr * (1.0 if slack <= 0 else max(0.0, 1.0 - slack / max(run, 1.0)))
            floor += wt * wait_s / max(scale, 1.0)
        wl = w.get("latency", 0.0)
        if wl and ref.latency > 0:
            floor += wl * o.latency_ms / ref.latency
        wf = w.get("finish", 0.0)
        if wf and ref.finish > 0:
            floor += wf * (wait_s + run) / ref.finish
        wc = w.get("cost", 0.0)
        if wc and ref.cost > 0:
            floor += wc * (self.hourly(job, o.pool_id) * run / 3600 + kwh * best[0]) / ref.cost
        wco = w.get("carbon", 0.0)
        if wco and ref.carbon > 0:
            floor += wco * kwh * best[1] / ref.carbon
        wg = w.get("green", 0.0)
        if wg:
            gcs = self.sites[o.site_id].green_contract_share
            floor += wg * (1.0 - (gcs + (1 - gcs) * best[2]))
        return floor

    def best_hours(self, site_id: str) -> tuple[float, float, float]:
        """The site's lowest forecast price and carbon intensity and highest renewable share
        (each over any hour): no mean over a run is more favourable."""
        hit = self.best_cache.get(site_id)
        if hit is None:
            ol = self.outlooks[site_id]

            def lo(c: Curve) -> float:
                return min(c.values) if c.values else c.fallback

            def hi(c: Curve) -> float:
                return max(c.values) if c.values else c.fallback

            hit = self.best_cache[site_id] = (lo(ol.price), lo(ol.carbon), hi(ol.renewable))
        return hit

    def weights(self, job: Job) -> Mapping[str, float]:
        key = (job.spec.objective, tuple(sorted(job.spec.objective_weights.items())))
        hit = self.weight_cache.get(key)
        if hit is None:
            hit = self.weight_cache[key] = self._weights(job)
        return hit

    def _weights(self, job: Job) -> Mapping[str, float]:
        pol = self.s.policy
        obj = pol.objective_override or job.spec.objective
        w = dict(PRESETS[obj])
        w.update(pol.weights_override)
        if job.spec.objective_weights and pol.objective_override is None:
            w = {k: float(v) for k, v in job.spec.objective_weights.items() if k in self.s.registry.scores()}
        for k, (lo, hi) in pol.weight_limits.items():
            w[k] = min(hi, max(lo, w.get(k, 0.0)))
        return w

    def score(self, job: Job, opt: Option, ref: Reference, w: Mapping[str, float]) -> Scored:
        terms = {}
        total = 0.0
        for name, plugin in self.s.registry.scores().items():
            wt = w.get(name, 0.0)
            if wt:
                t = plugin.score(job, opt, ref) * wt
                terms[name] = t
                total += t
        return Scored(opt, total, terms)

    # ------------------------------------------------------------ filtering

    def shape(self, job: Job) -> tuple[object, ...]:
        s = job.spec
        return (
            s.resources,
            s.replicas,
            s.pool,
            s.data_location,
            s.max_price_cny_per_hour,
            s.objective,
            tuple(sorted(s.objective_weights.items())),
        )

    def candidates(self, job: Job) -> tuple[list[Pool], dict[str, Status]]:
        # Filters decide feasibility, not preference: the objective is not part of the key.
        s = job.spec
        key = (s.resources, s.replicas, s.pool, s.data_location, s.max_price_cny_per_hour)
        hit = self.views.get(key)
        if hit is not None:
            return hit
        ok: list[Pool] = []
        rejected: dict[str, Status] = {}
        for pool in self.snap.world.pools:
            st = self.snap.pools.get(pool.id)
            view = PoolView(pool, self.sites[pool.site_id], st is not None and st.available, self.hourly_price(job, pool))
            for _, plugin in self.s.registry.filters():
                status = plugin.filter(job, view)
                if not status.ok:
                    rejected[pool.id] = status
                    break
            else:
                ok.append(pool)
        self.views[key] = (ok, rejected)
        return ok, rejected

    def now_options(self, job: Job, pools: list[Pool], ref_s: float) -> Ranking:
        """Start-now options on ``pools``, best first.

        Every metric scales linearly with the job's device count and so does its normaliser,
        so the ranking depends only on the weights, the data location and the run length:
        it is computed once per (weights, data location, run-length bucket) over all pools
        (reference = the federation's worst pool) and then cut down to the job's feasible
        pools. Run lengths are bucketed on a log scale (ratio 1.5), which moves a carbon or
        price mean by little while keeping a round over 1,000 jobs and 100 pools fast.
        """
        bucket = _bucket(ref_s)
        shape = self.shape(job)
        key = (shape, bucket)
        hit = self.now_cache.get(key)
        if hit is not None:
            return hit
        w = self.weights(job)
        rkey = (tuple(sorted(w.items())), job.spec.data_location, bucket, devices(job) > 0)
        ranked = self.rank_cache.get(rkey)
        if ranked is None:
            okey = (job.spec.data_location, bucket, devices(job) > 0)
            cached = self.opt_cache.get(okey)
            if cached is None:
                rep_s = math.exp(bucket * _LOG_BUCKET)
                opts = [
                    self.option(job, p, self.now, rep_s, True, with_deadline=False, means=self.bucket_means(p, bucket))
                    for p in self.snap.world.pools
                ]
                arrays = OptionArrays(
                    np.array([o.cost_cny for o in opts]),
                    np.array([o.carbon_g for o in opts]),
                    np.array([o.green_share for o in opts]),
                    np.array([o.latency_ms for o in opts]),
                    np.array([o.run_s for o in opts]),
                )
                cached = self.opt_cache[okey] = (opts, reference(opts), arrays)
            opts, ref, arrays = cached
            ranked = self.rank(job, opts, ref, arrays, w)
            self.rank_cache[rkey] = ranked
        if len(pools) == len(self.pools):
            scored = ranked  # no filter excluded a pool: the ranking itself
        else:
            ckey = (id(ranked), id(pools))  # candidate lists live in self.views for the round
            cut = self.cut_cache.get(ckey)
            if cut is None:
                ids = {self.pidx[p.id] for p in pools}
                cut = self.cut_cache[ckey] = ranked.subset(ids.__contains__)
            scored = cut
        self.now_cache[key] = scored
        return scored

    def rank(
        self, job: Job, opts: list[Option], ref: Reference, arrays: OptionArrays, w: Mapping[str, float]
    ) -> Ranking:
        """All start-now options scored and sorted (score, then pool id), one array op per term."""
        total: NDArray[np.float64] = np.zeros(len(opts))
        terms: dict[str, NDArray[np.float64]] = {}
        for name, plugin in self.s.registry.scores().items():
            wt = w.get(name, 0.0)
            if not wt:
                continue
            batch = getattr(plugin, "score_batch", None)
            if batch is not None:
                vals = np.asarray(batch(arrays, ref), dtype=np.float64)
            else:
                vals = np.array([plugin.score(job, o, ref) for o in opts], dtype=np.float64)
            t = vals * wt
            terms[name] = t
            total = total + t
        order = np.lexsort((self.id_rank, total)).tolist()
        names = tuple(terms)
        return Ranking(opts, order, total.tolist(), names, tuple(terms[n].tolist() for n in names), ref)

    def earliest(self, job: Job, pid: str, claimed: int = 0) -> tuple[datetime, int] | None:
        """EASY shadow time of the job's gang on a pool beside ``claimed`` promised devices
        (the release timeline is cached per round per replica shape and pool state)."""
        r = job.spec.resources
        key = (pid, r.accelerators, r.cpus, r.memory_gb, self.free[pid].free_devices, self.version_of.get(pid, 0))
        tl = self.fit_cache.get(key)
        if tl is None:
            tl = self.fit_cache[key] = fit_timeline(job, self.free[pid], self.running.get(pid, []), self.now)
        return first_fit_time(job, tl, claimed)

    def latest_start(self, job: Job, pool: Pool, ref_s: float) -> datetime | None:
        if job.spec.deadline is None:
            return None
        run = ref_s / throughput(self.s.catalogue, pool)
        return job.spec.deadline - timedelta(seconds=run + _margin(self.s.policy, run))

    def urgent(self, job: Job) -> bool:
        if job.spec.deadline is None:
            return False
        hit = self.urgent_cache.get(job.id)
        if hit is None:
            run = ref_duration_s(job) / self.tmax
            last = job.spec.deadline - timedelta(seconds=run + _margin(self.s.policy, run))
            hit = self.urgent_cache[job.id] = self.now + timedelta(seconds=self.s.policy.urgent_lead_s) >= last
        return hit

    def flexible(self, w: Mapping[str, float]) -> bool:
        """The job weighs waiting lightly (green and cost presets): it may wait longer and shift."""
        return w.get("wait", 0.0) < self.s.policy.flexible_below

    def shift_limit(self, job: Job, pool: Pool, ref_s: float, flexible: bool) -> datetime | None:
        """The latest start a time shift may choose on ``pool`` (None: the job may not shift).

        A deadline job: the last safe start less the urgency lead. A job without a deadline
        that weighs waiting lightly: ``flex_shift_frac`` of its run after *submission* (not
        after now, so repeated deferrals cannot push it further and further out).
        """
        pol = self.s.policy
        if job.spec.deadline is not None:
            latest = self.latest_start(job, pool, ref_s)
            return None if latest is None else latest - timedelta(seconds=pol.urgent_lead_s)
        run = ref_s / self.tput[pool.id]
        if flexible and pol.flex_shift_frac > 0 and run >= pol.flex_min_run_s:
            return job.submitted_at + timedelta(seconds=pol.flex_shift_frac * run)
        return None

    def future_options(
        self,
        job: Job,
        now_scored: Ranking,
        ref_s: float,
        room: list[int] | None = None,
        beat: float | None = None,
    ) -> list[Scored]:
        """For a flexible job: the forecast-best later start at each site (best pool per site).

        ``room``: positions in ``now_scored`` of the pools that may have room (default: computed).
        ``beat``: only options scoring below this matter to the caller; a site whose score floor
        (:meth:`wait_floor` at the earliest shift) is not below it is skipped unestimated.
        """
        pol = self.s.policy
        if not pol.time_shift:
            return []
        w = self.weights(job)
        flexible = self.flexible(w)
        first = self.next_hour
        if job.spec.deadline is None:
            if not flexible or pol.flex_shift_frac <= 0 or ref_s / self.tmin < pol.flex_min_run_s:
                return []
            if job.submitted_at + timedelta(seconds=pol.flex_shift_frac * ref_s / self.tmin) < first:
                return []  # not even the slowest pool's window reaches the next whole hour
        else:
            run_min = ref_s / self.tmax
            last = job.spec.deadline - timedelta(seconds=run_min + _margin(pol, run_min) + pol.urgent_lead_s)
            if last < first:
                return []  # no whole hour to shift into
        kind = "carbon" if w.get("carbon", 0.0) + w.get("green", 0.0) >= w.get("cost", 0.0) else "price"
        seen: set[str] = set()
        out: list[Option] = []
        horizon = self.now + timedelta(hours=pol.max_shift_hours)
        for pos in self.room_positions(job, now_scored) if room is None else room:
            o = now_scored[pos].option
            if o.site_id in seen:
                continue
            if o.pool_id not in self.free:
                # Only pools with room now (by the quick test): a later start on a full pool would
                # chase capacity that others may take first (waiting for a full pool is
                # _wait_for_better_pool's job).
                continue
            seen.add(o.site_id)
            if len(seen) > 3:
                break
            pool = self.pools[o.pool_id]
            latest = self.shift_limit(job, pool, ref_s, flexible)
            if latest is None:
                continue
            latest = min(latest, horizon)
            if latest < first:
                continue
            run = ref_s / self.tput[o.pool_id]
            if beat is not None:
                floor = self.wait_floor(job, now_scored[pos], (first - self.now).total_seconds(), run, w, now_scored.ref)
                if floor >= beat:
                    continue
            # The job's own run and window: cheap enough per job (prefix sums) that no cache
            # is worth the approximation.
            t = self.outlooks[o.site_id].best_start(self.now, latest, run, kind, first=first)
            if t > self.now:  # else starting now is already the forecast best at this site
                out.append(self.option(job, pool, t, ref_s, False))
        if not out:
            return []
        ref = now_scored.ref
        return sorted((self.score(job, o, ref, w) for o in out), key=lambda s: s.score)


def reference(opts: list[Option]) -> Reference:
    return Reference(
        max((o.cost_cny for o in opts), default=0.0),
        max((o.carbon_g for o in opts), default=0.0),
        max((o.latency_ms for o in opts), default=0.0),
        max((o.wait_s + o.run_s for o in opts), default=0.0),
    )


class GreenScheduler:
    """The Yungu scheduler (implements ``Scheduler``): ``GreenScheduler(catalogue, policy)``."""

    name = "yungu-green"

    def __init__(
        self, catalogue: Catalogue, policy: PolicyConfig | None = None, registry: Registry | None = None
    ) -> None:
        self.catalogue = catalogue
        self.policy = policy or PolicyConfig()
        self.registry = registry or default_registry()
        self._outlooks: dict[tuple[str, int], tuple[object, SiteOutlook]] = {}

    def outlook(self, site: Site, signal: object, now: datetime) -> SiteOutlook:
        # Memoised per (site, signal object): the simulator hands the same forecast object to
        # every round of an hour, so prefix sums are built once per hour, not once per round.
        key = (site.id, id(signal))
        hit = self._outlooks.get(key)
        if hit is not None and hit[0] is signal and signal is not None:
            return hit[1]
        ol = outlook_from_signal(
            site.id,
            signal,
            now,
            default_carbon=self.policy.default_carbon_g_per_kwh,
            default_price=float(site.electricity_price_cny_per_kwh),
        )
        if len(self._outlooks) > 4096:
            self._outlooks.clear()
        self._outlooks[key] = (signal, ol)
        return ol

    # ------------------------------------------------------------------ round

    def schedule(self, snapshot: Snapshot) -> Plan:
        rd = _Round(self, snapshot)
        pol = self.policy
        starts: list[Start] = []
        defers: list[Defer] = []
        preempts: list[Preempt] = []
        infeasible: list[Infeasible] = []

        def order(j: Job) -> tuple[object, ...]:
            tp = pol.tenants.get(j.tenant_id, TenantPolicy())
            used = rd.usage.get(j.tenant_id, 0.0)
            over = tp.quota_units is not None and used >= tp.quota_units
            return (not rd.urgent(j), -j.spec.priority, over, used / max(tp.weight, 1e-9), j.submitted_at, j.id)

        queue = sorted(snapshot.pending, key=order)
        no_room = Status(Code.UNSCHEDULABLE, ("no feasible pool has room now",), self.name)
        for job in queue:
            if job.spec.earliest_start and job.spec.earliest_start > rd.now:
                defers.append(Defer(job.id, job.spec.earliest_start, Status(Code.WAIT, ("window opens later",), self.name)))
                continue
            pools, rejected = rd.candidates(job)
            if not pools:
                reasons = tuple(f"{pid}: {'; '.join(st.reasons)}" for pid, st in rejected.items())
                if all(st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE for st in rejected.values()):
                    infeasible.append(Infeasible(job.id, Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, self.name)))
                else:
                    defers.append(Defer(job.id, None, Status(Code.UNSCHEDULABLE, reasons, self.name)))
                continue
            ref_s = ref_duration_s(job)
            now_scored = rd.now_options(job, pools, ref_s)
            urgent = rd.urgent(job)
            if job.spec.deadline is not None:
                # Pools that can no longer meet the deadline drop out (unless none can: best effort).
                left = (job.spec.deadline - rd.now).total_seconds()
                fast = tuple(t for t in rd.tput_values if ref_s / t <= left)
                fkey = (id(now_scored), fast)
                fit = rd.fit_lists.get(fkey)
                if fit is None:
                    fit = rd.fit_lists[fkey] = now_scored.subset(partial(_fast_enough, rd.tput_idx, fast))
                if fit and len(fit) < len(now_scored):
                    now_scored = fit
            tp = pol.tenants.get(job.tenant_id, TenantPolicy())
            chosen: Scored | None = None
            where: list[tuple[int, tuple[int, ...]]] | None = None
            quota_blocked = False
            need = job.spec.resources.accelerators
            room = rd.room_positions(job, now_scored) if need <= rd.max_node_free else []
            for pos in room:
                sc = now_scored[pos]
                free = rd.free.get(sc.option.pool_id)
                if free is None:
                    continue
                pool = rd.pools[sc.option.pool_id]
                used = rd.usage.get(job.tenant_id, 0.0) + rd.units(job, pool)
                if tp.quota_units is not None and used > tp.quota_units + tp.borrow_units:
                    quota_blocked = True
                    continue
                res = rd.reservations.get(pool.id)
                if res is not None and not urgent:
                    ends = rd.now.timestamp() + ref_s / rd.tput[pool.id]
                    if ends > res[0] and devices(job) > res[1]:
                        continue
                w = free.find(job)
                if w is not None:
                    chosen, where = sc, w
                    break
            if not urgent and (pol.max_wait_frac > 0 or pol.flexible_wait_frac > 0):
                waited = self._wait_for_better_pool(rd, job, now_scored, chosen, ref_s)
                if waited is not None:
                    defers.append(waited)
                    continue
            beat = None if chosen is None else chosen.score * (1 - pol.shift_gain) - 1e-9
            future = [] if urgent or not room else rd.future_options(job, now_scored, ref_s, room, beat)
            if future:
                best_f = future[0]
                base = chosen.score if chosen is not None else None
                if base is None or best_f.score < base * (1 - pol.shift_gain) - 1e-9:
                    defers.append(
                        Defer(
                            job.id,
                            best_f.option.start,
                            Status(
                                Code.WAIT,
                                (
                                    f"forecast better at {best_f.option.site_id} from "
                                    f"{best_f.option.start.isoformat()} (score {best_f.score:.3f}"
                                    + (f" vs {base:.3f} now)" if base is not None else ", no room now)"),
                                ),
                                self.name,
                            ),
                        )
                    )
                    continue
            if chosen is not None and where is not None:
                pool = rd.pools[chosen.option.pool_id]
                res = rd.reservations.get(pool.id)
                if res is not None and rd.now.timestamp() + ref_s / rd.tput[pool.id] > res[0]:
                    res[1] -= devices(job)
                alloc = rd.free[pool.id].take(job, where)
                rd.took(pool.id)
                rd.usage[job.tenant_id] = rd.usage.get(job.tenant_id, 0.0) + rd.units(job, pool)
                starts.append(Start(job.id, alloc, rd.start_note(job, pool, ref_s, chosen, len(now_scored))))
                continue
            if quota_blocked:
                defers.append(Defer(job.id, None, Status(Code.WAIT, ("tenant quota (with borrowing) reached",), self.name)))
                continue
            if pol.preemption and (urgent or job.spec.priority > 0):
                victims = self._victims(rd, job, now_scored, urgent)
                if victims:
                    # Hold the pool for this job for the rest of the round: otherwise later jobs
                    # take the free devices the preemption counted on, and the next round
                    # preempts again (a livelock).
                    rd.reservations[victims[0].pool_id] = [rd.now.timestamp(), 0.0]
                    for v in victims:
                        rd.preempted.add(v.job.id)
                        preempts.append(
                            Preempt(v.job.id, job.id, f"{'deadline' if urgent else 'priority'} job {job.id} needs {v.pool_id}")
                        )
                    defers.append(Defer(job.id, rd.now, Status(Code.WAIT, ("preempting to make room",), self.name)))
                    continue
            if pol.backfill:
                until = self._reserve(rd, job, now_scored)
                if until is not None:
                    defers.append(Defer(job.id, until, Status(Code.WAIT, (f"reserved from {until.isoformat()}",), self.name)))
                    continue
            defers.append(Defer(job.id, None, no_room))
        return Plan(tuple(starts), tuple(defers), tuple(preempts), tuple(infeasible))

    def _wait_for_better_pool(
        self, rd: _Round, job: Job, scored: Ranking, chosen: Scored | None, ref_s: float
    ) -> Defer | None:
        """Wait briefly for a clearly better pool that is full now (it frees within a fraction of
        the run time, by the running jobs' estimates). The pool is then reserved for this job
        (EASY-style), so the wait is bounded and later jobs cannot take the hole."""
        pol = self.policy
        w = rd.weights(job)
        frac = pol.flexible_wait_frac if rd.flexible(w) else pol.max_wait_frac
        memo: tuple[object, ...] | None = None
        if chosen is None:
            memo = (id(scored), job.spec.resources, job.spec.replicas, frac)
            if ref_s <= rd.no_wait.get(memo, -1.0):
                return None
        exact = True  # the failure below holds for every shorter run of this shape this round
        ref = scored.ref
        for sc in scored[: pol.wait_pools]:
            if chosen is not None and sc.score >= chosen.score * (1 - pol.shift_gain):
                break
            pid = sc.option.pool_id
            claimed = rd.claimed.get(pid, 0)
            if pid not in rd.free or (chosen is not None and pid == chosen.option.pool_id):
                continue
            if pid in rd.reservations and not claimed:
                continue  # held for a blocked or preempting job, not for waiters
            # Several jobs may wait for the same pool: each later one needs the devices the
            # earlier ones were promised on top of its own.
            got = rd.earliest(job, pid, claimed)
            if got is None:
                continue
            if got[0] <= rd.now:
                exact = False  # room now, blocked otherwise: it may fill up and be worth a wait later
                continue
            run = ref_s / rd.tput[pid]
            wait_s = (got[0] - rd.now).total_seconds()
            if wait_s > frac * run:
                continue
            if chosen is not None and rd.wait_floor(job, sc, wait_s, run, w, ref) >= chosen.score * (1 - pol.shift_gain):
                continue  # even its start-independent terms lose to starting now: no need to estimate
            opt = rd.option(job, rd.pools[pid], got[0], ref_s, False)
            if opt.slack_s is not None and opt.slack_s < _margin(pol, run):
                exact = False  # this job's deadline, not the shape, ruled the pool out
                continue
            cand = rd.score(job, opt, ref, w)
            if chosen is None or cand.score < chosen.score * (1 - pol.shift_gain) - 1e-9:
                res = rd.reservations.get(pid)
                if res is None:
                    rd.reservations[pid] = [got[0].timestamp(), float(got[1])]
                else:  # the first waiter's shadow time stands; fewer devices are left beside it
                    res[1] -= devices(job)
                rd.claimed[pid] = claimed + devices(job)
                return Defer(
                    job.id,
                    got[0],
                    Status(
                        Code.WAIT,
                        (f"waiting {(got[0] - rd.now).total_seconds() / 60:.0f} min for {pid} (score {cand.score:.3f}"
                         + (f" vs {chosen.score:.3f} now)" if chosen else ")"),),
                        self.name,
                    ),
                )
            exact = False  # scored no better than waiting is not worth it: depends on the job
        if memo is not None and exact:
            rd.no_wait[memo] = max(ref_s, rd.no_wait.get(memo, -1.0))
        return None

    def _reserve(self, rd: _Round, job: Job, scored: Ranking) -> datetime | None:
        best: tuple[datetime, int, str] | None = None
        for sc in scored[: self.policy.reserve_pools]:
            pid = sc.option.pool_id
            if pid in rd.reservations or pid not in rd.free:
                continue
            got = rd.earliest(job, pid)
            if got is not None and (best is None or got[0] < best[0]):
                best = (got[0], got[1], pid)
        if best is None:
            return None
        rd.reservations[best[2]] = [best[0].timestamp(), float(best[1])]
        return best[0]

    def _victims(self, rd: _Round, job: Job, scored: Ranking, urgent: bool) -> list[RunningInfo]:
        """The cheapest set of victims (least lost work) on one pool that lets the gang fit."""
        best: tuple[float, list[RunningInfo]] | None = None
        for sc in scored[: self.policy.preempt_pools]:
            pid = sc.option.pool_id
            free = rd.free.get(pid)
            if free is None or not free.available:
                continue
            cands = []
            for r in rd.running.get(pid, []):
                v = r.job
                if v.id in rd.preempted:
                    continue
                lower = v.spec.priority < job.spec.priority
                flexible = urgent and v.spec.deadline is None and v.spec.priority <= job.spec.priority
                if lower or flexible:
                    lost = (rd.now - (v.started_at or rd.now)).total_seconds() * r.devices
                    cands.append((lost, r))
            cands.sort(key=lambda c: (c[0], c[1].job.id))
            trial = free.copy()
            picked: list[RunningInfo] = []
            lost_total = 0.0
            for lost, r in cands:
                if trial.find(job) is not None:
                    break
                assert r.job.allocation is not None
                trial.release(r.job.allocation)
                picked.append(r)
                lost_total += lost
            if picked and trial.find(job) is not None and (best is None or lost_total < best[0]):
                best = (lost_total, picked)
        return best[1] if best else []

    # ------------------------------------------------------------------ explain

    def explain(self, snapshot: Snapshot, job_id: str) -> Explanation:
        """Why the job goes where it goes: the chosen option and the best alternatives.

        Computed against the snapshot alone (as if the job were first in the queue).
        """
        job = next((j for j in snapshot.pending if j.id == job_id), None)
        if job is None:
            job = next((j for j in snapshot.running if j.id == job_id), None)
        if job is None:
            from yungu.domain.errors import NotFound

            raise NotFound(f"job {job_id} is not in the snapshot")
        rd = _Round(self, snapshot)
        w = rd.weights(job)
        pools, rejected = rd.candidates(job)
        filtered = {pid: st.reasons for pid, st in rejected.items()}
        if not pools:
            return Explanation(job.id, rd.now, "infeasible", "no pool can ever run this job", w, (), filtered)
        ref_s = ref_duration_s(job)
        now_scored = rd.now_options(job, pools, ref_s)
        rows: list[Scored] = []
        for sc in now_scored:
            free = rd.free.get(sc.option.pool_id)
            room = free is not None and free.find(job) is not None
            exact = rd.option(job, rd.pools[sc.option.pool_id], rd.now, ref_s, room)
            rows.append(Scored(exact, sc.score, sc.terms))
        rows += rd.future_options(job, now_scored, ref_s)
        rows.sort(key=lambda s: (not s.option.room_now and s.option.wait_s == 0, s.score))
        best = rows[0]
        decision = "start" if best.option.wait_s == 0 and best.option.room_now else (
            "defer" if best.option.wait_s > 0 else "wait"
        )
        alts = tuple(_alt(r, r is best, best) for r in rows[:8])
        summary = (
            f"{decision} on {best.option.pool_id} at {best.option.start.isoformat()}: "
            f"est. {best.option.cost_cny:.2f} CNY, {best.option.carbon_g / 1000:.2f} kgCO2e, "
            f"green {best.option.green_share:.0%}"
        )
        return Explanation(job.id, rd.now, decision, summary, w, alts, filtered)


def _alt(r: Scored, chosen: bool, best: Scored) -> Alternative:
    why: list[str] = []
    if not chosen:
        if r.option.wait_s == 0 and not r.option.room_now:
            why.append("no room now")
        for name, t in sorted(r.terms.items(), key=lambda kv: -(kv[1] - best.terms.get(kv[0], 0.0))):
            d = t - best.terms.get(name, 0.0)
            if d > 1e-6:
                why.append(f"worse {name} (+{d:.3f} score)")
        if not why:
            why.append("equal score; lost the tie-break")
    o = r.option
    return Alternative(
        o.pool_id,
        o.site_id,
        o.start,
        o.wait_s,
        o.run_s,
        Decimal(repr(round(o.cost_cny, 2))),
        o.carbon_g / 1000.0,
        o.energy_kwh,
        o.green_share,
        o.latency_ms,
        o.room_now,
        r.score,
        chosen,
        tuple(why[:3]),
    )




def explain(scheduler: GreenScheduler, snapshot: Snapshot, job_id: str) -> Explanation:
    """Pure: the explanation of ``job_id`` in ``snapshot`` (what the API stores per job)."""
    return scheduler.explain(snapshot, job_id)

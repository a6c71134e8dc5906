"""What one round knows, organised by what it is about.

A round (one ``schedule()`` call) derives everything from its snapshot:

- :class:`PoolTable`: per-pool constants of the estimates (throughput, power, prices, ids);
  they depend only on the world, the catalogue and the policy.
- :class:`Capacity`: the free capacity left as the round hands devices out, with the numbers
  of the quick room test (free devices and largest free node per pool).
- :class:`Holds`: the promises the round has made (EASY reservations, devices claimed by jobs
  that wait for a pool, victims already chosen for preemption).
- :class:`Forecasts`: each site's outlook and the forecast integrals the round reads.
- :class:`Memos`: exact memo tables (same inputs, same answer) that keep a 1,000-job round fast.

Within a round capacity only shrinks (starts take devices; preemptions free them in a later
round), which is what makes several memos exact (see :meth:`Capacity.room_positions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Job
from yungu.domain.world import Pool, Site, World
from yungu.engines.energy.signals import floor_hour
from yungu.engines.scheduler.capacity import (
    Free,
    Timeline,
    device_power_w,
    devices,
    throughput,
)
from yungu.engines.scheduler.carry import Carry, JobFacts
from yungu.engines.scheduler.outlook import Curve, SiteOutlook
from yungu.engines.scheduler.plugins import Registry
from yungu.engines.scheduler.policy import PolicyConfig, job_weights
from yungu.engines.scheduler.ranking import Ranking, bucket_run_s
from yungu.engines.scheduler.types import PoolState, Snapshot

if TYPE_CHECKING:
    from yungu.engines.scheduler.green import GreenScheduler


class PoolTable:
    """Per-pool constants of the estimates, computed once per world (not once per option)."""

    __slots__ = (
        "cpu_price", "dev_price", "id_rank", "ids", "kw_dev", "pidx", "pools", "sites", "tmax", "tmin",
        "tput", "tput_idx", "tput_values",
    )

    def __init__(self, world: World, catalogue: Catalogue, power_load: float) -> None:
        self.pools: dict[str, Pool] = {p.id: p for p in world.pools}
        self.sites: dict[str, Site] = {s.id: s for s in world.sites}
        self.ids: list[str] = [p.id for p in world.pools]
        self.pidx: dict[str, int] = {pid: i for i, pid in enumerate(self.ids)}  # pool id -> index
        self.tput: dict[str, float] = {p.id: throughput(catalogue, p) for p in world.pools}
        self.tput_idx: list[float] = [self.tput[p.id] for p in world.pools]  # by pool index
        self.tput_values: list[float] = sorted(set(self.tput.values()))
        self.tmax = max(self.tput.values(), default=1.0)
        self.tmin = min(self.tput.values(), default=1.0)
        self.kw_dev: dict[str, float] = {
            p.id: device_power_w(catalogue, p, power_load) / 1000.0 * self.sites[p.site_id].pue for p in world.pools
        }
        self.dev_price: dict[str, float] = {p.id: float(p.price_cny_per_device_hour) for p in world.pools}
        self.cpu_price: dict[str, float] = {p.id: float(p.price_cny_per_cpu_hour) for p in world.pools}
        # Tie-break of the batch ranking: pool id order, as the per-option sort used.
        self.id_rank: NDArray[np.int64] = np.empty(len(self.ids), dtype=np.int64)
        self.id_rank[np.argsort(np.array(self.ids, dtype=object), kind="stable")] = np.arange(len(self.ids))

    def hourly(self, job: Job, pool_id: str) -> float:
        """The job's price per hour on a pool (devices, or CPUs for a CPU-only job), for scores."""
        n = devices(job)
        if n:
            return self.dev_price[pool_id] * n
        return self.cpu_price[pool_id] * job.spec.resources.cpus * job.spec.replicas

    def hourly_unit(self, job: Job, pool_id: str) -> float:
        """The price per hour of one unit of the job: one device, or one CPU for a CPU-only job."""
        return self.dev_price[pool_id] if devices(job) else self.cpu_price[pool_id]


def hourly_price(job: Job, pool: Pool) -> Decimal:
    """The job's exact price per hour on a pool (what the max-price filter compares)."""
    if devices(job):
        return pool.price_cny_per_device_hour * devices(job)
    return pool.price_cny_per_cpu_hour * job.spec.resources.cpus * job.spec.replicas


class Capacity:
    """The round's free capacity per pool, and the quick room test over a whole ranking."""

    __slots__ = ("free", "free_list", "max_node_free", "nmax_list", "node_max", "pidx", "room_memo", "version",
                 "version_of")

    def __init__(self, states: Mapping[str, PoolState], table: PoolTable) -> None:
        self.free: dict[str, Free] = {pid: Free(st) for pid, st in states.items()}
        self.pidx = table.pidx
        self.node_max: dict[str, int] = {
            pid: (max((len(d) for d in f.devs), default=0) if f.available else 0) for pid, f in self.free.items()
        }
        self.max_node_free = max(self.node_max.values(), default=0)
        # The same two numbers by pool index, for the quick room test of a whole ranking.
        self.free_list: list[int] = [
            self.free[pid].free_devices if pid in self.free and self.free[pid].available else -1 for pid in table.ids
        ]
        self.nmax_list: list[int] = [self.node_max.get(pid, -1) for pid in table.ids]
        self.version = 0  # bumped whenever a pool's free capacity changes this round
        self.version_of: dict[str, int] = {}  # pool -> times its free capacity changed this round
        # (ranking id, devices, per-node devices) -> (version, positions with room).
        self.room_memo: dict[tuple[int, int, int], tuple[int, list[int]]] = {}

    def room_positions(self, job: Job, scored: Ranking) -> list[int]:
        """Positions in ``scored`` of the pools that pass the quick room test (enough free
        devices in the pool and on one node).

        Capacity only shrinks within a round, so a shape's list can only lose entries: the
        first test walks the whole ranking, later ones re-check only the positions that passed
        last time (and only when some pool changed since).
        """
        key = (id(scored), devices(job), job.spec.resources.accelerators)
        hit = self.room_memo.get(key)
        if hit is not None and (hit[0] == self.version or not hit[1]):
            return hit[1]
        order, fa, nm, n, a = scored.order, self.free_list, self.nmax_list, key[1], key[2]
        positions = hit[1] if hit is not None else range(len(order))
        got = [p for p in positions if fa[order[p]] >= n and nm[order[p]] >= a]
        self.room_memo[key] = (self.version, got)
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


class Holds:
    """Promises made during the round that later jobs must respect."""

    __slots__ = ("claimed", "preempted", "reservations")

    def __init__(self) -> None:
        self.reservations: dict[str, list[float]] = {}  # pool -> [shadow epoch s, extra devices]
        self.claimed: dict[str, int] = {}  # pool -> devices promised to jobs waiting for it
        self.preempted: set[str] = set()  # victims already chosen this round


class Forecasts:
    """Each site's outlook at the round's time, and the forecast integrals read from it.

    Rankings read forecast means over a start-now run from the round's *anchor*: the round's
    time rounded down to ``PolicyConfig.rank_slot_s`` (15 min by default), so the rankings of
    one slot are the same from round to round and a carry can keep them. A job's own waits,
    shifts and start estimates use the exact time.
    """

    __slots__ = ("_best", "_means", "anchor", "now", "outlooks")

    def __init__(
        self,
        outlooks: Mapping[str, SiteOutlook],
        now: datetime,
        anchor: datetime,
        means: dict[tuple[str, int], tuple[float, float, float]],
        best: dict[str, tuple[SiteOutlook, tuple[float, float, float]]],
    ) -> None:
        self.now, self.anchor, self.outlooks = now, anchor, outlooks
        self._means, self._best = means, best

    def bucket_means(self, pool: Pool, tput: float, b: int) -> tuple[float, float, float]:
        """Forecast price, carbon intensity and renewable share over a run of the bucket's
        representative length on ``pool`` from the anchor (kept with the rankings)."""
        key = (pool.id, b)
        hit = self._means.get(key)
        if hit is None:
            run = bucket_run_s(b) / tput
            ol = self.outlooks[pool.site_id]
            t = self.anchor
            hit = self._means[key] = (ol.price.mean(t, run), ol.carbon.mean(t, run), ol.renewable.mean(t, run))
        return hit

    def best_hours(self, site_id: str) -> tuple[float, float, float]:
        """The site's lowest forecast price and carbon intensity and highest renewable share
        (each over any hour): no mean over a run is more favourable."""
        ol = self.outlooks[site_id]
        hit = self._best.get(site_id)
        if hit is None or hit[0] is not ol:

            def lo(c: Curve) -> float:
                return min(c.values) if c.values else c.fallback

            def hi(c: Curve) -> float:
                return max(c.values) if c.values else c.fallback

            hit = self._best[site_id] = (ol, (lo(ol.price), lo(ol.carbon), hi(ol.renewable)))
        return hit[1]


def anchor_time(now: datetime, slot_s: float) -> datetime:
    """``now`` rounded down to a multiple of ``slot_s`` seconds since the epoch (0: ``now``)."""
    if slot_s <= 0:
        return now
    us = int(slot_s * 1_000_000)
    since = now - _EPOCH
    return _EPOCH + timedelta(microseconds=(since // timedelta(microseconds=1)) // us * us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Memos:
    """Exact memo tables that live for one round (their answers depend on what the round
    has handed out so far, or on its exact time)."""

    __slots__ = ("fit", "no_wait", "reserve_full", "settled", "urgent")

    def __init__(self) -> None:
        self.fit: dict[tuple[str, int, int], Timeline] = {}  # (pool, replica, touched) -> timeline
        # A job shape that found no full pool worth waiting for (with no room now) finds none
        # later in the round for runs up to the same length: ranking id, resources, replicas,
        # wait fraction -> the longest reference run that failed.
        self.no_wait: dict[tuple[object, ...], float] = {}
        # Rankings whose best reserve_pools pools are all reserved (reservations only grow).
        self.reserve_full: set[int] = set()
        # Wait memo keys whose jobs also had no room and nothing to reserve: a later job of the
        # key (no longer run, not urgent, not preempting) ends the same way, "no room".
        self.settled: set[tuple[object, ...]] = set()
        self.urgent: dict[str, bool] = {}


class Round:
    """Everything derived from one snapshot; lives for one ``schedule()`` call.

    With a :class:`~yungu.engines.scheduler.carry.Carry` it reuses what earlier rounds derived
    from inputs that have not changed; without one it starts from an empty carry. Either way
    it computes the same values.
    """

    def __init__(self, sched: GreenScheduler, snapshot: Snapshot, carry: Carry | None = None) -> None:
        c = carry if carry is not None else Carry()
        c.begin(sched, snapshot)
        assert c.table is not None
        self.carry = c
        self.s = sched
        self.policy: PolicyConfig = sched.policy
        self.registry: Registry = sched.registry
        self.snap = snapshot
        self.now = snapshot.now
        self.next_hour = floor_hour(self.now) + timedelta(hours=1)  # the first start a time shift may pick
        w = snapshot.world
        self.table = c.table
        self.cap = Capacity(snapshot.pools, self.table)
        outlooks = {site.id: sched.outlook(site, snapshot.signals.get(site.id), self.now) for site in w.sites}
        self.ranks = c.rank_store(anchor_time(self.now, self.policy.rank_slot_s), outlooks)
        self.filters = c.filters
        self.fc = Forecasts(self.ranks.outlooks, self.now, self.ranks.anchor, self.ranks.means, c.best)
        self.holds = Holds()
        self.memo = Memos()
        # Shortcuts read on every job.
        self.pools, self.sites, self.tput, self.free = self.table.pools, self.table.sites, self.table.tput, self.cap.free
        # Running jobs per pool, and each tenant's compute units held (running, then started this round).
        self.running, self.usage = c.running_by_pool(snapshot, self.table)

    def facts(self, job: Job) -> JobFacts:
        return self.carry.job_facts(job, self.table, self.policy.deadline_margin_s, self.policy.deadline_margin_frac)

    # ------------------------------------------------------------ per-job facts

    def units(self, job: Job, pool: Pool) -> float:
        return devices(job) * self.tput[pool.id]

    def weights(self, job: Job) -> Mapping[str, float]:
        f = self.facts(job)
        if f.weights is None:
            key = (job.spec.objective, tuple(sorted(job.spec.objective_weights.items())))
            hit = self.carry.weights.get(key)
            if hit is None:
                hit = self.carry.weights[key] = job_weights(self.policy, job, self.registry.scores())
            f.weights = hit
        return f.weights

    def urgent(self, job: Job) -> bool:
        """A deadline job within ``urgent_lead_s`` of its last safe start on the fastest pool."""
        if job.spec.deadline is None:
            return False
        hit = self.memo.urgent.get(job.id)
        if hit is None:
            last = self.facts(job).deadline_last
            assert last is not None
            hit = self.memo.urgent[job.id] = self.now + timedelta(seconds=self.policy.urgent_lead_s) >= last
        return hit

    def flexible(self, w: Mapping[str, float]) -> bool:
        """The job weighs waiting lightly (green and cost presets): it may wait longer and shift."""
        return w.get("wait", 0.0) < self.policy.flexible_below

    def earliest(self, job: Job, pid: str, claimed: int = 0) -> tuple[datetime, int] | None:
        """EASY shadow time of the job's gang on a pool beside ``claimed`` promised devices.

        The release timeline (:class:`~yungu.engines.scheduler.capacity.Timeline`, built as far
        as read) is cached per replica shape and pool state: for the round while the pool is
        untouched by it, and in the carry while the pool's state and running jobs stay the same.
        """
        rid = self.facts(job).replica_id
        touched = self.cap.version_of.get(pid, 0)
        key = (pid, rid, touched)
        tl = self.memo.fit.get(key)
        if tl is None:
            tl = self.memo.fit[key] = self._timeline(job, pid, rid, touched)
        return tl.first_fit(job, self.now, claimed)

    def _timeline(self, job: Job, pid: str, rid: int, touched: int) -> Timeline:
        running = self.running.get(pid, [])
        if touched:
            return Timeline(job, self.free[pid], running)
        ckey = (pid, rid)
        state = self.snap.pools[pid]
        hit = self.carry.timelines.get(ckey)
        if hit is not None and hit[1] is running and (hit[0] is state or hit[0] == state):
            return hit[2]
        tl = Timeline(job, self.free[pid], running)
        self.carry.timelines[ckey] = (state, running, tl)
        return tl

    def latest_start(self, job: Job, pool: Pool, ref_s: float) -> datetime | None:
        """The last start on ``pool`` that meets the job's deadline with the safety margin."""
        if job.spec.deadline is None:
            return None
        run = ref_s / self.tput[pool.id]
        return job.spec.deadline - timedelta(seconds=run + self.policy.margin(run))

    def shift_limit(self, job: Job, pool: Pool, ref_s: float, flexible: bool) -> datetime | None:
        """The latest start a time shift may choose on ``pool`` (None: the job may not shift).

        A deadline job: the last safe start less the urgency lead. A job without a deadline
        that weighs waiting lightly: ``flex_shift_frac`` of its run after *submission* (not
        after now, so repeated deferrals cannot push it further and further out).
        """
        pol = self.policy
        if job.spec.deadline is not None:
            latest = self.latest_start(job, pool, ref_s)
            return None if latest is None else latest - timedelta(seconds=pol.urgent_lead_s)
        run = ref_s / self.tput[pool.id]
        if flexible and pol.flex_shift_frac > 0 and run >= pol.flex_min_run_s:
            return job.submitted_at + timedelta(seconds=pol.flex_shift_frac * run)
        return None

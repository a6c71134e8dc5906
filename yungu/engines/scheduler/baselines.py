"""Baseline policies, behind the same ``schedule(snapshot) -> Plan`` interface.

They exist to be beaten fairly in the same simulator:

- :class:`FifoFirstFit` — strict FIFO: the queue head blocks everyone behind it; each job goes
  to its home pool if it fits, else the first pool (configuration order) with room.
- :class:`FifoBackfill` — FIFO with EASY backfill: the blocked head gets a reservation at the
  earliest time its pool frees enough; later jobs start only if they do not delay it.
- :class:`CheapestNow` — SkyPilot-style: every job to the cheapest pool with room right now
  (pool price + electricity at the current price); never waits for a cheaper place.
- :class:`GreenestNow` — the same with the lowest current carbon intensity.
- :class:`LetsWaitAwhile` — Wiesner et al. (Middleware '21): jobs stay at their home site; a
  job with a deadline starts at the forecast-lowest-carbon window that still meets it
  (non-interrupting), others start as soon as they fit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Job
from yungu.domain.status import Code, Status
from yungu.domain.world import Pool, Site
from yungu.engines.energy.signals import floor_hour
from yungu.engines.scheduler.capacity import (
    Free,
    device_power_w,
    devices,
    earliest_fit,
    ref_duration_s,
    running_by_pool,
    throughput,
)
from yungu.engines.scheduler.firstfit import fits_declared
from yungu.engines.scheduler.outlook import SiteOutlook, outlook_from_signal
from yungu.engines.scheduler.types import Defer, Infeasible, Plan, Snapshot, Start

_NO_ROOM = Status(Code.UNSCHEDULABLE, ("no pool has room now",), "baseline")


class _Base:
    name = "baseline"

    def __init__(self, catalogue: Catalogue, default_carbon_g_per_kwh: float = 500.0) -> None:
        self.catalogue = catalogue
        self.default_carbon = default_carbon_g_per_kwh
        self._ol: dict[tuple[str, int], tuple[object, SiteOutlook]] = {}
        self._cands: dict[tuple[object, ...], tuple[object, list[Pool]]] = {}

    def outlook(self, site: Site, snap: Snapshot) -> SiteOutlook:
        sig = snap.signals.get(site.id)
        hit = self._ol.get((site.id, id(sig)))
        if hit is not None and hit[0] is sig and sig is not None:
            return hit[1]
        ol = outlook_from_signal(
            site.id, sig, snap.now, default_carbon=self.default_carbon, default_price=float(site.electricity_price_cny_per_kwh)
        )
        if len(self._ol) > 4096:
            self._ol.clear()
        self._ol[(site.id, id(sig))] = (sig, ol)
        return ol

    def ordered_pools(self, snap: Snapshot, job: Job, pools: list[Pool]) -> list[Pool]:
        """Home region first, then configuration order."""
        home = job.spec.data_location
        sites = {s.id: s for s in snap.world.sites}
        return sorted(pools, key=lambda p: sites[p.site_id].region_id != home)

    def candidates(self, snap: Snapshot, job: Job) -> list[Pool]:
        key = (id(snap.world), job.spec.resources, job.spec.replicas, job.spec.pool)
        hit = self._cands.get(key)
        if hit is None or hit[0] is not snap.world:
            hit = (snap.world, [p for p in snap.world.pools if not fits_declared(job, p)])
            if len(self._cands) > 4096:
                self._cands.clear()
            self._cands[key] = hit
        return hit[1]

    def _infeasible(self, snap: Snapshot, job: Job) -> Infeasible:
        reasons = tuple(f"{p.id}: {'; '.join(fits_declared(job, p))}" for p in snap.world.pools)
        return Infeasible(job.id, Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, self.name))


class FifoFirstFit(_Base):
    name = "fifo"
    backfill = False

    def schedule(self, snapshot: Snapshot) -> Plan:
        free = {pid: Free(st) for pid, st in snapshot.pools.items()}
        pools = {p.id: p for p in snapshot.world.pools}
        running = running_by_pool(snapshot.running, pools, self.catalogue, snapshot.now)
        starts: list[Start] = []
        defers: list[Defer] = []
        infeasible: list[Infeasible] = []
        shadow: tuple[str, float, float] | None = None  # pool, shadow epoch, extra devices
        blocked = False
        now_s = snapshot.now.timestamp()
        for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
            cands = self.candidates(snapshot, job)
            if not cands:
                infeasible.append(self._infeasible(snapshot, job))
                continue
            if blocked and not self.backfill:
                continue
            placed = False
            for pool in self.ordered_pools(snapshot, job, cands):
                f = free.get(pool.id)
                if f is None:
                    continue
                if shadow is not None and shadow[0] == pool.id:
                    run = ref_duration_s(job) / throughput(self.catalogue, pool)
                    if now_s + run > shadow[1] and devices(job) > shadow[2]:
                        continue
                where = f.find(job)
                if where is None:
                    continue
                if shadow is not None and shadow[0] == pool.id:
                    run = ref_duration_s(job) / throughput(self.catalogue, pool)
                    if now_s + run > shadow[1]:
                        shadow = (shadow[0], shadow[1], shadow[2] - devices(job))
                starts.append(Start(job.id, f.take(job, where), f"{self.name}: {pool.id}"))
                placed = True
                break
            if placed:
                continue
            if not blocked:
                blocked = True
                if self.backfill:
                    best: tuple[datetime, int, str] | None = None
                    for pool in self.ordered_pools(snapshot, job, cands):
                        if pool.id not in free:
                            continue
                        got = earliest_fit(job, free[pool.id], running.get(pool.id, []), snapshot.now)
                        if got is not None and (best is None or got[0] < best[0]):
                            best = (got[0], got[1], pool.id)
                    if best is not None:
                        shadow = (best[2], best[0].timestamp(), float(best[1]))
                        defers.append(Defer(job.id, best[0], Status(Code.WAIT, (f"reserved {best[2]}",), self.name)))
                        continue
            defers.append(Defer(job.id, None, _NO_ROOM))
        return Plan(tuple(starts), tuple(defers), (), tuple(infeasible))


class FifoBackfill(FifoFirstFit):
    name = "fifo-backfill"
    backfill = True


class _GreedyNow(_Base):
    """Every job, in submission order, to the pool with the lowest ``key`` that has room."""

    def key(self, snap: Snapshot, job: Job, pool: Pool, site: Site) -> float:
        raise NotImplementedError

    def schedule(self, snapshot: Snapshot) -> Plan:
        free = {pid: Free(st) for pid, st in snapshot.pools.items()}
        sites = {s.id: s for s in snapshot.world.sites}
        starts: list[Start] = []
        defers: list[Defer] = []
        infeasible: list[Infeasible] = []
        ranks: dict[tuple[object, ...], list[Pool]] = {}
        for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
            shape = (job.spec.resources, job.spec.replicas, job.spec.pool)
            ranked = ranks.get(shape)
            if ranked is None:
                cands = self.candidates(snapshot, job)
                ranked = sorted(cands, key=lambda p: (self.key(snapshot, job, p, sites[p.site_id]), p.id))
                ranks[shape] = ranked
            if not ranked:
                infeasible.append(self._infeasible(snapshot, job))
                continue
            for pool in ranked:
                f = free.get(pool.id)
                if f is None:
                    continue
                where = f.find(job)
                if where is not None:
                    starts.append(Start(job.id, f.take(job, where), f"{self.name}: {pool.id}"))
                    break
            else:
                defers.append(Defer(job.id, None, _NO_ROOM))
        return Plan(tuple(starts), tuple(defers), (), tuple(infeasible))


class CheapestNow(_GreedyNow):
    name = "cheapest-now"

    def key(self, snap: Snapshot, job: Job, pool: Pool, site: Site) -> float:
        kw = device_power_w(self.catalogue, pool, 0.8) / 1000 * site.pue
        per_dev_h = float(pool.price_cny_per_device_hour) + kw * self.outlook(site, snap).price.at(snap.now)
        return per_dev_h / throughput(self.catalogue, pool)  # per unit of work


class GreenestNow(_GreedyNow):
    name = "greenest-now"

    def key(self, snap: Snapshot, job: Job, pool: Pool, site: Site) -> float:
        kw = device_power_w(self.catalogue, pool, 0.8) / 1000 * site.pue
        return kw * self.outlook(site, snap).carbon.at(snap.now) / throughput(self.catalogue, pool)


class LetsWaitAwhile(_Base):
    """Home-site temporal shifting (non-interrupting) by forecast carbon intensity."""

    name = "lets-wait-awhile"

    def schedule(self, snapshot: Snapshot) -> Plan:
        free = {pid: Free(st) for pid, st in snapshot.pools.items()}
        sites = {s.id: s for s in snapshot.world.sites}
        starts: list[Start] = []
        defers: list[Defer] = []
        infeasible: list[Infeasible] = []
        for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
            cands = self.candidates(snapshot, job)
            home = [p for p in cands if sites[p.site_id].region_id == job.spec.data_location] or cands
            if not home:
                infeasible.append(self._infeasible(snapshot, job))
                continue
            pool = home[0]
            site = sites[pool.site_id]
            if job.spec.deadline is not None:
                run = ref_duration_s(job) / throughput(self.catalogue, pool)
                latest = job.spec.deadline - timedelta(seconds=run)
                first = floor_hour(snapshot.now) + timedelta(hours=1)
                if latest >= first:
                    ol = self.outlook(site, snapshot)
                    best = ol.best_start(snapshot.now, latest, run, "carbon")
                    if best > snapshot.now:
                        defers.append(Defer(job.id, best, Status(Code.WAIT, ("lowest forecast carbon later",), self.name)))
                        continue
            for p in home:
                f = free.get(p.id)
                where = f.find(job) if f is not None else None
                if f is not None and where is not None:
                    starts.append(Start(job.id, f.take(job, where), f"{self.name}: {p.id}"))
                    break
            else:
                defers.append(Defer(job.id, None, _NO_ROOM))
        return Plan(tuple(starts), tuple(defers), (), tuple(infeasible))


BASELINES = {
    "fifo": FifoFirstFit,
    "fifo-backfill": FifoBackfill,
    "cheapest-now": CheapestNow,
    "greenest-now": GreenestNow,
    "lets-wait-awhile": LetsWaitAwhile,
}

"""What the scheduler keeps from one round to the next: an explicit value the caller holds.

A round derives most of what it needs from parts of the snapshot that rarely change: the
world (pool constants), which pools are reachable (filter results), the forecasts (rankings of
pools per job shape and objective, forecast integrals), the running jobs per pool (release
timelines), and each pending job's spec. A :class:`Carry` keeps those derivations, each next
to the inputs it was derived from; :meth:`Carry.begin` compares the new snapshot's inputs and
drops exactly the parts whose inputs changed. A round with a carry therefore makes the same
plan as a round without one (``tests/scheduler/test_incremental.py`` checks it) — it only
skips the work.

Pure: no clock, no I/O. The scheduler never keeps a carry itself; the caller creates one
(``scheduler.new_carry()``), passes it to every ``schedule(snapshot, carry=...)`` and may drop
it at any time (the next round is then computed from scratch).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from yungu.domain.job import Job, JobSpec
from yungu.domain.status import Status
from yungu.domain.world import Pool, World
from yungu.engines.scheduler.capacity import RunningInfo, Timeline, devices, ref_duration_s
from yungu.engines.scheduler.outlook import SiteOutlook
from yungu.engines.scheduler.plugins import Option, OptionArrays, Reference
from yungu.engines.scheduler.ranking import Ranking, bucket
from yungu.engines.scheduler.types import PoolState, Snapshot

if TYPE_CHECKING:
    from yungu.engines.scheduler.green import GreenScheduler
    from yungu.engines.scheduler.round import PoolTable



class JobFacts:
    """What a round reads from a pending job's spec, computed once per spec (specs never change).

    The memo keys are interned as small integers (hashing a spec's resources for every lookup
    of every job of every round would cost more than the lookups)."""

    __slots__ = (
        "bucket", "deadline_last", "devices", "filter_id", "now_id", "ref_s", "replica_id", "shape_id", "spec", "weights",
    )

    def __init__(self, job: Job, tmax: float, margin_s: float, margin_frac: float, intern: dict[object, int]) -> None:
        s = job.spec
        self.spec: JobSpec = s
        self.ref_s = ref_duration_s(job)
        self.bucket = bucket(self.ref_s)
        self.devices = devices(job)
        # Filters decide feasibility, not preference: the objective is not part of their key.
        fkey = (s.resources, s.replicas, s.pool, s.data_location, s.max_price_cny_per_hour)
        self.filter_id = intern.setdefault(("filter", fkey), len(intern))
        # The start-now ranking depends on these besides the run length.
        now_key = ("now", fkey, s.objective, tuple(sorted(s.objective_weights.items())), self.bucket)
        self.now_id = intern.setdefault(now_key, len(intern))
        self.shape_id = intern.setdefault(("shape", s.resources, s.replicas), len(intern))  # the gang's shape
        r = s.resources
        self.replica_id = intern.setdefault(("replica", r.accelerators, r.cpus, r.memory_gb), len(intern))
        self.weights: Mapping[str, float] | None = None  # the job's score weights (set by the round)
        self.deadline_last: datetime | None = None  # last safe start on the fastest pool
        if s.deadline is not None:
            run = self.ref_s / tmax
            self.deadline_last = s.deadline - timedelta(seconds=run + margin_s + margin_frac * run)


class FilterStore:
    """Filter results per job feasibility key; valid while the world and the pools'
    reachability are unchanged."""

    __slots__ = ("views",)

    def __init__(self) -> None:
        # JobFacts.filter_id (with the keys of keyed filters) -> result
        self.views: dict[object, tuple[list[Pool], dict[str, Status]]] = {}


class RankStore:
    """Rankings of pools and the forecast integrals they were scored with; valid while the
    world, the filter store, the forecasts and the rankings' anchor time are unchanged.

    Memos keyed by ``id()`` of a ranking or a candidate list are kept here, beside the
    objects they name, so an id is never reused for another object while its key lives.
    """

    __slots__ = ("anchor", "cut", "filters", "fit_lists", "means", "now", "opts", "outlooks", "rank")

    def __init__(self, anchor: datetime, outlooks: Mapping[str, SiteOutlook], filters: FilterStore) -> None:
        self.anchor = anchor
        self.outlooks = dict(outlooks)
        self.filters = filters
        self.means: dict[tuple[str, int], tuple[float, float, float]] = {}
        self.opts: dict[tuple[object, ...], tuple[list[Option], Reference, OptionArrays]] = {}
        self.rank: dict[tuple[object, ...], Ranking] = {}  # (weights, location, bucket, devices?) -> ranking
        self.cut: dict[tuple[int, int], Ranking] = {}  # (ranking id, candidate list id) -> subset
        self.now: dict[int, Ranking] = {}  # JobFacts.now_id -> the job's ranking
        self.fit_lists: dict[tuple[int, tuple[float, ...]], Ranking] = {}  # deadline-filtered rankings

    def valid(self, anchor: datetime, outlooks: Mapping[str, SiteOutlook], filters: FilterStore) -> bool:
        if anchor != self.anchor or filters is not self.filters or outlooks.keys() != self.outlooks.keys():
            return False
        return all(self.outlooks[k] is v for k, v in outlooks.items())


class PoolRunning:
    """The running jobs of one pool (in snapshot order) and their estimated ends, sorted."""

    __slots__ = ("infos", "jobs", "min_end")

    def __init__(self, jobs: tuple[Job, ...], infos: list[RunningInfo], min_end: datetime | None) -> None:
        self.jobs, self.infos, self.min_end = jobs, infos, min_end


class Carry:
    """The state a scheduler carries between rounds (see the module docstring)."""

    def __init__(self) -> None:
        self.sched: GreenScheduler | None = None
        self.world: World | None = None
        self.table: PoolTable | None = None
        self.reach: tuple[bool, ...] = ()
        self.filters = FilterStore()
        self.ranks: RankStore | None = None
        self.best: dict[str, tuple[SiteOutlook, tuple[float, float, float]]] = {}
        self.weights: dict[tuple[object, ...], dict[str, float]] = {}
        self.facts: dict[str, JobFacts] = {}
        self.intern: dict[object, int] = {}  # memo keys of job facts -> small integers
        self.running: dict[str, PoolRunning] = {}
        # job id -> (the job, its estimate, its raw estimated end or, without a start time, the round's time)
        self.jobs_running: dict[str, tuple[Job, RunningInfo, datetime]] = {}
        # (pool, replica shape) -> (pool state, running list, its release timeline)
        self.timelines: dict[tuple[object, ...], tuple[PoolState, list[RunningInfo], Timeline]] = {}
        self.rounds = 0

    def begin(self, sched: GreenScheduler, snap: Snapshot) -> None:
        """Drop what the new snapshot invalidates; build the pool table if the world changed."""
        from yungu.engines.scheduler.round import PoolTable

        if sched is not self.sched or self.table is None or (snap.world is not self.world and snap.world != self.world):
            self.__init__()  # type: ignore[misc]
            self.sched, self.world = sched, snap.world
            self.table = PoolTable(snap.world, sched.catalogue, sched.policy.power_load)
        self.world = snap.world
        pools = snap.pools
        reach = tuple((st := pools.get(pid)) is not None and st.available for pid in self.table.ids)
        if reach != self.reach:
            self.reach, self.filters, self.ranks = reach, FilterStore(), None
        self.rounds += 1
        if len(self.facts) > 2 * len(snap.pending) + 1024:  # forget jobs that have left the queue
            keep = {j.id for j in snap.pending}
            self.facts = {k: v for k, v in self.facts.items() if k in keep}

    def rank_store(self, anchor: datetime, outlooks: Mapping[str, SiteOutlook]) -> RankStore:
        rs = self.ranks
        if rs is None or not rs.valid(anchor, outlooks, self.filters):
            rs = self.ranks = RankStore(anchor, outlooks, self.filters)
        return rs

    def job_facts(self, job: Job, table: PoolTable, margin_s: float, margin_frac: float) -> JobFacts:
        f = self.facts.get(job.id)
        if f is None or (f.spec is not job.spec and f.spec != job.spec):
            f = self.facts[job.id] = JobFacts(job, table.tmax, margin_s, margin_frac, self.intern)
        return f

    def running_by_pool(self, snap: Snapshot, table: PoolTable) -> tuple[dict[str, list[RunningInfo]], dict[str, float]]:
        """Running jobs per pool with their estimated end (start + estimate / throughput),
        sorted by end (ties in snapshot order), and each tenant's compute units in use.

        A job's estimate is kept while the job (the same object) keeps running; a pool's
        sorted list is rebuilt only when its jobs changed or one of them passed its estimate.
        """
        now = snap.now
        pools, tput = table.pools, table.tput
        old_jobs = self.jobs_running
        jobs: dict[str, tuple[Job, RunningInfo, datetime]] = {}
        groups: dict[str, list[tuple[Job, RunningInfo, datetime]]] = {}
        usage: dict[str, float] = {}
        for j in snap.running:
            a = j.allocation
            if a is None or a.pool_id not in pools:
                continue
            pid = a.pool_id
            hit = old_jobs.get(j.id)
            if hit is None or hit[0] is not j or j.started_at is None:
                # A job without a start time is counted from now: its end moves every round
                # (its "raw end" is then the round's time, so its pool is rebuilt next round).
                raw = (j.started_at or now) + timedelta(seconds=ref_duration_s(j) / tput[pid])
                hit = (j, RunningInfo(j, pid, max(now, raw), a.devices), raw if j.started_at is not None else now)
            jobs[j.id] = hit
            groups.setdefault(pid, []).append(hit)
            usage[j.tenant_id] = usage.get(j.tenant_id, 0.0) + hit[1].devices * tput[pid]
        self.jobs_running = jobs
        out: dict[str, list[RunningInfo]] = {}
        kept: dict[str, PoolRunning] = {}
        for pid, group in groups.items():
            key = tuple(g[0] for g in group)
            old = self.running.get(pid)
            if old is not None and old.jobs == key and (old.min_end is None or old.min_end >= now):
                kept[pid] = old
                out[pid] = old.infos
                continue
            infos = []
            for j, info, raw in group:
                if j.started_at is not None and info.expected_end != max(now, raw):  # clamped to an earlier "now"
                    info = RunningInfo(j, pid, max(now, raw), info.devices)
                infos.append(info)
            infos.sort(key=lambda r: r.expected_end)
            kept[pid] = PoolRunning(key, infos, min(g[2] for g in group))
            out[pid] = infos
        self.running = kept
        return out, usage

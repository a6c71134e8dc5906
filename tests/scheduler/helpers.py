"""Small worlds, jobs and forecasts for scheduler tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from yungu.adapters.config import load_catalogue
from yungu.domain.job import Allocation, Job, JobSpec, JobState, Objective, ReplicaPlacement, Resources
from yungu.domain.world import ComputeClass, Pool, Region, Site, World
from yungu.engines.energy.signals import ForecastErrorModel, Provenance, SignalSeries, SignalType, SiteSignal
from yungu.engines.scheduler.outlook import build_signals
from yungu.engines.scheduler.types import NodeFree, PoolState, Snapshot

NOW = datetime(2023, 3, 1, 0, 0, tzinfo=UTC)
CAT = load_catalogue()


def site(sid: str, price: str = "0.5", pue: float = 1.2, green: float = 0.0) -> Site:
    return Site(sid, sid, sid, sid, "test", 0.0, 0.0, pue, Decimal(price), green_contract_share=green)


def pool(pid: str, sid: str, nodes: int = 2, per: int = 8, acc: str = "A100", price: str = "10") -> Pool:
    return Pool(pid, sid, pid, ComputeClass.INTELLIGENT, nodes, 64, 512, acc, per, Decimal(price))


def world(sites: Sequence[Site], pools: Sequence[Pool]) -> World:
    return World("t", "t", tuple(Region(s.region_id, s.region_id, s.region_id) for s in sites), tuple(sites), tuple(pools))


def job(
    jid: str,
    gpus: int = 1,
    replicas: int = 1,
    *,
    dur: int = 3600,
    deadline_h: float | None = None,
    objective: Objective = Objective.BALANCED,
    priority: int = 0,
    tenant: str = "t1",
    submitted: datetime = NOW,
    home: str | None = None,
    types: tuple[str, ...] = (),
    max_price: str | None = None,
    state: JobState = JobState.QUEUED,
    started: datetime | None = None,
    alloc: Allocation | None = None,
) -> Job:
    spec = JobSpec(
        name=jid,
        command="x",
        resources=Resources(cpus=1, memory_gb=1, accelerators=gpus, accelerator_types=types),
        replicas=replicas,
        estimated_duration_s=dur,
        deadline=None if deadline_h is None else submitted + timedelta(hours=deadline_h),
        priority=priority,
        objective=objective,
        data_location=home,
        max_price_cny_per_hour=None if max_price is None else Decimal(max_price),
    )
    return Job(jid, "t", tenant, spec, state, submitted, submitted, allocation=alloc, started_at=started)


def empty_state(p: Pool) -> PoolState:
    return PoolState(p.id, tuple(NodeFree(p.cpus_per_node, p.memory_gb_per_node, tuple(range(p.accelerators_per_node))) for _ in range(p.nodes)))


def running(jid: str, p: Pool, node: int, devs: tuple[int, ...], **kw: object) -> Job:
    alloc = Allocation(jid, p.id, (ReplicaPlacement(node, devs),), 1, 1)
    return job(jid, len(devs), state=JobState.RUNNING, alloc=alloc, **kw)  # type: ignore[arg-type]


def state_with(p: Pool, jobs: Sequence[Job]) -> PoolState:
    """The pool's free capacity with ``jobs`` (running on it) taken out."""
    nodes = [[p.cpus_per_node, p.memory_gb_per_node, set(range(p.accelerators_per_node))] for _ in range(p.nodes)]
    for j in jobs:
        assert j.allocation is not None
        for rp in j.allocation.replicas:
            n = nodes[rp.node]
            n[0] -= j.allocation.cpus_per_replica  # type: ignore[operator]
            n[1] -= j.allocation.memory_gb_per_replica  # type: ignore[operator]
            n[2] -= set(rp.devices)  # type: ignore[operator]
    return PoolState(p.id, tuple(NodeFree(c, m, tuple(sorted(d))) for c, m, d in nodes))  # type: ignore[arg-type]


def carbon_signal(sid: str, values: Sequence[float], start: datetime = NOW, price: Sequence[float] | None = None) -> SiteSignal:
    series = {SignalType.CARBON_INTENSITY: SignalSeries.uniform(sid, SignalType.CARBON_INTENSITY, start, values, Provenance.MEASURED)}
    if price is not None:
        series[SignalType.PRICE] = SignalSeries.uniform(sid, SignalType.PRICE, start, price, Provenance.MEASURED)
    return SiteSignal(sid, series)


def snapshot(
    w: World,
    pending: Sequence[Job],
    *,
    running_jobs: Sequence[Job] = (),
    truth: dict[str, SiteSignal] | None = None,
    now: datetime = NOW,
    states: dict[str, PoolState] | None = None,
    error: ForecastErrorModel | None = None,
) -> Snapshot:
    pools = {p.id: state_with(p, [j for j in running_jobs if j.allocation and j.allocation.pool_id == p.id]) for p in w.pools}
    if states:
        pools.update(states)
    sig = build_signals(truth or {}, now, error or ForecastErrorModel(sigma_1h=0, sigma_per_hour=0))
    return Snapshot(now, w, CAT, pools, tuple(pending), tuple(running_jobs), sig)

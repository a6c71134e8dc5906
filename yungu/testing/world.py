"""Small worlds, jobs and snapshots for scheduler and control-loop tests.

Every builder has defaults that make a valid object, so a test names only what it is about::

    w = world(pool("gpu", devices=8))
    low = running(job("low", devices=8), w, "gpu")
    snap = snapshot(w, pending=[job("high", devices=8, priority=10)], running=[low])
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources

from yungu.domain.catalogue import Catalogue, parse_catalogue
from yungu.domain.job import Allocation, Job, JobSpec, JobState, ReplicaPlacement, Resources
from yungu.domain.world import ComputeClass, Pool, Region, Site, World
from yungu.engines.scheduler.pool_state import pool_states
from yungu.engines.scheduler.types import Snapshot

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


@cache
def catalogue() -> Catalogue:
    """The catalogue shipped with Yungu (``yungu/data/accelerators.toml``)."""
    text = resources.files("yungu").joinpath("data/accelerators.toml").read_text(encoding="utf-8")
    return parse_catalogue(tomllib.loads(text))


def site(sid: str = "site-1", region: str = "region-1", *, executor: str = "fake", price: str = "0.5",
         pue: float = 1.2, green: float = 0.0) -> Site:
    return Site(sid, region, sid, sid, "test", 40.0, 111.0, pue, Decimal(price), executor=executor,
                green_contract_share=green)


def pool(pid: str = "pool-1", site_id: str = "site-1", *, nodes: int = 1, devices: int = 8, cpus: int = 64,
         memory_gb: int = 512, accelerator: str | None = "A100", price: str = "10") -> Pool:
    if devices == 0:
        accelerator = None
    return Pool(pid, site_id, pid, ComputeClass.INTELLIGENT if devices else ComputeClass.GENERAL, nodes, cpus,
                memory_gb, accelerator, devices, Decimal(price), Decimal("0.1"))


def world(*pools: Pool, sites: Sequence[Site] = (), platform_id: str = "yungu-test") -> World:
    """A world of ``pools``; sites named by the pools are made (executor ``fake``) unless given."""
    pools = pools or (pool(),)
    have = {s.id: s for s in sites}
    for p in pools:
        if p.site_id not in have:
            have[p.site_id] = site(p.site_id)
    regions = {s.region_id: Region(s.region_id, s.region_id, s.region_id, home=not i)
               for i, s in enumerate(have.values())}
    return World(platform_id, "test platform", tuple(regions.values()), tuple(have.values()), tuple(pools))


def job(jid: str = "job-1", *, devices: int = 0, replicas: int = 1, cpus: int = 1, memory_gb: int = 1,
        priority: int = 0, tenant: str = "tenant-1", state: JobState = JobState.QUEUED,
        submitted: datetime = T0, duration_s: int | None = 3600, pool_id: str | None = None,
        command: str = "true", attempt: int = 0, reason: str = "", **spec: object) -> Job:
    s = JobSpec(name=jid, command=command, resources=Resources(cpus=cpus, memory_gb=memory_gb, accelerators=devices),
                replicas=replicas, estimated_duration_s=duration_s, priority=priority, pool=pool_id,
                **spec)  # type: ignore[arg-type]
    return Job(jid, "yungu-test", tenant, s, state, submitted, submitted, attempt=attempt, reason=reason)


def running(j: Job, w: World, pool_id: str, *, node: int = 0, devices: Iterable[int] | None = None,
            state: JobState = JobState.RUNNING, started: datetime | None = None) -> Job:
    """``j`` holding devices on ``pool_id`` (lowest indices unless given), in ``state``."""
    p = w.pool(pool_id)
    r = j.spec.resources
    devs = tuple(devices) if devices is not None else tuple(range(r.accelerators))
    placements = tuple(ReplicaPlacement(node if j.spec.replicas == 1 else i, devs) for i in range(j.spec.replicas))
    if any(d >= p.accelerators_per_node for d in devs):
        raise ValueError(f"{pool_id} has {p.accelerators_per_node} devices per node")
    alloc = Allocation(j.id, pool_id, placements, r.cpus, r.memory_gb)
    return replace(j, state=state, allocation=alloc,
                   started_at=(started or j.submitted_at) if state is JobState.RUNNING else None)


def snapshot(w: World, *, pending: Sequence[Job] = (), running: Sequence[Job] = (), now: datetime = T0,
             available: Mapping[str, bool] | None = None, signals: Mapping[str, object] | None = None,
             cat: Catalogue | None = None) -> Snapshot:
    """The scheduler's frozen view: free capacity is the world minus what ``running`` holds."""
    return Snapshot(now=now, world=w, catalogue=cat or catalogue(),
                    pools=pool_states(w, running, available), pending=tuple(pending), running=tuple(running),
                    signals=signals or {})

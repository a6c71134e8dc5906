"""A small world and finished jobs for the billing tests and the crash worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from yungu.domain.job import Allocation, Job, JobSpec, JobState, ReplicaPlacement, Resources
from yungu.domain.world import ComputeClass, Pool, Region, Site, World

WORLD = World(
    "yungu-test", "云谷测试平台",
    (Region("bj", "Beijing", "北京", home=True),),
    (Site("bj-1", "bj", "Beijing 1", "北京一号", "acme-idc", 39.9, 116.4, 1.25, Decimal("0.65")),),
    (Pool("bj-1/a100", "bj-1", "A100 pool", ComputeClass.INTELLIGENT, 4, 64, 512, "A100-80G", 8,
          Decimal("12.50")),),
)


def finished_job(i: int, tenant: str, start: datetime, minutes: int, devices: int = 2) -> Job:
    alloc = Allocation(f"job{i:04d}", "bj-1/a100", (ReplicaPlacement(0, tuple(range(devices))),), 8, 64)
    spec = JobSpec(f"j{i}", "python train.py", resources=Resources(8, 64, devices))
    return Job(f"job{i:04d}", "yungu-test", tenant, spec, JobState.SUCCEEDED, start, start + timedelta(minutes=minutes),
               allocation=alloc, started_at=start, finished_at=start + timedelta(minutes=minutes))


def march_jobs(n: int, tenants: tuple[str, ...] = ("t1", "t2")) -> list[Job]:
    base = datetime(2026, 3, 10, tzinfo=UTC)
    return [finished_job(i, tenants[i % len(tenants)], base + timedelta(hours=i), 7 + (i * 13) % 90, 1 + i % 4)
            for i in range(n)]

"""Checks a job submission must pass before it is stored (422 at submit, not a failure later).

``JobSpec.validate`` holds the rules that need nothing but the spec; here are the ones that
need the submission time and the configured world: a deadline in the past, an unknown pool
or region, and a gang that no pool (or no pool's executor) could ever hold, even empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from yungu.domain.catalogue import Catalogue
from yungu.domain.errors import InvalidInput
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.world import World
from yungu.engines.scheduler.firstfit import fits_declared


def max_gang(executor: Any) -> int | None:
    """The largest gang an executor can ever launch (``max_gang`` where it has one), else None."""
    n = getattr(executor, "max_gang", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def check_submission(spec: JobSpec, now: datetime, world: World, catalogue: Catalogue,
                     executors: Mapping[str, Any]) -> None:
    """Raise ``InvalidInput`` (422) when the job could never run as asked; return when it could."""
    spec.validate()
    spec.validate_times(now)
    if spec.pool and spec.pool not in {pool.id for pool in world.pools}:
        raise InvalidInput(f"unknown pool {spec.pool!r}; see GET /api/v1/pools / 未知资源池")
    for acc in spec.resources.accelerator_types:
        catalogue.get(acc)
    if spec.data_location and spec.data_location not in {r.id for r in world.regions}:
        raise InvalidInput(f"unknown region {spec.data_location!r} in data_location / 未知区域")
    probe = Job("probe", world.platform_id, "probe", spec, JobState.PENDING, now, now)
    why: list[str] = []
    for pool in world.pools:
        reasons = fits_declared(probe, pool)
        limit = max_gang(executors.get(world.site(pool.site_id).executor))
        if limit is not None and spec.replicas > limit:
            reasons.append(f"gang of {spec.replicas} exceeds the executor's limit of {limit} processes")
        if not reasons:
            return
        if spec.pool is None or spec.pool == pool.id:
            why.append(f"{pool.id}: {'; '.join(reasons)}")
    raise InvalidInput("no pool can ever run this job (even empty) / 没有资源池能运行该作业: "
                       + " | ".join(why)[:2000], detail={"pools": why[:50]})

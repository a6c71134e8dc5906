"""Per-job energy and carbon reports (location- and market-based side by side)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from yungu.adapters.telemetry.reports import job_report
from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.routes.telemetry import telemetry_store
from yungu.domain.errors import NotFound
from yungu.domain.tenancy import Principal

router = APIRouter(tags=["energy"])


def check_job_access(c: Any, p: Principal, job_id: str) -> str | None:
    """The job's tenant, if the platform knows the job; tenants see only their own."""
    try:
        job = c.store.get(job_id)
    except NotFound:
        if p.role.can_see_all_tenants():
            return None
        raise
    if not p.may_access_tenant(job.tenant_id):
        raise NotFound(f"no job {job_id}")
    return str(job.tenant_id)


@router.get("/energy/jobs/{job_id}")
def job_energy(request: Request, job_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    check_job_access(c, p, job_id)
    doc, _ = job_report(telemetry_store(c), c.world, job_id)
    return doc

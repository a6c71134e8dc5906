"""``GET /api/v1/jobs/{id}/explain``: where the scheduler put (or would put) a job, and why.

The payload lists the chosen option and the best alternatives, each with estimated cost,
carbon, green share, wait, run time and latency, and the reasons it lost. Sources, in order:

1. computed now from the frozen snapshot of the round that last decided the job (or the
   loop's last snapshot) when the scheduler can explain (``GreenScheduler.explain``) and the
   job is in that snapshot — on the server that leads the control loop;
2. otherwise (a standby server, a job not decided since the start) the job's recorded reason.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from yungu.api.deps import ANY_ROLE, container, require
from yungu.domain.errors import NotFound
from yungu.domain.tenancy import Principal
from yungu.engines.scheduler.green import Explanation

router = APIRouter(tags=["scheduler"])


def explanation_json(e: Explanation) -> dict[str, Any]:
    return {
        "job_id": e.job_id,
        "at": e.at.isoformat(),
        "decision": e.decision,
        "summary": e.summary,
        "weights": dict(e.weights),
        "filtered": {k: list(v) for k, v in e.filtered.items()},
        "alternatives": [
            {
                "pool_id": a.pool_id,
                "site_id": a.site_id,
                "start": a.start.isoformat(),
                "wait_s": round(a.wait_s),
                "run_s": round(a.run_s),
                "cost_cny": str(a.cost_cny),
                "carbon_kg": round(a.carbon_kg, 3),
                "energy_kwh": round(a.energy_kwh, 3),
                "green_share": round(a.green_share, 4),
                "latency_ms": round(a.latency_ms, 1),
                "room_now": a.room_now,
                "score": round(a.score, 4),
                "chosen": a.chosen,
                "why_lost": list(a.why_lost),
            }
            for a in e.alternatives
        ],
    }


@router.get("/jobs/{job_id}/explain")
def explain_job(job_id: str, request: Request, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    job = c.store.get(job_id)
    if not p.may_access_tenant(job.tenant_id):
        raise NotFound(f"no job {job_id}")
    rec = getattr(c, "reconciler", None)
    sched = getattr(rec, "scheduler", None)
    snap = rec.snapshot_for(job_id) if rec is not None and hasattr(rec, "snapshot_for") else None
    if snap is None:
        snap = getattr(rec, "last_snapshot", None)
    in_snap = snap is not None and any(j.id == job_id for j in snap.pending)
    if sched is not None and hasattr(sched, "explain") and in_snap:
        return {"source": "decision-round", "state": job.state.value, **explanation_json(sched.explain(snap, job_id))}
    return {
        "source": "reason",
        "state": job.state.value,
        "job_id": job_id,
        "decision": job.state.value,
        "summary": job.reason or "no scheduling decision recorded yet",
        "weights": {},
        "filtered": {},
        "alternatives": [],
    }

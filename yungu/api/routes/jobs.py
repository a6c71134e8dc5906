"""Jobs: submit, list, status, events, logs, cancel. A tenant only ever sees its own jobs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.job_checks import check_submission
from yungu.api.schemas import JobIn, StateName, job_out
from yungu.domain.errors import Forbidden, InvalidInput, NotFound
from yungu.domain.job import Job, JobState
from yungu.domain.tenancy import Principal, Role
from yungu.ports.executor import ExecError

router = APIRouter(tags=["jobs"])
T = TypeVar("T")
SUBMITTERS = (Role.TENANT, Role.OPERATOR)


def _visible_job(request: Request, job_id: str, p: Principal) -> Job:
    job = container(request).store.get(job_id)
    if not p.may_access_tenant(job.tenant_id):
        raise NotFound(f"no job {job_id}")  # never reveal that another tenant's job exists
    return job


async def _store_read(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a store read for an async endpoint. SQLite is in-process: call it directly (a thread
    hop costs more than the query). Over a network (PostgreSQL) wait for it off the event
    loop, so other requests go on meanwhile."""
    if not container(request).store.blocks_event_loop():
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _json(data: Any, status: int = 200) -> Response:
    """Hot paths answer with orjson directly: FastAPI's generic encoder costs more than the query."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.post("/jobs", status_code=201, response_model=None, responses={
    200: {"description": "a repeat of an earlier submission (same Idempotency-Key and body): that job"},
    201: {"description": "the job, durably stored"}})
async def submit(request: Request, body: JobIn = Body(...),
           idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
           p: Principal = Depends(require(*SUBMITTERS))) -> Response:
    c = container(request)
    if body.tenant_id and body.tenant_id != p.tenant_id:
        if not p.role.can_see_all_tenants():
            raise Forbidden("a tenant key cannot submit for another tenant")
        tenant_id = body.tenant_id
        c.store.tenant(tenant_id)
    elif p.tenant_id:
        tenant_id = p.tenant_id
    else:
        raise InvalidInput("an admin/operator key must name tenant_id in the body")
    spec = body.to_spec()
    check_submission(spec, c.clock.now(), c.world, c.catalogue, c.executors)
    body_hash = hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
    batcher = c.submit_batcher
    if idempotency_key is None and batcher is not None:  # group commit with concurrent submissions
        job, created = await batcher.submit(tenant_id, spec, c.ids.new(), body_hash, c.clock.now()), True
    else:
        job, created = c.store.submit(tenant_id, spec, c.clock.now(), c.ids.new(), idempotency_key, body_hash)
    if created:
        c.reconciler.wake()
    return _json(job_out(job), 201 if created else 200)


@router.get("/jobs")
async def list_jobs(request: Request, state: list[StateName] = Query(default=[]), tenant_id: str | None = None,
              cursor: str | None = None, limit: int = Query(50, ge=1, le=500),
              p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    if p.role.can_see_all_tenants():
        scope = tenant_id
    else:
        if tenant_id and tenant_id != p.tenant_id:
            raise Forbidden("a tenant key can only list its own jobs")
        scope = p.tenant_id or "-"
    jobs = await _store_read(request, container(request).store.page, scope, [JobState(s) for s in state], cursor, limit)
    return {"items": [job_out(j) for j in jobs], "next_cursor": jobs[-1].id if len(jobs) == limit else None}


@router.get("/jobs/{job_id}", response_model=None)
async def get_job(request: Request, job_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> Response:
    job = await container(request).store.get_async(job_id)  # on the event loop, its own connection
    if not p.may_access_tenant(job.tenant_id):
        raise NotFound(f"no job {job_id}")  # never reveal that another tenant's job exists
    return _json(job_out(job))


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    await _store_read(request, _visible_job, request, job_id, p)
    return {"items": await _store_read(request, container(request).store.events, job_id)}


@router.get("/jobs/{job_id}/logs")
def job_logs(request: Request, job_id: str, stream: str = Query("stdout", pattern=r"^(stdout|stderr)(:\d+)?$"),
             offset: int = Query(0, ge=0), limit: int = Query(1 << 20, ge=1, le=8 << 20),
             p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    job = _visible_job(request, job_id, p)
    if job.allocation is None:
        return {"data": "", "next_offset": offset, "eof": job.state.terminal, "state": job.state.value}
    c = container(request)
    chunk = c.reconciler.executor_for_pool(job.allocation.pool_id).logs(job.request_id, stream, offset, limit)
    if isinstance(chunk, ExecError):
        return {"data": "", "next_offset": offset, "eof": job.state.terminal, "state": job.state.value,
                "error": chunk.message}
    return {"data": chunk.data.decode("utf-8", "replace"), "next_offset": chunk.next_offset,
            "eof": chunk.eof and job.state.terminal, "state": job.state.value}


@router.post("/jobs/{job_id}/cancel", status_code=202)
async def cancel(request: Request, job_id: str, p: Principal = Depends(require(*SUBMITTERS))) -> dict[str, Any]:
    job = _visible_job(request, job_id, p)
    if job.state.terminal:
        return job_out(job)
    c = container(request)
    job = c.store.request_cancel(job_id, c.clock.now())
    c.reconciler.wake()
    return job_out(job)

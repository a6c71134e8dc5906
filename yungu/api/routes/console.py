"""What the web console needs beyond the area APIs, as documented endpoints:

- ``POST /quote``: the scheduler's options for a job that is *not* submitted (one-click run):
  the same engine and explanation as ``GET /jobs/{id}/explain``, on the control loop's
  current view of capacity and energy signals; optionally restricted to some regions. Peer
  platforms' offers join the list where federation is wired (the container's ``peer_quotes``).
- ``GET /jobs/{id}/logs/stream``: a job's log as server-sent events until it finishes.
- ``GET /usage/summary?start&end``: my jobs, spend, kWh and green share over a time range.
- ``GET /market/orders``, ``GET /market/auctions``: order book and auction results (read-only).
- ``GET /policies``: the scheduling policy in force (operators).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.openapi import SSE_RESPONSES
from yungu.api.routes.explain import explanation_json
from yungu.api.routes.ledger import STAFF, money, services
from yungu.api.routes.overview import parse_range
from yungu.api.schemas import JobIn
from yungu.control.billing import wallet
from yungu.control.reconciler import ACTIVE, WAITING
from yungu.domain.errors import InvalidInput, NotFound
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.tenancy import Principal, Role
from yungu.engines.federation.offers import split_remote
from yungu.engines.scheduler.pool_state import pool_states
from yungu.engines.scheduler.types import Snapshot
from yungu.ports.executor import ExecError

router = APIRouter(tags=["console"])
SUBMITTERS = (Role.TENANT, Role.OPERATOR)

# Federation seam: ``container.peer_quotes`` may hold a callable
# ``(spec: JobSpec, tenant_id: str) -> list[dict]`` returning peer platforms' options in the
# shape of ``explanation_json`` alternatives plus ``platform_id``; they are listed after ours.
PeerQuotes = Callable[[JobSpec, str], list[dict[str, Any]]]


class QuoteIn(JobIn):
    regions: list[str] = Field(default_factory=list, max_length=64,
                               description="allowed regions (empty: all) / 允许的区域")
    platforms: list[str] = Field(default_factory=list, max_length=64,
                                 description="allowed peer platforms (empty: this one and every peer)")


def _check_spec(c: Any, body: JobIn) -> JobSpec:
    spec = body.to_spec()
    spec.validate()
    if spec.pool and spec.pool not in {pool.id for pool in c.world.pools}:
        raise InvalidInput(f"unknown pool {spec.pool!r}; see GET /api/v1/pools")
    for acc in spec.resources.accelerator_types:
        c.catalogue.get(acc)
    if spec.data_location and spec.data_location not in {r.id for r in c.world.regions}:
        raise InvalidInput(f"unknown region {spec.data_location!r} in data_location")
    return spec


def quote_doc(c: Any, p: Principal, body: QuoteIn) -> dict[str, Any]:
    spec = _check_spec(c, body)
    known = {r.id for r in c.world.regions}
    bad = [r for r in body.regions if r not in known]
    if bad:
        raise InvalidInput(f"unknown region(s) {', '.join(bad)}; see GET /api/v1/regions / 未知区域")
    world = c.world
    if body.regions:
        keep = set(body.regions)
        world = dataclasses.replace(world, pools=tuple(x for x in world.pools
                                                       if world.site(x.site_id).region_id in keep))
    now = c.clock.now()
    tenant = p.tenant_id or body.tenant_id or ""
    job = Job(id=f"quote-{c.ids.new()}", platform_id=c.world.platform_id, tenant_id=tenant, spec=spec,
              state=JobState.QUEUED, submitted_at=now, updated_at=now)
    rec = c.reconciler
    everything = list(c.store.in_states(ACTIVE))
    active = [j for j in everything if j.allocation is None or j.allocation.pool_id in {x.id for x in world.pools}]
    pools = pool_states(world, active)
    signals: Mapping[str, object] = rec.signals(now) if rec.signals else {}
    here = c.world.platform_id
    fed = c.federation
    if fed is not None and (not body.platforms or any(x != here for x in body.platforms)):
        # Peers' offers as pools, exactly as the control loop sees them (issue 12).
        world, pools, signals = fed.extend_snapshot(now, world, pools, signals, everything)
    snap = Snapshot(now=now, world=world, catalogue=c.catalogue, pools=pools,
                    pending=(job,), running=tuple(active), signals=signals)
    e = rec.scheduler.explain(snap, job.id)
    doc = explanation_json(e)
    for a in doc["alternatives"]:
        remote = split_remote(a["pool_id"])
        a["platform_id"] = remote[0] if remote else here
        a["region_id"] = world.region_of_pool(a["pool_id"])
    doc["alternatives"] = [a for a in doc["alternatives"]
                           if (not body.platforms or a["platform_id"] in body.platforms)
                           and (not body.regions or a["region_id"] in body.regions)]
    peer_quotes: PeerQuotes | None = c.peer_quotes
    peers: list[dict[str, Any]] = []
    if peer_quotes is not None:
        try:
            peers = [x for x in peer_quotes(spec, tenant)
                     if not body.platforms or x.get("platform_id") in body.platforms]
        except Exception as exc:  # a peer failing to quote leaves our own options
            doc["peer_error"] = f"{type(exc).__name__}: {exc}"[:300]
    doc["alternatives"] += peers
    doc.pop("job_id", None)
    return {"quote": True, "submitted": False, "platform_id": here, "regions": body.regions or sorted(known),
            "basis": "same engine as GET /jobs/{id}/explain, on the control loop's capacity and forecasts now; "
                     "estimates, not a price commitment", **doc}


@router.post("/quote")
def quote(request: Request, body: QuoteIn = Body(...), p: Principal = Depends(require(*SUBMITTERS))) -> dict[str, Any]:
    """Ask the scheduler where and when a job would run, and at what cost and carbon, without submitting it.

    To confirm an option, submit the job with ``pool`` set to the option's pool (and
    ``earliest_start`` to its start when it waits): ``POST /jobs``."""
    return quote_doc(container(request), p, body)


# --------------------------------------------------------------------------- live logs
def _visible(c: Any, p: Principal, job_id: str) -> Job:
    job: Job = c.store.get(job_id)
    if not p.may_access_tenant(job.tenant_id):
        raise NotFound(f"no job {job_id}")
    return job


def _log_chunk(c: Any, job: Job, stream: str, offset: int) -> tuple[str, int, bool]:
    if job.allocation is None:
        return "", offset, job.state.terminal
    chunk = c.reconciler.executor_for_pool(job.allocation.pool_id).logs(job.request_id, stream, offset, 256 << 10)
    if isinstance(chunk, ExecError):
        return "", offset, job.state.terminal
    return chunk.data.decode("utf-8", "replace"), chunk.next_offset, chunk.eof


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.get("/jobs/{job_id}/logs/stream", responses=SSE_RESPONSES)
async def log_stream(request: Request, job_id: str,
                     stream: str = Query("stdout", pattern=r"^(stdout|stderr)(:\d+)?$"),
                     offset: int = Query(0, ge=0),
                     p: Principal = Depends(require(*ANY_ROLE))) -> StreamingResponse:
    """Server-sent events: ``log`` (``data``, ``offset``) as output arrives, ``state`` on every
    change, and ``end`` once the job is finished and its log read to the end. Reconnect with
    ``offset`` (or the ``Last-Event-ID`` the browser sends) to resume."""
    c = container(request)
    job = await run_in_threadpool(_visible, c, p, job_id)
    last = request.headers.get("last-event-id", "")
    if last.isdigit():
        offset = max(offset, int(last))

    async def gen() -> Any:
        nonlocal offset, job
        state = None
        idle = 0
        while not await request.is_disconnected():
            job = await run_in_threadpool(c.store.get, job_id)
            if job.state.value != state:
                state = job.state.value
                yield _sse("state", {"state": state, "exit_code": job.exit_code, "reason": job.reason})
            data, nxt, eof = await run_in_threadpool(_log_chunk, c, job, stream, offset)
            if data:
                offset = nxt
                yield f"id: {offset}\n".encode() + _sse("log", {"data": data, "offset": offset})
                idle = 0
                continue
            if job.state.terminal and eof:
                yield _sse("end", {"state": job.state.value, "exit_code": job.exit_code, "offset": offset})
                return
            idle += 1
            if idle % 60 == 0:
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.25)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --------------------------------------------------------------------------- energy, when ready
@router.get("/jobs/{job_id}/energy")
def job_energy_when_ready(request: Request, job_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    """The job's energy and carbon report (as ``GET /energy/jobs/{id}``), or ``available: false``
    while no node agent has reported for it yet (running, or shorter than one sample), so a page
    can poll without treating "not yet" as an error."""
    from yungu.adapters.telemetry.reports import job_report
    from yungu.api.routes.telemetry import telemetry_store

    c = container(request)
    job = _visible(c, p, job_id)
    try:
        doc, _ = job_report(telemetry_store(c), c.world, job_id)
    except NotFound as exc:
        return {"job_id": job_id, "available": False, "state": job.state.value, "reason": exc.message}
    return {"available": True, "state": job.state.value, **doc}


# --------------------------------------------------------------------------- usage summary
def summary_doc(c: Any, p: Principal, tenant: str | None, start: datetime, end: datetime) -> dict[str, Any]:
    if not p.role.can_see_all_tenants():
        tenant = p.tenant_id or "\0"
    per_pool = c.read_models.usage_totals(tenant, start, end)
    gross = sum(x["gross_fen"] for x in per_pool.values())
    kwh = sum((x.get("facility_kwh", Decimal(0)) for x in per_pool.values()), Decimal(0))
    green = Decimal(0)
    for pool_id, x in per_pool.items():
        try:
            share = c.world.site(c.world.pool(pool_id).site_id).green_contract_share
        except KeyError:
            continue
        green += x.get("facility_kwh", Decimal(0)) * Decimal(repr(share))
    if tenant is None:
        counts = c.store.counts()
        running = counts.get("running", 0) + counts.get("dispatched", 0)
        queued = sum(counts.get(s.value, 0) for s in (*WAITING, JobState.SCHEDULED))
    else:
        act = c.store.page(tenant, list(ACTIVE), None, 500)
        wait = c.store.page(tenant, list(WAITING), None, 500)
        running = sum(1 for j in act if j.state in (JobState.RUNNING, JobState.DISPATCHED))
        queued = len(wait) + sum(1 for j in act if j.state is JobState.SCHEDULED)
    balance = None
    if tenant and tenant != "\0":
        try:
            a, b = services(c).ledger.account(wallet(tenant))
            balance = {"balance": money(b.posted), "available": money(b.available), "currency": a.currency}
        except NotFound:  # no wallet yet: nothing paid in
            balance = None
    return {
        "tenant_id": tenant, "range": {"start": start.isoformat(), "end": end.isoformat()},
        "jobs": {"running": running, "queued": queued, "metered": sum(x["jobs"] for x in per_pool.values()),
                 "method": "measured"},
        "spend": {"amount": money(gross), "currency": "CNY", "method": "measured",
                  "basis": "rated usage of jobs that ended in the range (tax inclusive)"},
        "energy": {"facility_kwh": str(kwh.quantize(Decimal("0.000001"))), "method": "measured",
                   "basis": "metered facility kWh of jobs that ended in the range"},
        "green": {"share": float(green / kwh) if kwh else None, "green_kwh": str(green.quantize(Decimal("0.000001"))),
                  "method": "modelled", "basis": "market-based: each site's contracted green share x metered kWh"},
        "wallet": balance,
    }


@router.get("/usage/summary")
def usage_summary(request: Request, start: str | None = None, end: str | None = None,
                  tenant: str | None = None, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    """Jobs, spend, kWh and green share over ``[start, end)`` (default: this month in Asia/Shanghai)."""
    c = container(request)
    if start is None:
        from yungu.api.routes.overview import SHANGHAI

        m0 = c.clock.now().astimezone(SHANGHAI).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = m0.isoformat()
    s, e = parse_range(c, start, end)
    return summary_doc(c, p, tenant, s, e)


# --------------------------------------------------------------------------- market reads
@router.get("/market/orders")
def list_orders(request: Request, limit: int = Query(100, ge=1, le=1000),
                p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    party = None if p.role.can_see_all_tenants() else (p.tenant_id or "\0")
    rows = c.read_models.orders(party, limit)
    return {"items": [{"id": r["id"], "product": r["product"], "side": r["side"], "party": r["party"],
                       "pool_id": r["pool_id"] or None, "quantity": r["quantity"], "price": money(r["price_fen"]),
                       "filled": r["filled"], "auction_id": r["auction_id"],
                       "created_at": r["created_at"].isoformat()} for r in rows]}


@router.get("/market/auctions")
def list_auctions(request: Request, start: str | None = None, limit: int = Query(100, ge=1, le=1000),
                  _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    since = parse_range(c, start, None)[0] if start else None
    rows = c.read_models.recent_auctions(limit, since)
    return {"items": [{"id": r["id"], "product": r["product"], "region": r["region"],
                       "accelerator_class": r["accelerator_class"], "window_start": r["window_start"].isoformat(),
                       "window_end": r["window_end"].isoformat(), "cleared_at": r["cleared_at"].isoformat(),
                       "price": None if r["price_fen"] is None else money(r["price_fen"]), "volume": r["volume"],
                       "orders": r["orders"]} for r in rows]}


# --------------------------------------------------------------------------- policies
def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {(".".join(k) if isinstance(k, tuple) else str(k)): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_plain(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


@router.get("/policies")
def policies(request: Request, _p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """The scheduling policy in force (weights, latency, time shift, backfill, preemption, tenants)."""
    c = container(request)
    return {"scheduler": c.reconciler.scheduler.name, "policy": _plain(c.config.policy),
            "source": c.config.source}

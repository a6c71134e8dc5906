"""The platform at a glance: capacity per compute class, load, power, energy, green share,
carbon, jobs, flows between regions, trades. What the big screen (``/screen``) shows, as
documented endpoints any dashboard can read (Grafana included):

- ``GET /capacity``: declared and in-use PFLOPS per compute class, precision, region and pool;
- ``GET /overview?start&end``: everything on the big screen for a time range (default: today
  in Asia/Shanghai up to now);
- ``GET /overview/stream``: the same document pushed as server-sent events once a second;
- ``GET /flows?start&end``: jobs as arcs from the region they came from to the region they run in;
- ``GET /activity?start&end``: the ticker: cleared auctions (trades) and booked charges (settlements).

Every figure carries ``method``: ``declared`` (configuration), ``measured`` (node agents,
allocations), or ``modelled`` (energy model, modelled grid feeds), with its ``basis``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from yungu.adapters.telemetry.reports import site_signals
from yungu.api import readmodels
from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.routes.ledger import money, services
from yungu.api.routes.telemetry import telemetry_store
from yungu.control.capacity import pool_load
from yungu.control.reconciler import ACTIVE
from yungu.domain.catalogue import Precision
from yungu.domain.errors import InvalidInput
from yungu.domain.job import Job
from yungu.domain.tenancy import Principal, Role
from yungu.domain.world import ComputeClass, Pool
from yungu.engines.energy.accounting import account

router = APIRouter(tags=["overview"])
SHANGHAI = ZoneInfo("Asia/Shanghai")
CLASS_PRECISION = {ComputeClass.GENERAL: Precision.FP64, ComputeClass.INTELLIGENT: Precision.FP16,
                   ComputeClass.SUPERCOMPUTING: Precision.FP64}
ORIGIN_LABEL = "origin"  # spec.labels["origin"]: the region a job was submitted from
FRESH_S = 60  # a node whose last sample is older does not count toward power now
STREAM_INTERVAL_S = 1.0


# --------------------------------------------------------------------------- helpers
def parse_range(c: Any, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    now = c.clock.now()

    def one(v: str) -> datetime:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"bad time {v!r}: use ISO 8601, e.g. 2026-03-01T00:00:00+08:00") from exc
        if t.tzinfo is None:
            raise InvalidInput(f"time {v!r} has no zone; add Z or +08:00 / 时间需带时区")
        return t.astimezone(UTC)

    e = one(end) if end else now
    s = one(start) if start else now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    s = s.astimezone(UTC)
    if e <= s:
        raise InvalidInput("end must be after start / 结束时间须晚于开始时间")
    if e - s > timedelta(days=31):
        raise InvalidInput("at most 31 days per query / 每次最多查询 31 天")
    return s, e


def pool_pflops(c: Any, pool: Pool, precision: Precision) -> float:
    """Peak PFLOPS of a pool at one precision (accelerators, or CPU nodes for CPU pools)."""
    if not pool.accelerator or pool.accelerator not in c.catalogue:
        return 0.0
    spec = c.catalogue.get(pool.accelerator)
    units = pool.total_devices if pool.accelerators_per_node else pool.nodes
    return float(units * spec.peak(precision) / 1000.0)


def pool_in_use_share(pool: Pool, load: dict[str, int]) -> float:
    if pool.accelerators_per_node:
        return load["devices_used"] / pool.total_devices if pool.total_devices else 0.0
    return load["cpus_used"] / pool.total_cpus if pool.total_cpus else 0.0


def origin_region(c: Any, job: Job) -> str:
    o = job.spec.labels.get(ORIGIN_LABEL) or job.spec.data_location
    regions = {r.id for r in c.world.regions}
    if o in regions:
        return str(o)
    return str(next((r.id for r in c.world.regions if r.home), c.world.regions[0].id))


def _r(x: float, n: int = 3) -> float:
    return round(float(x), n)


# --------------------------------------------------------------------------- capacity
def capacity_doc(c: Any, active: list[Job] | None = None) -> dict[str, Any]:
    active = c.store.in_states(ACTIVE) if active is None else active
    load = pool_load(c.world, active)
    classes: dict[str, dict[str, Any]] = {}
    regions: dict[str, dict[str, Any]] = {}
    pools = []
    for cc in ComputeClass:
        prec = CLASS_PRECISION[cc]
        classes[cc.value] = {"name_zh": cc.zh, "precision": prec.value, "declared_pflops": 0.0,
                             "in_use_pflops": 0.0, "pools": 0}
    for r in c.world.regions:
        regions[r.id] = {"declared_pflops": {cc.value: 0.0 for cc in ComputeClass},
                         "in_use_pflops": {cc.value: 0.0 for cc in ComputeClass},
                         "devices_total": 0, "devices_used": 0, "cpus_total": 0, "cpus_used": 0, "jobs": 0}
    for p in c.world.pools:
        per_prec = {x.value: _r(pool_pflops(c, p, x)) for x in Precision}
        share = pool_in_use_share(p, load[p.id])
        cls = classes[p.compute_class.value]
        headline = pool_pflops(c, p, CLASS_PRECISION[p.compute_class])
        cls["declared_pflops"] += headline
        cls["in_use_pflops"] += headline * share
        cls["pools"] += 1
        reg = regions[c.world.site(p.site_id).region_id]
        reg["declared_pflops"][p.compute_class.value] += headline
        reg["in_use_pflops"][p.compute_class.value] += headline * share
        for k in ("devices_used", "cpus_used", "jobs"):
            reg[k] += load[p.id][k]
        reg["devices_total"] += p.total_devices
        reg["cpus_total"] += p.total_cpus
        pools.append({"id": p.id, "name": p.name, "site_id": p.site_id,
                      "region_id": c.world.site(p.site_id).region_id, "compute_class": p.compute_class.value,
                      "compute_class_zh": p.compute_class.zh, "accelerator": p.accelerator,
                      "nodes": p.nodes, "devices_total": p.total_devices, "cpus_total": p.total_cpus,
                      "pflops": per_prec, "declared_precision": p.declared_precision.value,
                      "in_use_share": _r(share, 4), **load[p.id]})
    for v in classes.values():
        v["declared_pflops"], v["in_use_pflops"] = _r(v["declared_pflops"]), _r(v["in_use_pflops"])
    for reg in regions.values():
        for k in ("declared_pflops", "in_use_pflops"):
            reg[k] = {cc: _r(x) for cc, x in reg[k].items()}
    dev_t = sum(p.total_devices for p in c.world.pools)
    cpu_t = sum(p.total_cpus for p in c.world.pools)
    return {
        "classes": classes, "regions": regions, "pools": pools,
        "utilisation": {
            "devices": _r(sum(x["devices_used"] for x in load.values()) / dev_t if dev_t else 0.0, 4),
            "cpus": _r(sum(x["cpus_used"] for x in load.values()) / cpu_t if cpu_t else 0.0, 4),
            "method": "measured", "basis": "allocated devices and CPUs over declared (control loop allocations)",
        },
        "method": "declared", "basis": "peak dense PFLOPS from the accelerator catalogue x declared devices; "
                                      "in use = declared x allocated share",
    }


@router.get("/capacity")
async def capacity(request: Request, _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    return await run_in_threadpool(capacity_doc, c)


# --------------------------------------------------------------------------- energy
def _site_power(c: Any, now: datetime) -> dict[str, dict[str, Any]]:
    """Per site: IT power now (sum of fresh nodes' last power) and how it was obtained."""
    st = telemetry_store(c)
    fresh_ms = (now.timestamp() - FRESH_S) * 1000
    out: dict[str, dict[str, Any]] = {s.id: {"it_w": 0.0, "nodes": 0, "method": "none"} for s in c.world.sites}
    for n in st.latest_by_node():
        if n["site_id"] not in out or n["last_seen_ms"] is None or n["last_seen_ms"] < fresh_ms:
            continue
        e = out[n["site_id"]]
        e["it_w"] += float(n["last_power_w"] or 0.0)
        e["nodes"] += 1
    for sid, e in out.items():
        if e["nodes"]:
            pts = st.query("site", sid, now - timedelta(seconds=FRESH_S), now, FRESH_S)
            e["method"] = "modelled" if any(p["method"] == "modelled" for p in pts) else "measured"
    return out


def _site_energy(c: Any, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """Per site over [start, end): IT energy per UTC hour (J) from telemetry, and accounting."""
    st = telemetry_store(c)
    s0 = start.replace(second=0, microsecond=0)
    out: dict[str, dict[str, Any]] = {}
    for site in c.world.sites:
        pts = st.query("site", site.id, s0, end, 60)
        hourly: dict[int, float] = defaultdict(float)
        modelled = False
        for p in pts:
            t = datetime.fromisoformat(p["t"])
            hourly[int(t.timestamp()) // 3600 * 3600] += p["power_w"] * 60.0
            modelled |= p["method"] == "modelled"
        e: dict[str, Any] = {"it_j": sum(hourly.values()), "method": "modelled" if modelled else "measured",
                             "facility_kwh": 0.0, "location_g": 0.0, "market_g": 0.0, "market_green_kwh": 0.0}
        if hourly:
            h0 = datetime.fromtimestamp(min(hourly), UTC)
            h1 = datetime.fromtimestamp(max(hourly) + 3600, UTC)
            ci, re, green, _src = site_signals(site, h0, h1)
            rep = account(dict(hourly), pue=site.pue, carbon_intensity=ci, renewable_share=re,
                          contracted_green=green)
            e.update(facility_kwh=rep.facility_kwh, location_g=rep.location.carbon_g, market_g=rep.market.carbon_g,
                     market_green_kwh=rep.market.green_kwh)
        out[site.id] = e
    return out


def _green_outlook(c: Any, now: datetime, weights: dict[str, float]) -> dict[str, Any]:
    """Market-based green share now and for the next 48 h per site and weighted (modelled feeds)."""
    h0 = now.replace(minute=0, second=0, microsecond=0)
    h1 = h0 + timedelta(hours=48)
    per_site: dict[str, list[float | None]] = {}
    for site in c.world.sites:
        _ci, re, green, _src = site_signals(site, h0, h1)
        vals: list[float | None] = []
        for i in range(48):
            t = h0 + timedelta(hours=i)
            g = green.at(t) if green is not None and green.covers(t) else None
            r = re.at(t) if re is not None and re.covers(t) else None
            # contracted green first; the rest of the supply is grid power at the grid's renewable share
            vals.append(None if g is None else g + (1.0 - g) * (r or 0.0))
        per_site[site.id] = vals
    forecast = []
    for i in range(48):
        num = den = 0.0
        for sid, vals in per_site.items():
            v = vals[i]
            if v is None:
                continue
            w = weights.get(sid, 0.0) if any(weights.values()) else 1.0
            num, den = num + w * v, den + w
        forecast.append({"t": (h0 + timedelta(hours=i)).isoformat(), "share": _r(num / den, 4) if den else None})
    return {"now": forecast[0]["share"], "forecast": forecast,
            "sites": {sid: (None if v[0] is None else _r(v[0], 4)) for sid, v in per_site.items()},
            "method": "modelled",
            "basis": "contracted green supply plus the grid's renewable share for the rest, hourly, per site "
                     "(modelled provincial feeds), weighted by facility power now (equal weights when idle)"}


# --------------------------------------------------------------------------- flows, ticker
def flows_doc(c: Any, active: list[Job], start: datetime, end: datetime, limit: int = 200) -> dict[str, Any]:
    recent = [j for j in c.store.finished_since(start, limit=2000) if j.finished_at and j.finished_at < end]
    jobs = [*active, *recent[-limit:]]
    arcs: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"running": 0, "finished": 0})
    items = []
    for j in jobs:
        if j.allocation is None:
            continue
        to = c.world.region_of_pool(j.allocation.pool_id)
        fr = origin_region(c, j)
        arcs[(fr, to)]["finished" if j.state.terminal else "running"] += 1
        items.append({"job_id": j.id, "from": fr, "to": to, "pool_id": j.allocation.pool_id,
                      "state": j.state.value, "at": (j.started_at or j.updated_at).isoformat()})
    items.sort(key=lambda x: x["at"], reverse=True)
    return {"arcs": [{"from": f, "to": t, **n} for (f, t), n in sorted(arcs.items())],
            "items": items[:limit], "method": "measured",
            "basis": f"origin = spec.labels['{ORIGIN_LABEL}'], else data_location, else the home region; "
                     "destination = region of the allocated pool"}


def activity_doc(c: Any, start: datetime, end: datetime, limit: int = 30) -> dict[str, Any]:
    items = []
    for a in readmodels.recent_auctions(c.engine, limit, start):
        if a["cleared_at"] >= end:
            continue
        items.append({"kind": "trade", "at": a["cleared_at"].isoformat(), "region": a["region"],
                      "product": a["product"], "accelerator_class": a["accelerator_class"],
                      "price": None if a["price_fen"] is None else money(a["price_fen"]),
                      "volume": a["volume"], "orders": a["orders"]})
    for u in readmodels.recent_usage(c.engine, limit, start):
        if u["ended_at"] >= end:
            continue
        items.append({"kind": "settlement", "at": u["ended_at"].isoformat(), "job_id": u["job_id"],
                      "pool_id": u["pool_id"], "region": c.world.region_of_pool(u["pool_id"])
                      if u["pool_id"] in {p.id for p in c.world.pools} else None,
                      "amount": money(u["gross"]), "facility_kwh": str(u["facility_kwh"]),
                      "booked": bool(u["booked"])})
    items.sort(key=lambda x: x["at"], reverse=True)
    return {"items": items[:limit], "method": "measured", "basis": "cleared call auctions; metered and rated usage"}


def price_index_doc(c: Any) -> dict[str, Any]:
    from yungu.engines.market.index import vwap

    pts = services(c).market.price_index(None)
    lines: dict[str, list[Any]] = {}
    for pt in pts:
        lines.setdefault(pt.product_line, []).append(pt)
    return {line: {"vwap": None if vwap(v) is None else money(vwap(v) or 0),
                   "points": [{"at": x.at.isoformat(), "price": money(x.price_fen), "volume": x.volume}
                              for x in v[-48:]]}
            for line, v in lines.items()}


# --------------------------------------------------------------------------- overview
_SLOW_TTL_S = 15.0  # energy today and the 48 h outlook change slowly: recomputed at most this often


def overview_doc(c: Any, start: datetime, end: datetime) -> dict[str, Any]:
    now = c.clock.now()
    active = c.store.in_states(ACTIVE)
    cap = capacity_doc(c, active)
    power = _site_power(c, now)
    cache = c.extras.setdefault("overview_slow", {})
    key = (start.isoformat(), end.isoformat() if end < now - timedelta(seconds=5) else "now")
    hit = cache.get(key)
    if hit is None or time.monotonic() - hit[0] > _SLOW_TTL_S:
        weights = {sid: p["it_w"] * c.world.site(sid).pue for sid, p in power.items()}
        hit = (time.monotonic(), _site_energy(c, start, end), _green_outlook(c, now, weights))
        if len(cache) > 16:
            cache.clear()
        cache[key] = hit
    _, energy, green = hit
    counts = c.store.counts()
    it_w = sum(p["it_w"] for p in power.values())
    fac_w = sum(p["it_w"] * c.world.site(sid).pue for sid, p in power.items())
    p_methods = {p["method"] for p in power.values() if p["nodes"]}
    e_methods = {e["method"] for e in energy.values() if e["it_j"] > 0}
    it_kwh = sum(e["it_j"] for e in energy.values()) / 3.6e6
    fac_kwh = sum(e["facility_kwh"] for e in energy.values())
    loc_g = sum(e["location_g"] for e in energy.values())
    mkt_g = sum(e["market_g"] for e in energy.values())
    regions = []
    for r in c.world.regions:
        sites = [s for s in c.world.sites if s.region_id == r.id]
        rc = cap["regions"][r.id]
        rp = sum(power[s.id]["it_w"] * s.pue for s in sites)
        gs = [green["sites"][s.id] for s in sites if green["sites"].get(s.id) is not None]
        regions.append({
            "id": r.id, "name": r.name, "name_zh": r.name_zh, "home": r.home,
            "sites": [s.id for s in sites], "pue": _r(sum(s.pue for s in sites) / len(sites), 3) if sites else None,
            "declared_pflops": rc["declared_pflops"], "in_use_pflops": rc["in_use_pflops"],
            "devices_total": rc["devices_total"], "devices_used": rc["devices_used"],
            "cpus_total": rc["cpus_total"], "cpus_used": rc["cpus_used"], "jobs_running": rc["jobs"],
            "facility_kw": _r(rp / 1000), "nodes_reporting": sum(power[s.id]["nodes"] for s in sites),
            "power_method": next((power[s.id]["method"] for s in sites if power[s.id]["nodes"]), "none"),
            "energy_today_kwh": _r(sum(energy[s.id]["facility_kwh"] for s in sites)),
            "green_share_now": _r(sum(gs) / len(gs), 4) if gs else None,
            "electricity_price_cny_per_kwh": str(sites[0].electricity_price_cny_per_kwh) if sites else None,
        })
    return {
        "at": now.isoformat(), "range": {"start": start.isoformat(), "end": end.isoformat()},
        "platform": {"id": c.world.platform_id, "name": c.world.platform_name},
        "capacity": {"classes": cap["classes"], "method": cap["method"], "basis": cap["basis"]},
        "utilisation": cap["utilisation"],
        "power": {"it_kw": _r(it_w / 1000), "facility_kw": _r(fac_w / 1000),
                  "nodes_reporting": sum(p["nodes"] for p in power.values()),
                  "method": "modelled" if "modelled" in p_methods else ("measured" if p_methods else "none"),
                  "basis": "last sample of every node agent seen in the last minute; facility = IT x site PUE"},
        "energy": {"it_kwh": _r(it_kwh, 4), "facility_kwh": _r(fac_kwh, 4),
                   "method": "modelled" if "modelled" in e_methods else ("measured" if e_methods else "none"),
                   "basis": "node telemetry integrated per minute over the range; facility = IT x site PUE"},
        "pue": {"value": _r(fac_w / it_w, 3) if it_w > 0 else
                _r(sum(s.pue for s in c.world.sites) / len(c.world.sites), 3),
                "method": "declared", "basis": "sites' declared PUE, weighted by IT power now"},
        "green": green,
        "carbon": {"location_kg": _r(loc_g / 1000, 4), "market_kg": _r(mkt_g / 1000, 4),
                   "avoided_kg": _r((loc_g - mkt_g) / 1000, 4), "method": "modelled",
                   "basis": "avoided = location-based (grid average intensity, hourly) minus market-based "
                            "(contracted green power at zero), over the range's metered facility energy"},
        "jobs": {"running": counts.get("running", 0) + counts.get("dispatched", 0),
                 "queued": counts.get("queued", 0) + counts.get("pending", 0) + counts.get("scheduled", 0),
                 "by_state": counts, "method": "measured"},
        "regions": regions,
        "flows": flows_doc(c, active, max(start, now - timedelta(minutes=10)), end),
        "activity": activity_doc(c, start, end),
        "price_index": price_index_doc(c),
        "peers": peers_doc(c),
    }


def peers_doc(c: Any) -> list[dict[str, Any]]:
    """Peer platforms, where federation is wired (``extras["peers"]``: a callable returning dicts)."""
    peers = c.extras.get("peers")
    try:
        return list(peers()) if callable(peers) else []
    except Exception:  # a peer listing failure must not blank the screen
        return []


STAFF_VIEW = (Role.OPERATOR,)


@router.get("/overview")
async def overview(request: Request, start: str | None = None, end: str | None = None,
                   _p: Principal = Depends(require(*STAFF_VIEW))) -> Any:
    c = container(request)
    s, e = parse_range(c, start, end)
    from fastapi.responses import Response

    doc = await run_in_threadpool(overview_doc, c, s, e)
    return Response(orjson.dumps(doc), media_type="application/json")


def _shared_live(c: Any) -> bytes:
    """The live document, computed at most once per interval whoever is watching."""
    slot = c.extras.setdefault("overview_live", {"at": 0.0, "body": b""})
    if time.monotonic() - slot["at"] >= STREAM_INTERVAL_S * 0.9:
        s, e = parse_range(c, None, None)
        slot["body"] = orjson.dumps(overview_doc(c, s, e))
        slot["at"] = time.monotonic()
    return slot["body"]  # type: ignore[no-any-return]


@router.get("/overview/stream")
async def overview_stream(request: Request, _p: Principal = Depends(require(*STAFF_VIEW))) -> StreamingResponse:
    """Server-sent events: ``event: overview`` with the ``/overview`` document (today so far), every second."""
    c = container(request)

    async def gen() -> Any:
        lock = c.extras.setdefault("overview_lock", asyncio.Lock())
        while not await request.is_disconnected():
            async with lock:
                body = await run_in_threadpool(_shared_live, c)
            yield b"event: overview\ndata: " + body + b"\n\n"
            await asyncio.sleep(STREAM_INTERVAL_S)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/flows")
async def flows(request: Request, start: str | None = None, end: str | None = None,
                limit: int = Query(200, ge=1, le=2000),
                _p: Principal = Depends(require(*STAFF_VIEW))) -> dict[str, Any]:
    c = container(request)
    s, e = parse_range(c, start, end)
    active = await run_in_threadpool(c.store.in_states, ACTIVE)
    return await run_in_threadpool(flows_doc, c, active, s, e, limit)


@router.get("/activity")
async def activity(request: Request, start: str | None = None, end: str | None = None,
                   limit: int = Query(30, ge=1, le=500),
                   _p: Principal = Depends(require(*STAFF_VIEW))) -> dict[str, Any]:
    c = container(request)
    s, e = parse_range(c, start, end)
    return await run_in_threadpool(activity_doc, c, s, e, limit)


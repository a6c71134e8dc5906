"""Regions, sites and pools, with declared capacity and current load."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request

from yungu.api.deps import ANY_ROLE, container, require
from yungu.control.capacity import pool_load
from yungu.control.reconciler import ACTIVE
from yungu.domain.catalogue import Precision
from yungu.domain.tenancy import Principal, Role

router = APIRouter(tags=["world"])
log = logging.getLogger("yungu.api")


@router.get("/regions")
async def regions(request: Request, _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    w = container(request).world
    return {"items": [{"id": r.id, "name": r.name, "name_zh": r.name_zh, "home": r.home, "province": r.province}
                      for r in w.regions]}


@router.get("/sites")
async def sites(request: Request, _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    load = pool_load(c.world, c.store.in_states(ACTIVE))
    items = []
    for s in c.world.sites:
        pools = [p for p in c.world.pools if p.site_id == s.id]
        items.append({
            "id": s.id, "region_id": s.region_id, "name": s.name, "name_zh": s.name_zh, "provider": s.provider,
            "lat": s.lat, "lon": s.lon, "pue": s.pue, "executor": s.executor,
            "electricity_price_cny_per_kwh": str(s.electricity_price_cny_per_kwh),
            "green_contract_share": s.green_contract_share, "energy_feed": s.energy_feed,
            "pools": len(pools),
            "devices_total": sum(p.total_devices for p in pools),
            "devices_used": sum(load[p.id]["devices_used"] for p in pools),
            "cpus_total": sum(p.total_cpus for p in pools),
            "cpus_used": sum(load[p.id]["cpus_used"] for p in pools),
            "jobs_running": sum(load[p.id]["jobs"] for p in pools),
        })
    return {"items": items}


@router.get("/pools")
async def pools(request: Request, _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    load = pool_load(c.world, c.store.in_states(ACTIVE))
    items = []
    for p in c.world.pools:
        spec = c.catalogue.get(p.accelerator) if p.accelerator else None
        if spec and p.accelerators_per_node:
            pflops = p.total_devices * spec.peak(p.declared_precision) / 1000
        elif spec:
            pflops = p.nodes * spec.peak(p.declared_precision) / 1000
        else:
            pflops = 0.0
        items.append({
            "id": p.id, "site_id": p.site_id, "region_id": c.world.site(p.site_id).region_id, "name": p.name,
            "compute_class": p.compute_class.value, "compute_class_zh": p.compute_class.zh,
            "accelerator": p.accelerator, "accelerators_per_node": p.accelerators_per_node, "nodes": p.nodes,
            "cpus_per_node": p.cpus_per_node, "memory_gb_per_node": p.memory_gb_per_node,
            "devices_total": p.total_devices, "cpus_total": p.total_cpus,
            "declared_pflops": round(pflops, 3), "declared_precision": p.declared_precision.value,
            "price_cny_per_device_hour": str(p.price_cny_per_device_hour),
            "price_cny_per_cpu_hour": str(p.price_cny_per_cpu_hour),
            **load[p.id],
        })
    return {"items": items, "precisions": [x.value for x in Precision]}


@router.get("/sites/check")
def sites_check(request: Request, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """Ask each site's executor whether it is reachable and what capacity it sees, beside
    the capacity the config declares for that site's pools."""
    c = container(request)
    reports: dict[str, Any] = {}
    for name, ex in c.executors.items():
        try:
            reports[name] = dict(ex.check())
        except Exception:  # an adapter bug must not hide the other sites (nor reach the client)
            log.exception("check of executor %s failed", name)
            reports[name] = {"reachable": False, "error": "the check failed; see the server log / 检查失败，见服务器日志"}
    items = []
    for s in c.world.sites:
        pools = [p for p in c.world.pools if p.site_id == s.id]
        seen = reports.get(s.executor, {"reachable": False, "error": f"no executor {s.executor!r}"})
        items.append({
            "site_id": s.id, "executor": s.executor,
            "executor_kind": c.config.executors.get(s.executor, {}).get("type"),
            "reachable": bool(seen.get("reachable")),
            "declared": {"nodes": sum(p.nodes for p in pools), "cpus": sum(p.total_cpus for p in pools),
                         "devices": sum(p.total_devices for p in pools),
                         "memory_gb": sum(p.nodes * p.memory_gb_per_node for p in pools)},
            "engine": seen,
        })
    return {"items": items}

"""Alerts: node silent, power anomaly, pool over declared capacity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from yungu.adapters.telemetry.alerts_store import list_alerts, refresh
from yungu.api.deps import container, require
from yungu.api.routes.telemetry import telemetry_store
from yungu.domain.tenancy import Principal, Role

router = APIRouter(tags=["alerts"])


@router.get("/alerts")
def alerts(
    request: Request,
    include_resolved: bool = False,
    silent_after_s: float = Query(60.0, gt=0, le=366 * 86400, allow_inf_nan=False),
    _p: Principal = Depends(require(Role.OPERATOR, Role.PROVIDER)),
) -> dict[str, Any]:
    """Re-evaluates the rules now, then lists open (or all) alerts."""
    c = container(request)
    st = telemetry_store(c)
    refresh(st, c.world, c.catalogue, c.clock.now(), silent_after_s)
    return {"items": list_alerts(st, include_resolved)}

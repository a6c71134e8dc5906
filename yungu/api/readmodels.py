"""Read-only queries behind the console and big-screen endpoints (time ranges, recent rows).

Each is one indexed SELECT over tables other areas own; nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from yungu.adapters.store.ledger_tables import auctions, market_orders, usage_records

U = usage_records.c


def usage_totals(engine: Engine, tenant_id: str | None, start: datetime, end: datetime) -> dict[str, Any]:
    """Gross charges (fen), facility kWh and jobs metered for usage that ended in [start, end)."""
    where = and_(U.ended_at >= start, U.ended_at < end)
    if tenant_id is not None:
        where = and_(where, U.tenant_id == tenant_id)
    q = select(U.pool_id, func.sum(U.gross), func.count(), func.sum(U.device_seconds)).where(where).group_by(U.pool_id)
    per_pool: dict[str, dict[str, Any]] = {}
    with engine.connect() as c:
        for pool_id, gross, n, dev_s in c.execute(q):
            per_pool[pool_id] = {"gross_fen": int(gross or 0), "jobs": int(n), "device_seconds": int(dev_s or 0)}
        # kWh summed exactly (Decimal strings): SQL SUM over a decimal column would be a float on SQLite
        for pool_id, kwh in c.execute(select(U.pool_id, U.facility_kwh).where(where)):
            e = per_pool[pool_id]
            e["facility_kwh"] = e.get("facility_kwh", Decimal(0)) + Decimal(kwh)
    return per_pool


def recent_usage(engine: Engine, limit: int, since: datetime | None = None) -> list[dict[str, Any]]:
    q = select(U.id, U.tenant_id, U.job_id, U.pool_id, U.provider, U.gross, U.facility_kwh, U.ended_at, U.booked)
    if since is not None:
        q = q.where(U.ended_at >= since)
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q.order_by(U.ended_at.desc()).limit(limit))]


def recent_auctions(engine: Engine, limit: int, since: datetime | None = None) -> list[dict[str, Any]]:
    a = auctions.c
    q = select(auctions)
    if since is not None:
        q = q.where(a.cleared_at >= since)
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q.order_by(a.cleared_at.desc()).limit(limit))]


def orders(engine: Engine, party: str | None, limit: int) -> list[dict[str, Any]]:
    o = market_orders.c
    q = select(market_orders).order_by(o.created_at.desc()).limit(limit)
    if party is not None:
        q = q.where(o.party == party)
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]

"""Alert bookkeeping: evaluate the pure rules, keep first/last seen, resolve what cleared."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from yungu.adapters.store.telemetry_tables import telemetry_alerts
from yungu.adapters.telemetry.store import TelemetryStore
from yungu.domain.catalogue import Catalogue
from yungu.domain.ids import uuid7
from yungu.domain.world import World
from yungu.engines.energy.alerts import NodeState, PoolLimit, evaluate

RULE_KINDS = ("node_silent", "power_anomaly", "pool_over_capacity")  # what ``evaluate`` raises


def pool_limits(world: World, catalogue: Catalogue) -> dict[str, PoolLimit]:
    out = {}
    for p in world.pools:
        watts = 0.0
        if p.accelerator and p.accelerator in catalogue:
            spec = catalogue.get(p.accelerator)
            watts = spec.tdp_w * (p.accelerators_per_node or 1)
        watts += 700.0 if p.accelerators_per_node else 0.0  # host CPUs of an accelerator node (2 x 350 W)
        out[p.id] = PoolLimit(p.id, p.nodes, max(watts, 1.0))
    return out


def refresh(
    store: TelemetryStore, world: World, catalogue: Catalogue, now: datetime, silent_after_s: float = 60.0
) -> list[dict[str, Any]]:
    nodes = [
        NodeState(
            n["node_id"],
            n["pool_id"],
            None if n["last_seen_ms"] is None else n["last_seen_ms"] / 1000,
            n["last_power_w"],
        )
        for n in store.latest_by_node()
    ]
    current = {
        (a.kind, a.subject): a
        for a in evaluate(
            nodes, pool_limits(world, catalogue), now.timestamp(), silent_after_s=silent_after_s
        )
    }
    t = telemetry_alerts.c
    with store.engine.begin() as c:
        open_rows = {
            (r.kind, r.subject): r
            # Only the kinds these rules raise: other areas' alerts (billing) resolve themselves.
            for r in c.execute(select(telemetry_alerts).where(t.resolved_at.is_(None),
                                                              t.kind.in_(RULE_KINDS))).all()
        }
        for key, a in current.items():
            if key in open_rows:
                c.execute(
                    update(telemetry_alerts)
                    .where(t.id == open_rows[key].id)
                    .values(last_seen=now, message=a.message)
                )
            else:
                c.execute(telemetry_alerts.insert().values(id=uuid7(int(time.time() * 1000), secrets.token_bytes(10)), kind=a.kind, subject=a.subject, severity=a.severity,
                                                           message=a.message, first_seen=now, last_seen=now))  # fmt: skip
        for key, r in open_rows.items():
            if key not in current:
                c.execute(update(telemetry_alerts).where(t.id == r.id).values(resolved_at=now))
    return list_alerts(store)


def list_alerts(
    store: TelemetryStore, include_resolved: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    t = telemetry_alerts.c
    q = select(telemetry_alerts).order_by(t.first_seen.desc()).limit(limit)
    if not include_resolved:
        q = q.where(t.resolved_at.is_(None))
    with store.engine.connect() as c:
        return [
            {"id": r.id, "kind": r.kind, "subject": r.subject, "severity": r.severity, "message": r.message,
             "first_seen": r.first_seen.isoformat(), "last_seen": r.last_seen.isoformat(),
             "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None}
            for r in c.execute(q).all()
        ]  # fmt: skip

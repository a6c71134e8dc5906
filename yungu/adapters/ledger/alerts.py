"""Billing alerts in the platform's alert list (the ``telemetry_alerts`` table, ``GET /alerts``).

One open alert per (kind, subject): raising it again updates its message and last-seen time;
resolving stamps ``resolved_at``. The telemetry rules' refresh leaves these kinds alone.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from yungu.adapters.store.telemetry_tables import telemetry_alerts as AL
from yungu.domain.ids import uuid7


class TableAlerts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def raise_alert(self, kind: str, subject: str, severity: str, message: str, now: datetime) -> None:
        with self.engine.begin() as c:
            row = c.execute(select(AL.c.id).where(AL.c.kind == kind, AL.c.subject == subject,
                                                  AL.c.resolved_at.is_(None))).first()
            if row is not None:
                c.execute(update(AL).where(AL.c.id == row.id).values(last_seen=now, message=message,
                                                                     severity=severity))
            else:
                c.execute(AL.insert().values(id=uuid7(int(now.timestamp() * 1000), secrets.token_bytes(10)),
                                             kind=kind, subject=subject[:128], severity=severity, message=message,
                                             first_seen=now, last_seen=now))

    def resolve_alert(self, kind: str, subject: str, now: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(update(AL).where(AL.c.kind == kind, AL.c.subject == subject, AL.c.resolved_at.is_(None))
                      .values(resolved_at=now))

    def open_alerts(self, kind: str) -> list[dict[str, object]]:
        with self.engine.connect() as c:
            rows = c.execute(select(AL).where(AL.c.kind == kind, AL.c.resolved_at.is_(None))
                             .order_by(AL.c.first_seen)).all()
        return [{"subject": r.subject, "severity": r.severity, "message": r.message} for r in rows]

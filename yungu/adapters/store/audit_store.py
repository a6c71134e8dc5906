"""The audit log: who moved money or changed keys, when, why, and with what outcome.

Append only. Operator money movements (top-ups, manual transfers and batches, SLA credits,
reservations) must give a reason; the API records each one here with the caller's key id and
role and the ledger's outcome, after the ledger has answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from yungu.adapters.store import tables as t


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    key_id: str
    role: str
    action: str
    subject: str
    reason: str
    outcome: str
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, at: datetime, key_id: str, role: str, action: str, subject: str, reason: str,
               outcome: str, detail: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(insert(t.audit_log).values(
                at=at, key_id=key_id, role=role, action=action, subject=subject[:200], reason=reason,
                outcome=outcome[:64], detail=json.dumps(detail or {}, default=str, sort_keys=True)))

    def entries(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.audit_log).where(t.audit_log.c.seq > after)
                             .order_by(t.audit_log.c.seq).limit(limit)).all()
        return [AuditEntry(r.seq, r.at, r.key_id, r.role, r.action, r.subject, r.reason, r.outcome,
                           json.loads(r.detail)) for r in rows]

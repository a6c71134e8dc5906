"""Signed documents the API issues and serves: green-power certificates and clearing
statements. Their SQL lives here, not in the routes (``api`` imports no SQLAlchemy)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from yungu.adapters.store.db import reader
from yungu.adapters.store.ledger_tables import clearing_statements
from yungu.adapters.store.telemetry_tables import energy_certificates


class CertificateStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = reader(engine)

    def add(self, body: dict[str, Any], canonical: bytes, signature: str, key_id: str, issued_at: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(energy_certificates.insert().values(
                id=body["id"], kind=body["kind"], subject=body["subject"], tenant_id=body["tenant_id"],
                issued_at=issued_at, body=canonical.decode(), signature=signature, key_id=key_id))

    def get(self, cert_id: str) -> dict[str, Any] | None:
        """``{"tenant_id", "body" (parsed), "signature", "key_id"}`` or None."""
        with self.reads.connect() as c:
            r = c.execute(select(energy_certificates).where(energy_certificates.c.id == cert_id)).first()
        if r is None:
            return None
        return {"tenant_id": r.tenant_id, "body": json.loads(r.body), "signature": r.signature, "key_id": r.key_id}


class StatementStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, statement_id: str, period: str, currency: str, canonical: bytes,
             signatures: dict[str, str], now: datetime) -> bool:
        """Store a signed clearing statement once (the same statement twice is stored once);
        True if it was new."""
        with self.engine.begin() as c:
            if c.execute(select(clearing_statements.c.id).where(clearing_statements.c.id == statement_id)).first():
                return False
            c.execute(clearing_statements.insert().values(
                id=statement_id, period=period, currency=currency, body=canonical.decode(),
                signatures=json.dumps(signatures), created_at=now))
        return True

"""Usage records, billing periods and invoices in the SQL store (``ports.billing.UsagePort``).

Every write is idempotent: a usage record is inserted only if its id is new; an invoice is
unique per (tenant, period) and is written in the same transaction that stamps its usage
lines, so a crash leaves either the whole invoice or none of it. A row whose booking failed
is parked (``retry_at``, ``book_error``) and is not due again before its retry time, so it
never holds up the rows behind it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from yungu.adapters.store.ledger_tables import billing_periods as P
from yungu.adapters.store.ledger_tables import invoices as I
from yungu.adapters.store.ledger_tables import usage_records as U
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput, NotFound
from yungu.engines.ledger.invoice import Invoice, invoice_number
from yungu.engines.ledger.rating import Usage
from yungu.ports.billing import Booked, InvoiceBuilder, UsageRow

CHUNK = 500


def _row(r: object) -> UsageRow:
    m = r._mapping  # type: ignore[attr-defined]
    u = Usage(m["id"], m["tenant_id"], m["job_id"], m["pool_id"], m["provider"], m["started_at"], m["ended_at"],
              m["device_seconds"], Decimal(m["compute_units"]), Decimal(m["facility_kwh"]), m["tokens_in"],
              m["tokens_out"])
    return UsageRow(u, m["gross"], m["usage_period"], m["booked_period"], m["late_from"], bool(m["booked"]),
                    m["invoice_id"], m["pool_id"], m["written_off"], m["book_attempts"], m["book_error"])


class BillingStore:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def add_usage(self, rows: Sequence[UsageRow]) -> int:
        """Insert usage records whose ids are new; returns how many were new."""
        now = self.clock.now()
        added = 0
        with self.engine.begin() as conn:
            ids = [r.usage.id for r in rows]
            seen: set[str] = set()
            for i in range(0, len(ids), CHUNK):
                seen.update(x for (x,) in conn.execute(select(U.c.id).where(U.c.id.in_(ids[i : i + CHUNK]))))
            new = []
            for r in rows:
                if r.usage.id in seen:
                    continue
                seen.add(r.usage.id)
                u = r.usage
                new.append({"id": u.id, "tenant_id": u.tenant_id, "job_id": u.job_id, "pool_id": u.pool_id,
                            "provider": u.provider, "started_at": u.started_at, "ended_at": u.ended_at,
                            "device_seconds": u.device_seconds, "compute_units": u.compute_units,
                            "facility_kwh": u.facility_kwh, "tokens_in": u.tokens_in, "tokens_out": u.tokens_out,
                            "gross": r.gross, "usage_period": r.usage_period, "booked_period": r.booked_period,
                            "late_from": r.late_from, "transfer_id": f"{u.id}:charge", "booked": 0,
                            "invoice_id": None, "created_at": now, "written_off": 0, "book_attempts": 0,
                            "book_error": "", "retry_at": None})
            if new:
                conn.execute(insert(U), new)
                added = len(new)
        return added

    def due(self, limit: int, now: datetime) -> list[UsageRow]:
        """Unbooked rows whose (re)try time has come, by id."""
        q = (select(U).where(U.c.booked == 0, or_(U.c.retry_at.is_(None), U.c.retry_at <= now))
             .order_by(U.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def unbooked(self, limit: int = 1000) -> list[UsageRow]:
        """Every unbooked row, parked ones included (for operators and tests)."""
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(select(U).where(U.c.booked == 0).order_by(U.c.id).limit(limit))]

    _BOOKED = (update(U).where(U.c.id == bindparam("b_id"))
               .values(booked=1, gross=bindparam("b_gross"), written_off=bindparam("b_off"), book_error="",
                       retry_at=None))

    def mark_booked(self, booked: Sequence[Booked]) -> None:
        """Stamp rows booked with what the tenant was charged (gross) and what was written off."""
        if not booked:
            return
        with self.engine.begin() as conn:
            conn.execute(self._BOOKED, [{"b_id": b.usage_id, "b_gross": b.charged, "b_off": b.written_off}
                                        for b in booked])

    def park(self, usage_id: str, error: str, retry_at: datetime) -> None:
        """Record a failed booking attempt; the row is due again at ``retry_at``."""
        with self.engine.begin() as conn:
            conn.execute(update(U).where(U.c.id == usage_id, U.c.booked == 0)
                         .values(book_attempts=U.c.book_attempts + 1, book_error=error[:2000], retry_at=retry_at))

    def closed_periods(self) -> set[str]:
        with self.engine.connect() as conn:
            return {p for (p,) in conn.execute(select(P.c.period))}

    def close_period(self, period: str) -> None:
        if len(period) != 7 or period[4] != "-" or not (period[:4] + period[5:]).isdigit():
            raise InvalidInput(f"period must be YYYY-MM, got {period!r}")
        with self.engine.begin() as conn:
            if conn.execute(select(P.c.period).where(P.c.period == period)).first() is None:
                conn.execute(insert(P).values(period=period, closed_at=self.clock.now()))

    def tenants_to_invoice(self, period: str) -> list[str]:
        with self.engine.connect() as conn:
            q = (select(U.c.tenant_id).where(U.c.booked_period == period, U.c.booked == 1, U.c.invoice_id.is_(None),
                                             U.c.gross > 0)
                 .distinct().order_by(U.c.tenant_id))
            return [t for (t,) in conn.execute(q)]

    def issue_invoice(self, tenant_id: str, period: str, build: InvoiceBuilder) -> Invoice | None:
        """Build and store the tenant's invoice for a closed period, exactly once."""
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(I.c.id).where(I.c.tenant_id == tenant_id, I.c.period == period)).first():
                    return None
                rows = [_row(r) for r in conn.execute(
                    select(U).where(U.c.tenant_id == tenant_id, U.c.booked_period == period, U.c.booked == 1,
                                    U.c.invoice_id.is_(None), U.c.gross > 0).order_by(U.c.id))]
                seq = (conn.execute(select(func.max(I.c.seq))).scalar() or 0) + 1
                inv = build(invoice_number(seq, int(period[:4])), rows)
                conn.execute(insert(I).values(id=inv.number, seq=seq, tenant_id=tenant_id, period=period,
                                              issued_at=inv.issued_at, gross=inv.gross,
                                              body=json.dumps(inv.to_json(), ensure_ascii=False, sort_keys=True)))
                ids = [r.usage.id for r in rows]
                for i in range(0, len(ids), CHUNK):
                    conn.execute(update(U).where(U.c.id.in_(ids[i : i + CHUNK])).values(invoice_id=inv.number))
                return inv
        except IntegrityError:
            return None  # a concurrent closer issued it first

    def invoices(self, tenant_id: str | None = None, period: str | None = None) -> list[dict[str, object]]:
        q = select(I).order_by(I.c.seq)
        if tenant_id is not None:
            q = q.where(I.c.tenant_id == tenant_id)
        if period is not None:
            q = q.where(I.c.period == period)
        with self.engine.connect() as conn:
            return [json.loads(r.body) | {"tenant_id": r.tenant_id} for r in conn.execute(q)]

    def invoice(self, number: str) -> dict[str, object]:
        with self.engine.connect() as conn:
            r = conn.execute(select(I).where(I.c.id == number)).first()
        if r is None:
            raise NotFound(f"unknown invoice {number!r}")
        body: dict[str, object] = json.loads(r.body)
        return body | {"tenant_id": r.tenant_id}

    def usage(self, tenant_id: str | None = None, period: str | None = None, limit: int = 1000) -> list[UsageRow]:
        q = select(U).order_by(U.c.id).limit(limit)
        if tenant_id is not None:
            q = q.where(U.c.tenant_id == tenant_id)
        if period is not None:
            q = q.where(U.c.booked_period == period)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

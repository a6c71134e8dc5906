"""The token store on SQLite and PostgreSQL: usage rows exactly once, read back exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from yungu.adapters.gateway.store import TokenStore, UsageRecord
from yungu.adapters.store import tables as _tables  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.engines.gateway.pricing import Price


def rec(i: int) -> UsageRecord:
    p = Price(Decimal("0.0001"), Decimal("123.4567"))
    return UsageRecord(f"req_{i}", "k", "t", "m", "chat", "r", "", "prov", "pool", i, 2 * i, "backend", p,
                       p.cost(i, 2 * i), "ok", "2026-03", "2026-03", datetime(2026, 3, 1, 12, 0, i % 60, 123456, tzinfo=UTC))


def test_usage_rows_are_written_once_and_read_back_exactly(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    store = TokenStore(engine)
    assert store.add_usage([rec(i) for i in range(300)]) == 300
    assert store.add_usage([rec(i) for i in range(250, 400)]) == 100  # 250..299 again: ignored
    rows = {r["request_id"]: r for r in store.usage(limit=10_000)}
    assert len(rows) == 400
    r = rows["req_7"]
    assert (r["tokens_in"], r["tokens_out"], r["cost_units"]) == (7, 14, rec(7).cost_units)
    assert r["price_out_per_m"] == Decimal("123.4567") and r["created_at"] == rec(7).created_at
    assert store.spent("k", "2026-03") == sum(rec(i).cost_units for i in range(400))
    assert store.totals()["requests"] == 400
    engine.dispose()

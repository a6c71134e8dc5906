"""Ingestion store on SQLite and PostgreSQL: exactly-once, quarantine with reasons, rollups, queries."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from yungu.adapters.store import telemetry_tables as _tt  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.telemetry.store import TelemetryStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(seq: int, ts: float, power: float = 100.0, **kw: object) -> dict[str, object]:
    d: dict[str, object] = {
        "seq": seq,
        "ts": ts,
        "cpu_utilisation": 0.5,
        "memory_utilisation": 0.2,
        "cpu_power_w": power,
        "cpu_method": "modelled",
    }
    d.update(kw)
    return d


@pytest.fixture
def store(db_url: str) -> TelemetryStore:
    engine = create_engine(db_url)
    migrate(engine)
    return TelemetryStore(engine)


def test_resend_is_counted_not_stored_twice(store: TelemetryStore) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    t0 = NOW.timestamp() - 100
    rows = [row(i, t0 + i) for i in range(10)]
    r1 = store.ingest("n1", key, rows, NOW)
    r2 = store.ingest("n1", key, [*rows[5:], row(10, t0 + 10)], NOW)
    assert (r1.accepted, r1.duplicates) == (10, 0)
    assert (r2.accepted, r2.duplicates) == (1, 5)
    assert store.seqs("n1") == list(range(11))
    c = store.counters()
    assert c["accepted"] == 11 and c["duplicate_resend"] == 5


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"cpu_power_w": float("nan")}, "not_finite"),
        ({"cpu_power_w": -5.0}, "negative_power"),
        ({"ts": NOW.timestamp() + 3600}, "future_clock"),
        ({"ts": NOW.timestamp() - 30 * 86400}, "past_clock"),
        ({"cpu_utilisation": 1.7}, "out_of_range"),
        ({"seq": "seven"}, "malformed"),
        ({"gpus": [{"index": 0, "power_w": math.inf}]}, "not_finite"),
    ],
)
def test_bad_samples_are_quarantined_with_reason(
    store: TelemetryStore, bad: dict[str, object], reason: str
) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    good = row(0, NOW.timestamp() - 10)
    res = store.ingest("n1", key, [good, {**row(1, NOW.timestamp() - 5), **bad}], NOW)
    assert res.accepted == 1
    assert [q[1] for q in res.quarantined] == [reason]
    assert store.seqs("n1") == [0]
    q = store.quarantine()
    assert q[0]["reason"] == reason and q[0]["detail"]
    assert store.counters()[f"quarantined_{reason}"] == 1


def test_unknown_node_and_bad_key_store_nothing(store: TelemetryStore) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    r1 = store.ingest("ghost", key, [row(0, NOW.timestamp())], NOW)
    r2 = store.ingest("n1", "ygn_wrong", [row(0, NOW.timestamp())], NOW)
    assert [q[1] for q in r1.quarantined] == ["unknown_node"]
    assert [q[1] for q in r2.quarantined] == ["bad_key"]
    assert store.seqs("n1") == [] and store.seqs("ghost") == []
    c = store.counters()
    assert c["quarantined_unknown_node"] == 1 and c["quarantined_bad_key"] == 1


def test_reused_seq_with_other_timestamp_is_a_conflict(store: TelemetryStore) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    t = NOW.timestamp() - 60
    store.ingest("n1", key, [row(0, t)], NOW)
    res = store.ingest("n1", key, [row(0, t + 30)], NOW)
    assert res.accepted == 0 and [q[1] for q in res.quarantined] == ["duplicate_seq_conflict"]


def test_rollup_query_and_retention(store: TelemetryStore) -> None:
    k1 = store.register_node("n1", "site-a", "pool-a", NOW)
    k2 = store.register_node("n2", "site-a", "pool-a", NOW)
    start = NOW - timedelta(hours=2)
    t0 = start.timestamp()
    store.ingest("n1", k1, [row(i, t0 + 10 * i, 100.0) for i in range(720)], NOW)
    store.ingest("n2", k2, [row(i, t0 + 10 * i, 300.0) for i in range(720)], NOW)
    raw = store.query("site", "site-a", start, start + timedelta(hours=1), 60)
    assert len(raw) == 60 and all(p["power_w"] == pytest.approx(400.0) for p in raw)
    assert raw[0]["source"] == "raw" and raw[0]["method"] == "modelled"
    assert store.rollup(NOW) > 0
    rolled = store.query("site", "site-a", start, start + timedelta(hours=1), 300)
    assert len(rolled) == 12 and rolled[0]["source"] == "raw"  # raw still there: it is faster
    assert all(p["power_w"] == pytest.approx(400.0) for p in rolled)
    assert store.rollup(NOW) == 0  # idempotent
    # live counter: n1 at 100 W for 7190 s
    assert store.energy_totals()["n1"] == pytest.approx(100.0 * 7190)
    gone = store.enforce_retention(NOW + timedelta(days=8), raw_days=7)
    assert gone["raw_deleted"] == 1440
    assert store.query("pool", "pool-a", start, start + timedelta(hours=1), 60)[0]["source"] == "rollup_1m"

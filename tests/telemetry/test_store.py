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
    # unauthenticated input writes nothing at all: no quarantine rows, no counters (issue 10)
    assert store.quarantine() == [] and store.counters() == {}


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
    assert len(rolled) == 12 and rolled[0]["source"] == "rollup_1m"  # node-hour blobs, not raw chunks
    assert all(p["power_w"] == pytest.approx(400.0) for p in rolled)
    assert store.rollup(NOW) == 0  # idempotent
    # live counter: n1 at 100 W for 7190 s
    assert store.energy_totals()["n1"] == pytest.approx(100.0 * 7190)
    gone = store.enforce_retention(NOW + timedelta(days=8), raw_days=7)
    assert gone["raw_deleted"] == 1440
    assert store.query("pool", "pool-a", start, start + timedelta(hours=1), 60)[0]["source"] == "rollup_1m"


# ---- the column wire form --------------------------------------------------------------

import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from yungu.domain.errors import InvalidInput  # noqa: E402
from yungu.engines.energy.samples import columns_or_none  # noqa: E402


def _outcome(res: object) -> tuple[int, int, list[tuple[object, str]]]:
    return (res.accepted, res.duplicates, sorted((q[0] is None, q[1]) for q in res.quarantined))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad",
    [
        {"cpu_power_w": float("nan")}, {"cpu_power_w": -5.0}, {"ts": NOW.timestamp() + 3600},
        {"ts": NOW.timestamp() - 30 * 86400}, {"cpu_utilisation": 1.7}, {"seq": "seven"},
        {"cpu_method": "guessed"}, {"cpu_energy_j": float("nan")}, {"node_cpu_seconds": -1.0},
        {"gpus": [{"index": 0, "power_w": math.inf}]}, {"node_id": "other"},
    ],
)  # fmt: skip
def test_columns_quarantine_exactly_like_objects(store: TelemetryStore, bad: dict[str, object]) -> None:
    """The same batch sent as columns and as objects has the same outcome, reasons and data."""
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    key2 = store.register_node("n2", "site-a", "pool-a", NOW)
    t = NOW.timestamp() - 50
    base = {"cpu_energy_j": 5.0, "node_cpu_seconds": 1.0, "node_id": "n1", "cpu_method": "modelled"}
    batch = [row(0, t, **base), {**row(1, t + 1, **base), **bad}, row(2, t + 2, **base)]
    objs = store.ingest("n1", key, batch, NOW)
    cols = columns_or_none([{**r, "node_id": "n2"} if r.get("node_id") == "n1" else r for r in batch])
    assert cols is not None
    colres = store.ingest_columns("n2", key2, cols, NOW)
    assert _outcome(objs) == _outcome(colres)
    assert objs.accepted == 2 and len(objs.quarantined) == 1
    assert store.seqs("n1") == store.seqs("n2") == [0, 2]


def test_columns_with_unequal_lengths_are_refused_whole(store: TelemetryStore) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    t = NOW.timestamp() - 10
    with pytest.raises(InvalidInput):
        store.ingest_columns("n1", key, {"seq": [0, 1], "ts": [t], "cpu_utilisation": [0.1, 0.2],
                                         "cpu_power_w": [1.0, 2.0]}, NOW)  # fmt: skip
    assert store.seqs("n1") == [] and "accepted" not in store.counters()


def test_columns_with_jobs_resend_and_missing_column(store: TelemetryStore) -> None:
    key = store.register_node("n1", "site-a", "pool-a", NOW)
    t = NOW.timestamp() - 100
    rows = [row(i, t + i, jobs=[{"job_id": "j", "cpu_seconds": float(i)}] if i % 2 else []) for i in range(6)]
    cols = columns_or_none(rows)
    assert cols is not None
    r1 = store.ingest_columns("n1", key, cols, NOW)
    r2 = store.ingest_columns("n1", key, cols, NOW)  # a resend of an acknowledged batch
    assert (r1.accepted, r2.accepted, r2.duplicates) == (6, 0, 6)
    assert store.job_nodes("j") == {"n1": (int((t + 1) * 1000), int((t + 5) * 1000))}
    no_power = {k: v for k, v in columns_or_none([row(10, t), row(11, t + 1)]).items() if k != "cpu_power_w"}  # type: ignore[union-attr]
    r3 = store.ingest_columns("n1", key, no_power, NOW)
    assert r3.accepted == 0 and [q[1] for q in r3.quarantined] == ["malformed", "malformed"]


values = st.one_of(st.floats(-10, 500), st.just(float("nan")), st.just(float("inf")), st.none(), st.just("x"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seqs=st.lists(st.integers(-1, 40), min_size=1, max_size=30),
    power=st.lists(values, min_size=30, max_size=30),
    util=st.lists(st.one_of(st.floats(0, 1), st.just(1.5), st.none()), min_size=30, max_size=30),
    skew=st.lists(st.sampled_from([0.0, 0.0, 0.0, 3600.0, -8 * 86400.0]), min_size=30, max_size=30),
)
def test_columns_and_objects_agree_on_any_batch(
    tmp_path: Path, seqs: list[int], power: list[object], util: list[object], skew: list[float]
) -> None:
    """Property: for any batch (bad values, resends, reused seqs), columns == objects."""
    engine = create_engine(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
    migrate(engine)
    s = TelemetryStore(engine)
    ka, kb = s.register_node("a", "s", "p", NOW), s.register_node("b", "s", "p", NOW)
    t = NOW.timestamp() - 1000
    batch = [
        {"seq": q, "ts": t + q + skew[i], "cpu_utilisation": util[i], "cpu_power_w": power[i],
         "cpu_method": "modelled"}
        for i, q in enumerate(seqs)
    ]  # fmt: skip
    for half in (batch[: len(batch) // 2], batch):  # the second call resends the first half
        ra = s.ingest("a", ka, half, NOW)
        rb = s.ingest_columns("b", kb, columns_or_none(half) or {}, NOW)
        assert _outcome(ra) == _outcome(rb)
    assert s.seqs("a") == s.seqs("b")
    assert s.counters() == {k: v for k, v in s.counters().items()}  # readable
    engine.dispose()


# ---- queries: rollups + unrolled raw == the definition -----------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut_min=st.integers(0, 240),
    late=st.integers(0, 30),
    step_min=st.sampled_from([1, 5, 60]),
    seed=st.integers(0, 2**16),
)
def test_query_from_rollups_and_late_raw_matches_definition(
    tmp_path: Path, cut_min: int, late: int, step_min: int, seed: int
) -> None:
    """Power per bucket = sum over nodes of each node's mean power, whatever was rolled up when."""
    import random

    rnd = random.Random(seed)
    engine = create_engine(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
    migrate(engine)
    s = TelemetryStore(engine)
    start = NOW - timedelta(hours=4)
    t0 = start.timestamp()
    samples: dict[str, list[tuple[float, float]]] = {}
    keys = {n: s.register_node(n, "site-a", "pool-a", NOW) for n in ("n1", "n2", "n3")}
    for n, k in keys.items():
        ts = sorted(rnd.sample(range(0, 4 * 3600, 7), 400))
        pts = [(t0 + x, round(rnd.uniform(50, 400), 3)) for x in ts]
        samples[n] = pts
        main, tail = pts[: len(pts) - late], pts[len(pts) - late :]
        s.ingest(n, k, [row(i, t, p) for i, (t, p) in enumerate(main)], NOW)
        s.rollup(start + timedelta(minutes=cut_min))
        if tail:  # late data after a rollup
            s.ingest(n, k, [row(len(main) + i, t, p) for i, (t, p) in enumerate(tail)], NOW)
    lo, step = t0 + 3600, step_min * 60
    got = {
        p["t"]: p
        for p in s.query("site", "site-a", start + timedelta(hours=1), start + timedelta(hours=3), step)
    }
    want: dict[str, float] = {}
    for pts in samples.values():
        per: dict[int, list[float]] = {}
        for t, p in pts:
            if lo <= t < lo + 7200:
                per.setdefault(int((t - lo) // step), []).append(p)
        for b, ps in per.items():
            k = datetime.fromtimestamp(lo + b * step, UTC).isoformat()
            want[k] = want.get(k, 0.0) + sum(ps) / len(ps)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k]["power_w"] == pytest.approx(v, rel=1e-4)
    engine.dispose()

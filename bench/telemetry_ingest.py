"""Telemetry ingestion and query benchmark (issue 4 targets).

    python bench/telemetry_ingest.py [--samples 1000000] [--db sqlite|URL]

1. Sustained ingestion: agent-shaped batches (validation, de-duplication, exactly-once
   insert, counters) into the real store, many nodes of one site. Baseline in the same run:
   one SQL row per sample (DB-API executemany, same batches, PK + site/time index), the
   design this store replaced.
2. Query: one site's day at 1-minute steps (20 nodes x 10 s samples = 172,800 rows), p50/p99
   over repeated queries, from raw samples and from 1-minute rollups.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yungu.adapters.store import telemetry_tables as _tt  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.telemetry.store import TelemetryStore

NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def rows(n: int, seq0: int, t0: float, step: float) -> list[dict[str, object]]:
    return [
        {"seq": seq0 + i, "ts": t0 + i * step, "cpu_utilisation": 0.5 + (i % 7) * 0.05, "memory_utilisation": 0.3,
         "cpu_power_w": 200.0 + (i % 13), "cpu_method": "modelled"}
        for i in range(n)
    ]  # fmt: skip


def bench_ingest(url: str, total: int, batch: int, nodes: int) -> tuple[float, float]:
    engine = create_engine(url)
    migrate(engine)
    store = TelemetryStore(engine)
    keys = {
        f"node-{i:03d}": store.register_node(f"node-{i:03d}", "site-b", "pool-b", NOW) for i in range(nodes)
    }
    per_node = total // nodes
    t0 = NOW.timestamp() - 86400
    batches = []
    for name in keys:
        for s in range(0, per_node, batch):
            batches.append((name, rows(min(batch, per_node - s), s, t0 + s, 1.0)))
    n = sum(len(b) for _, b in batches)
    start = time.perf_counter()
    for name, b in batches:
        store.ingest(name, keys[name], b, NOW)
    rate = n / (time.perf_counter() - start)
    # baseline: the row-per-sample design this store replaced (one SQL row per sample, executemany)
    sqlite_conn = engine.raw_connection()
    cur = sqlite_conn.cursor()
    cur.execute(
        "CREATE TABLE base_samples (node_id TEXT, seq INTEGER, ts_ms INTEGER, site_id TEXT, pool_id TEXT, "
        "cpu_util REAL, mem_util REAL, cpu_power_w REAL, modelled INTEGER, PRIMARY KEY (node_id, seq))"
    )
    cur.execute("CREATE INDEX ix_base_site_ts ON base_samples (site_id, ts_ms)")
    base_rows = [("base", r["seq"], int(float(r["ts"]) * 1000), "x", "x", r["cpu_utilisation"], 0.3, r["cpu_power_w"], 1)  # type: ignore[arg-type]
                 for r in rows(100_000, 0, t0, 1.0)]  # fmt: skip
    ph = ",".join(["?" if engine.dialect.paramstyle == "qmark" else "%s"] * 9)
    start = time.perf_counter()
    for i in range(0, len(base_rows), batch):
        cur.executemany(f"INSERT INTO base_samples VALUES ({ph})", base_rows[i : i + batch])
        sqlite_conn.commit()
    base = len(base_rows) / (time.perf_counter() - start)
    sqlite_conn.close()
    engine.dispose()
    return rate, base


def bench_query(url: str, nodes: int = 20, repeats: int = 60) -> dict[str, tuple[float, float, int]]:
    engine = create_engine(url)
    migrate(engine)
    store = TelemetryStore(engine)
    day0 = NOW - timedelta(days=1)
    for i in range(nodes):
        k = store.register_node(f"q-{i:02d}", "site-q", "pool-q", NOW)
        store.ingest(f"q-{i:02d}", k, rows(8640, 0, day0.timestamp(), 10.0), NOW)
        store.register_node(f"o-{i:02d}", "site-other", "pool-o", NOW)  # other sites' nodes exist too
    out = {}
    for label in ("raw", "rollup_1m"):
        if label == "rollup_1m":  # as after raw retention: only rollups remain
            store.rollup(NOW)
            store.enforce_retention(NOW + timedelta(days=8), raw_days=7)
        times = []
        pts = 0
        for _ in range(repeats):
            s = time.perf_counter()
            res = store.query("site", "site-q", day0, NOW, 60)
            assert len(res) == 1440
            times.append((time.perf_counter() - s) * 1000)
            pts = len(res)
            assert res[0]["source"] == label
        times.sort()
        out[label] = (statistics.median(times), times[int(0.99 * (len(times) - 1))], pts)
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--db", default="sqlite")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/bench.db" if a.db == "sqlite" else a.db
        rate, base = bench_ingest(url, a.samples, a.batch, a.nodes)
        url2 = f"sqlite:///{d}/query.db" if a.db == "sqlite" else a.db
        q = bench_query(url2)
    print(f"{'measure':<44} {'value':>14} {'target':>12} {'vs baseline':>12}")
    print(
        f"{'ingest samples/s (batch ' + str(a.batch) + ', ' + str(a.samples) + ' samples)':<44} {rate:>14,.0f} {'>= 200,000':>12} {rate / base:>11.1f}x"
    )
    print(f"{'baseline: row-per-sample executemany /s':<44} {base:>14,.0f} {'':>12} {'1.0x':>12}")
    for label, (p50, p99, _pts) in q.items():
        print(f"{'query 1 site, 1 day @1 min, ' + label + ' p50 ms':<44} {p50:>14.1f} {'':>12} {'':>12}")
        print(
            f"{'query 1 site, 1 day @1 min, ' + label + ' p99 ms':<44} {p99:>14.1f} {'< 100':>12} {q['raw'][1] / p99:>11.1f}x"
        )
    print(f"(points per query: {q['raw'][2]})")


if __name__ == "__main__":
    main()

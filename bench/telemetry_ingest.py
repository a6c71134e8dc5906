"""Telemetry ingestion and query benchmark (issue 4 targets).

    python bench/telemetry_ingest.py [--samples 300000] [--batch 5000] [--db sqlite|postgresql]

1. Ingestion through the real HTTP endpoint: a `yungu server` process, 20 nodes registered
   through the API, agent-shaped batches POSTed one at a time over one keep-alive connection
   (bodies encoded before the clock starts: the agents encode on their own nodes). Each
   batch is validated, de-duplicated and stored exactly-once with counters before the answer.
   Sent as per-sample objects (the original wire form: baseline) and as parallel columns.
2. The same at the store layer (no HTTP/JSON), objects vs columns, and the design the chunk
   store replaced: one SQL row per sample (executemany).
3. Query: one site's day at 1-minute steps (20 nodes x 10 s samples = 172,800 samples),
   p50/p99 over repeated queries: from raw chunks (before any roll-up; baseline), from
   node-hour rollups while raw chunks are still kept, and from rollups alone after retention.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pgserver import postgres_server as postgres_base
from yungu.adapters.store import telemetry_tables as _tt  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.telemetry.store import TelemetryStore
from yungu.engines.energy.samples import columns_or_none

NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def rows(n: int, seq0: int, t0: float, step: float) -> list[dict[str, object]]:
    return [
        {"seq": seq0 + i, "ts": t0 + i * step, "cpu_utilisation": 0.5 + (i % 7) * 0.05, "memory_utilisation": 0.3,
         "cpu_power_w": 200.0 + (i % 13), "cpu_method": "modelled"}
        for i in range(n)
    ]  # fmt: skip


def make_batches(
    nodes: list[str], total: int, batch: int, t0: float
) -> list[tuple[str, list[dict[str, object]]]]:
    per_node = total // len(nodes)
    return [
        (name, rows(min(batch, per_node - s), s, t0 + s, 1.0))
        for name in nodes
        for s in range(0, per_node, batch)
    ]


def bench_store(url: str, total: int, batch: int, nodes: int, form: str) -> float:
    """Samples/s into the store (no HTTP), ``form`` = objects | columns."""
    engine = create_engine(url)
    migrate(engine)
    store = TelemetryStore(engine)
    keys = {
        f"node-{i:03d}": store.register_node(f"node-{i:03d}", "site-b", "pool-b", NOW) for i in range(nodes)
    }
    batches = make_batches(list(keys), total, batch, NOW.timestamp() - 86400)
    payloads = [(name, columns_or_none(b) if form == "columns" else b) for name, b in batches]
    n = sum(len(b) for _, b in batches)
    start = time.perf_counter()
    for name, p in payloads:
        if form == "columns":
            r = store.ingest_columns(name, keys[name], p, NOW)  # type: ignore[arg-type]
        else:
            r = store.ingest(name, keys[name], p, NOW)  # type: ignore[arg-type]
        assert r.accepted == len(p["seq"] if isinstance(p, dict) else p) and not r.quarantined
    rate = n / (time.perf_counter() - start)
    engine.dispose()
    return rate


def bench_row_per_sample(url: str, batch: int) -> float:
    """The design the chunk store replaced: one SQL row per sample, DB-API executemany."""
    engine = create_engine(url)
    conn = engine.raw_connection()
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE base_samples (node_id TEXT, seq BIGINT, ts_ms BIGINT, site_id TEXT, pool_id TEXT, "
        "cpu_util REAL, mem_util REAL, cpu_power_w REAL, modelled INTEGER, PRIMARY KEY (node_id, seq))"
    )
    cur.execute("CREATE INDEX ix_base_site_ts ON base_samples (site_id, ts_ms)")
    t0 = NOW.timestamp() - 86400
    base_rows = [("base", r["seq"], int(float(r["ts"]) * 1000), "x", "x", r["cpu_utilisation"], 0.3, r["cpu_power_w"], 1)  # type: ignore[arg-type]
                 for r in rows(50_000, 0, t0, 1.0)]  # fmt: skip
    ph = ",".join(["?" if engine.dialect.paramstyle == "qmark" else "%s"] * 9)
    start = time.perf_counter()
    for i in range(0, len(base_rows), batch):
        cur.executemany(f"INSERT INTO base_samples VALUES ({ph})", base_rows[i : i + batch])
        conn.commit()
    rate = len(base_rows) / (time.perf_counter() - start)
    cur.execute("DROP TABLE base_samples")
    conn.commit()
    conn.close()
    engine.dispose()
    return rate


def bench_http(db: str | None, total: int, batch: int, nodes: int, senders: int = 1) -> dict[str, float]:
    """Samples/s through POST /api/v1/telemetry/ingest of a real server, objects vs columns."""
    from tests.e2e.server import ServerProcess

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        srv = ServerProcess(data, db_url=None if db == "sqlite" else db).start()
        try:
            admin = {"Authorization": f"Bearer {srv.admin_key}"}
            for form in ("objects", "columns"):
                keys = {}
                for i in range(nodes):
                    name = f"{form}-{i:03d}"
                    r = httpx.post(srv.url + "/api/v1/telemetry/nodes", json={"node_id": name, "pool_id": "horinger-cpu"},
                                   headers=admin)  # fmt: skip
                    r.raise_for_status()
                    keys[name] = r.json()["node_key"]
                batches = make_batches(list(keys), total, batch, time.time() - 86400)
                bodies = [
                    (name, len(b), json.dumps({"node_id": name, **({"columns": columns_or_none(b)} if form == "columns"
                                                                   else {"samples": b})}).encode())
                    for name, b in batches
                ]  # fmt: skip
                n = sum(x[1] for x in bodies)

                def send(part: list[tuple[str, int, bytes]], keys: dict[str, str] = keys) -> None:
                    with httpx.Client(base_url=srv.url, timeout=60) as cl:
                        for name, k, body in part:
                            res = cl.post("/api/v1/telemetry/ingest", content=body,
                                          headers={"X-Node-Key": keys[name], "Content-Type": "application/json"})  # fmt: skip
                            assert res.status_code == 200 and res.json()["accepted"] == k, res.text[:300]

                start = time.perf_counter()
                ths = [threading.Thread(target=send, args=(bodies[i::senders],)) for i in range(senders)]
                for t in ths:
                    t.start()
                for t in ths:
                    t.join()
                out[form] = n / (time.perf_counter() - start)
                out[form + "_kb"] = sum(len(x[2]) for x in bodies) / len(bodies) / 1024
        finally:
            srv.stop()
    return out


def bench_query(
    url: str, nodes: int = 20, repeats: int = 60, batch: int = 500
) -> dict[str, tuple[float, float, int]]:
    engine = create_engine(url)
    migrate(engine)
    store = TelemetryStore(engine)
    day0 = NOW - timedelta(days=1)
    for i in range(nodes):
        k = store.register_node(f"q-{i:02d}", "site-q", "pool-q", NOW)
        for s0 in range(0, 8640, batch):  # as the agent sends them: one chunk per batch
            store.ingest(
                f"q-{i:02d}", k, rows(min(batch, 8640 - s0), s0, day0.timestamp() + 10.0 * s0, 10.0), NOW
            )
        store.register_node(f"o-{i:02d}", "site-other", "pool-o", NOW)  # other sites' nodes exist too
    out = {}
    for label in ("raw", "rollup_1m + raw kept", "rollup_1m only"):
        if label == "rollup_1m + raw kept":  # the usual state: rolled up, raw kept 7 days
            store.rollup(NOW)
        if label == "rollup_1m only":  # after raw retention: only rollups remain
            store.enforce_retention(NOW + timedelta(days=8), raw_days=7)
        times = []
        res: list[dict[str, object]] = []
        for _ in range(repeats):
            s = time.perf_counter()
            res = store.query("site", "site-q", day0, NOW, 60)
            times.append((time.perf_counter() - s) * 1000)
            assert len(res) == 1440 and all(p["samples"] == 120 for p in res)
            assert res[0]["source"] == ("raw" if label == "raw" else "rollup_1m")
        times.sort()
        out[label] = (statistics.median(times), times[int(0.99 * (len(times) - 1))], len(res))
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument(
        "--db",
        default="sqlite",
        choices=["sqlite", "postgresql"],
        help="sqlite files, or a throwaway PostgreSQL server (tests/pgserver.py); each part gets a fresh database",
    )
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--query-batch", type=int, default=500, help="samples per stored chunk in the query data")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, (postgres_base() if a.db == "postgresql" else nullcontext("")) as pg:

        def url(name: str) -> str:
            if a.db == "sqlite":
                return f"sqlite:///{d}/{name}.db"
            with psycopg.connect(f"{pg}/postgres", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            return f"{pg}/{name}"

        print(f"database: {a.db}" + (" (fsync=on, synchronous_commit=on)" if pg else " (WAL, synchronous=NORMAL)"))
        http1 = bench_http(url("http1") if pg else "sqlite", a.samples, a.batch, a.nodes)
        http2 = bench_http(url("http2") if pg else "sqlite", a.samples, a.batch, a.nodes, senders=2)
        st_obj = bench_store(url("objects"), a.samples, a.batch, a.nodes, "objects")
        st_col = bench_store(url("columns"), a.samples, a.batch, a.nodes, "columns")
        rps = bench_row_per_sample(url("rows"), a.batch)
        q = bench_query(url("query"), repeats=a.repeats, batch=a.query_batch)
    w = 58
    print(f"{'measure':<{w}} {'value':>12} {'target':>12} {'vs baseline':>12}")
    print(f"{'-- ingest, ' + f'{a.samples:,} samples, batches of {a.batch:,}, {a.nodes} nodes':<{w}}")

    def line(label: str, v: float, target: str, base: float | None, fmt: str = ",.0f") -> None:
        ratio = f"{v / base:.2f}x" if base else "1.00x"
        print(f"{label:<{w}} {format(v, fmt):>12} {target:>12} {ratio:>12}")

    line(
        f"HTTP, objects (baseline), 1 sender, {http1['objects_kb']:.0f} KiB/batch  /s",
        http1["objects"],
        "",
        None,
    )
    line(
        f"HTTP, columns, 1 sender, {http1['columns_kb']:.0f} KiB/batch  /s",
        http1["columns"],
        ">= 200,000",
        http1["objects"],
    )
    line("HTTP, objects, 2 concurrent senders  /s", http2["objects"], "", http1["objects"])
    line("HTTP, columns, 2 concurrent senders  /s", http2["columns"], ">= 200,000", http1["objects"])
    line("store layer (no HTTP), objects  /s", st_obj, "", http1["objects"])
    line("store layer (no HTTP), columns  /s", st_col, ">= 200,000", http1["objects"])
    line("one SQL row per sample (replaced design), executemany  /s", rps, "", http1["objects"])
    print(
        f"-- query: 1 site, 1 day at 1-min steps (172,800 samples in chunks of {a.query_batch} -> 1,440 points)"
    )
    base99 = q["raw"][1]
    for label, (p50, p99, _pts) in q.items():
        line(f"{label}, p50 ms", p50, "", None, ".1f")
        print(f"{label + ', p99 ms':<{w}} {p99:>12.1f} {'< 100':>12} {base99 / p99:>11.2f}x")
    print("(query ratio: raw p99 / this p99; ingest ratio: this / HTTP objects)")


if __name__ == "__main__":
    main()

"""Job submission and status-read throughput/latency over loopback at concurrency 32.

    python bench/api_throughput.py [--seconds 10] [--db sqlite|postgresql|both]

Runs a real `yungu server` process and drives it with wrk (C load generator, so the
client does not eat the server's CPU). The control loop runs during the run: submitted
jobs carry an ``earliest_start`` a day ahead, so they are admitted and deferred by the
scheduler, and the measurement covers the API, validation and the durable store.
Baseline in the same run: GET /api/v1/health (no database), so the table also shows the
ratio of each call's throughput to an empty request.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine, postgres, wrk
from tests.e2e.server import ServerProcess

SUBMIT = """
wrk.method = "POST"
wrk.body = '{"name":"bench","command":"true","earliest_start":"2099-01-01T00:00:00+00:00"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""
READ = """
wrk.headers["Authorization"] = "Bearer %s"
"""


settle: dict[str, float] = {}


def run(db: str, seconds: int) -> list[tuple[str, str, dict[str, float]]]:
    ctx = postgres() if db == "postgresql" else nullcontext(None)
    with ctx as url, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        srv = ServerProcess(data, db_url=url).start()
        try:
            admin = {"Authorization": f"Bearer {srv.admin_key}"}
            t = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "bench"}, headers=admin).json()
            key = httpx.post(
                srv.url + "/api/v1/admin/keys", json={"role": "tenant", "tenant_id": t["id"]}, headers=admin
            ).json()["secret"]
            rows = [(db, "GET /health (baseline)", wrk(srv.url + "/api/v1/health", seconds, 32))]
            rows.append((db, "POST /jobs (submit)", wrk(srv.url + "/api/v1/jobs", seconds, 32, SUBMIT % key)))
            th = {"Authorization": f"Bearer {key}"}
            job = httpx.post(srv.url + "/api/v1/jobs", json={"name": "r", "command": "true"}, headers=th).json()["id"]
            # Let the loop admit and defer the submitted backlog first: status reads are then
            # measured on a settled platform that holds every job submitted above.
            t0 = time.perf_counter()
            while httpx.get(srv.url + "/api/v1/jobs", params={"state": "pending", "limit": 1},
                            headers=th, timeout=30).json()["items"]:
                time.sleep(0.5)
            settle[db] = time.perf_counter() - t0
            rows.append(
                (db, "GET /jobs/{id} (status)", wrk(srv.url + f"/api/v1/jobs/{job}", seconds, 32, READ % key))
            )
            return rows
        finally:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    a = ap.parse_args()
    dbs = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    rows = [r for db in dbs for r in run(db, a.seconds)]
    print(f"\nmachine: {machine()}; concurrency 32, {a.seconds} s per row, wrk over loopback\n")
    print("| store | call | req/s | ratio to /health | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = {db: r for db, name, r in rows if name.startswith("GET /health")}
    for db, name, r in rows:
        print(
            f"| {db} | {name} | {r['rps']:.0f} | {r['rps'] / base[db]['rps']:.2f} | {r.get('p50_ms', 0):.1f} | "
            f"{r.get('p99_ms', 0):.1f} | {r['non2xx']:.0f} |"
        )
    for db, secs in settle.items():
        print(f"\n{db}: the loop admitted and deferred the submitted backlog in {secs:.1f} s before the status reads")


if __name__ == "__main__":
    main()

"""Status reads while submissions flow: one server vs a leader plus an API-only server.

    python bench/api_reads.py [--seconds 10] [--db sqlite|postgresql|both] [--submit-rate 200]

wrk (C load generator) drives ``GET /api/v1/jobs/{id}`` at concurrency 32 while a second
wrk submits jobs (``earliest_start`` a day ahead, so the control loop admits and defers
each one) at about ``--submit-rate`` per second (4 connections, each pausing between
requests). Each deployment also gets ``GET /api/v1/health`` (no database, no auth) under the
same submission stream: the floor that the machine, wrk and the HTTP stack set.

Deployments, measured in the same run (the first is the baseline of the ratio column):

- ``one server``: a single ``yungu server`` runs the API and the control loop;
- ``leader + api-only``: one ``yungu server`` leads (loop, billing) and a second one started
  with ``--api-only`` on the same database (and data dir) serves the reads and submissions;
  the leader picks the api-only server's submissions up from the store (rounds poll it);
- ``leader + api-only, submit to leader``: the same, with the submissions sent to the leader
  (the API-only server answers only the reads, so its own group commit is out of the way).

The servers run with the per-key rate limit off (``YUNGU_RATE_KEY_PER_S=0``): its default,
2,000 requests/s per key, is below what an API-only server answers here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
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
function delay() return %d end
"""
READ = """
wrk.headers["Authorization"] = "Bearer %s"
"""
SUBMIT_CONNS = 4


def _load(path: str) -> tuple[float, float]:
    try:
        la = Path(path).read_text().split()
        return float(la[0]), float(la[1])
    except OSError:
        return 0.0, 0.0


def measure(api: ServerProcess, submit_to: ServerProcess, key: str, job: str, seconds: int,
            rate: int) -> list[tuple[str, dict[str, float]]]:
    """``/health`` then the status read on ``api``, each while submissions go to ``submit_to``."""
    rows = []
    delay_ms = max(0, int(SUBMIT_CONNS * 1000 / rate) - 2)  # minus the submission's own latency
    for name, url, script in (("GET /health (floor)", api.url + "/api/v1/health", None),
                              ("GET /jobs/{id} (status)", api.url + f"/api/v1/jobs/{job}", READ % key)):
        sub: dict[str, dict[str, float]] = {}
        def submit(out: dict[str, dict[str, float]] = sub) -> None:
            out["r"] = wrk(submit_to.url + "/api/v1/jobs", seconds + 2, SUBMIT_CONNS, SUBMIT % (key, delay_ms),
                           threads=1)

        t = threading.Thread(target=submit)
        t.start()
        time.sleep(1.0)  # submissions flow before the reads start and after they end
        r = wrk(url, seconds, 32, script, threads=1)
        t.join()
        r["submit_rps"] = sub["r"]["rps"]
        r["submit_p99_ms"] = sub["r"].get("p99_ms", 0.0)
        rows.append((name, r))
    return rows


def run(db: str, seconds: int, rate: int) -> list[tuple[str, str, str, dict[str, float]]]:
    out = []
    for deployment in ("one server", "leader + api-only", "leader + api-only, submit to leader"):
        ctx = postgres() if db == "postgresql" else nullcontext(None)
        with ctx as url, tempfile.TemporaryDirectory(prefix="sched-bench-") as tmp:
            data = Path(tmp) / "data"
            data.mkdir()
            leader = ServerProcess(data, db_url=url, new_session=True).start(timeout=120)
            servers = [leader]
            try:
                api = leader
                if deployment != "one server":
                    api = ServerProcess(data, db_url=url, extra=["--api-only"], new_session=True).start(timeout=120)
                    servers.append(api)
                    assert httpx.get(api.url + "/api/v1/health").json()["role"] == "api-only"
                assert httpx.get(leader.url + "/api/v1/health").json()["role"] == "leader"
                admin = {"Authorization": f"Bearer {leader.admin_key}"}
                t = httpx.post(api.url + "/api/v1/admin/tenants", json={"name": "bench"}, headers=admin).json()
                key = httpx.post(api.url + "/api/v1/admin/keys", json={"role": "tenant", "tenant_id": t["id"]},
                                 headers=admin).json()["secret"]
                job = httpx.post(api.url + "/api/v1/jobs", json={"name": "r", "command": "true"},
                                 headers={"Authorization": f"Bearer {key}"}).json()["id"]
                submit_to = leader if deployment.endswith("to leader") else api
                for name, r in measure(api, submit_to, key, job, seconds, rate):
                    out.append((db, deployment, name, r))
                rounds = httpx.get(leader.url + "/api/v1/health").json()["reconciler_rounds"]
                print(f"{db} / {deployment}: leader ran {rounds} rounds", flush=True)
            finally:
                for s in reversed(servers):
                    s.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--submit-rate", type=int, default=200, help="submissions per second during the reads (about)")
    a = ap.parse_args()
    os.environ["YUNGU_RATE_KEY_PER_S"] = "0"  # the per-key limit (2,000/s) would answer 429s: measure the reads
    dbs = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    la0 = _load("/proc/loadavg")
    rows = [r for db in dbs for r in run(db, a.seconds, a.submit_rate)]
    la1 = _load("/proc/loadavg")
    print(f"\nmachine: {machine()}; load average (1 min) {la0[0]:.1f} -> {la1[0]:.1f}; reads at concurrency 32, "
          f"{a.seconds} s per row, submissions ~{a.submit_rate}/s, wrk over loopback\n")
    print("| store | deployment | call | req/s | p50 ms | p99 ms | p99 ratio to one server | submissions/s | "
          "submit p99 ms | non-2xx |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    base = {(db, call): r["p99_ms"] for db, dep, call, r in rows if dep == "one server"}
    for db, dep, call, r in rows:
        print(f"| {db} | {dep} | {call} | {r['rps']:.0f} | {r.get('p50_ms', 0):.1f} | {r.get('p99_ms', 0):.1f} | "
              f"{r.get('p99_ms', 0) / base[(db, call)]:.2f} | {r['submit_rps']:.0f} | {r['submit_p99_ms']:.1f} | "
              f"{r['non2xx']:.0f} |")


if __name__ == "__main__":
    main()

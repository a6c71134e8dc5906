"""End-to-end job throughput and submit -> running latency: Yungu's local executor vs a
real single-machine Slurm, on the same machine, in the same run.

    python bench/e2e_throughput.py [--jobs 2000] [--latency-samples 30] [--skip-slurm]

Yungu: a real `yungu server` (SQLite), N trivial jobs (`true`) submitted by 16 concurrent
clients; throughput = N / (first submit -> last job terminal). Slurm: the same N jobs as
`sbatch --wrap=true` from one client against a slurmctld + 2 slurmd cluster
(Epilog=/bin/true, the fastest setting in ../shared/notes/slurm-on-one-machine.md).
Latency: one job at a time on an idle system, polling every 5 ms until the job is seen
running (Yungu: GET /jobs/{id}; Slurm: squeue), so both sides are measured the same way.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine
from tests.e2e.server import ServerProcess

TERMINAL = {"succeeded", "failed", "cancelled"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def yungu(n: int, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        srv = ServerProcess(data).start()
        try:
            admin = {"Authorization": f"Bearer {srv.admin_key}"}
            t = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "bench"}, headers=admin).json()
            key = httpx.post(
                srv.url + "/api/v1/admin/keys", json={"role": "tenant", "tenant_id": t["id"]}, headers=admin
            ).json()["secret"]
            h = {"Authorization": f"Bearer {key}"}
            lat = []
            with httpx.Client(base_url=srv.url + "/api/v1", headers=h) as c:
                for i in range(samples):  # idle platform, one job at a time
                    t0 = time.perf_counter()
                    jid = c.post("/jobs", json={"name": f"l{i}", "command": "sleep 0.2"}).json()["id"]
                    while c.get(f"/jobs/{jid}").json()["state"] not in ("running", *TERMINAL):
                        time.sleep(0.005)
                    lat.append((time.perf_counter() - t0) * 1000)
                    while c.get(f"/jobs/{jid}").json()["state"] not in TERMINAL:
                        time.sleep(0.05)

            def submit(i: int) -> None:
                with httpx.Client(base_url=srv.url + "/api/v1", headers=h) as c:
                    for k in range(i, n, 16):
                        c.post("/jobs", json={"name": f"t{k}", "command": "true"}).raise_for_status()

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(submit, range(16)))
            t_submitted = time.perf_counter() - t0
            with httpx.Client(base_url=srv.url + "/api/v1", headers=h) as c:
                while True:
                    done = sum(
                        1
                        for s in ("succeeded", "failed", "cancelled")
                        for _ in c.get("/jobs", params={"state": s, "limit": 500}).json()["items"]
                    )
                    counts = c.get(
                        "/jobs",
                        params={
                            "state": ["pending", "queued", "scheduled", "dispatched", "running"],
                            "limit": 1,
                        },
                    ).json()["items"]
                    if not counts and done:
                        break
                    time.sleep(0.05)
                elapsed = time.perf_counter() - t0
                failed = len(c.get("/jobs", params={"state": "failed", "limit": 500}).json()["items"])
            return {
                "jobs_per_s": n / elapsed,
                "submit_per_s": n / t_submitted,
                "elapsed_s": elapsed,
                "p50_ms": statistics.median(lat),
                "p99_ms": pct(lat, 99),
                "failed": failed,
            }
        finally:
            srv.stop()


def slurm(n: int, samples: int) -> dict[str, float]:
    from tests.executors.slurm_cluster import start_cluster

    with tempfile.TemporaryDirectory() as tmp:
        cl = start_cluster(Path(tmp))
        env = cl.env
        try:

            def squeue_empty() -> bool:
                return not subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
                ).stdout.strip()

            lat = []
            for _ in range(samples):
                t0 = time.perf_counter()
                jid = subprocess.run(
                    ["sbatch", "--parsable", "-o", "/dev/null", "--wrap=sleep 0.2"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                while True:
                    st = subprocess.run(
                        ["squeue", "-h", "-j", jid, "-o", "%T"], env=env, capture_output=True, text=True
                    ).stdout.strip()
                    if st in ("RUNNING", "COMPLETING", "COMPLETED", ""):
                        break
                    time.sleep(0.005)
                lat.append((time.perf_counter() - t0) * 1000)
                while not squeue_empty():
                    time.sleep(0.05)
            t0 = time.perf_counter()
            for _ in range(n):
                subprocess.run(
                    ["sbatch", "--parsable", "-o", "/dev/null", "--wrap=true"],
                    env=env,
                    capture_output=True,
                    check=True,
                )
            t_submitted = time.perf_counter() - t0
            while not squeue_empty():
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            return {
                "jobs_per_s": n / elapsed,
                "submit_per_s": n / t_submitted,
                "elapsed_s": elapsed,
                "p50_ms": statistics.median(lat),
                "p99_ms": pct(lat, 99),
                "failed": 0,
            }
        finally:
            cl.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--latency-samples", type=int, default=30)
    ap.add_argument("--skip-slurm", action="store_true")
    a = ap.parse_args()
    rows = [("Yungu local executor", yungu(a.jobs, a.latency_samples))]
    if not a.skip_slurm:
        rows.append(("Slurm 22.05 (slurmctld + 2 slurmd)", slurm(a.jobs, a.latency_samples)))
    print(
        f"\nmachine: {machine()}; {a.jobs} trivial jobs; latency over {a.latency_samples} jobs on an idle system\n"
    )
    print(
        "| system | end-to-end jobs/s | submissions/s | total s | submit->running p50 ms | p99 ms | failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['jobs_per_s']:.0f} | {r['submit_per_s']:.0f} | {r['elapsed_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']:.0f} |"
        )
    if len(rows) == 2:
        print(f"\nthroughput ratio Yungu/Slurm: {rows[0][1]['jobs_per_s'] / rows[1][1]['jobs_per_s']:.1f}x")


if __name__ == "__main__":
    main()

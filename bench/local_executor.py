"""Micro-benchmark: the local executor's submit and completion rate against raw Popen.

    python bench/local_executor.py [--jobs 2000]

Runs N trivial jobs (``true``) straight through ``LocalExecutor`` (submit all from one
thread, and again from ``--threads`` threads, then
observe until all are done) and, as the baseline in the same run, N bare
``subprocess.Popen(["/bin/sh", "-c", "true"])`` + ``wait``. Prints one table with
the ratio; the executor's own per-operation latency histogram follows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from yungu.adapters.executors.local import LocalExecutor
from yungu.ports.executor import Launch, ReplicaLaunch


def raw_popen(n: int, window: int) -> tuple[float, list[float]]:
    """Popen rate with at most ``window`` children alive (like max_processes)."""
    start = time.perf_counter()
    lat: list[float] = []
    live: list[subprocess.Popen[bytes]] = []
    for _ in range(n):
        t0 = time.perf_counter()
        live.append(
            subprocess.Popen(["/bin/sh", "-c", "true"], stdin=subprocess.DEVNULL, start_new_session=True)
        )
        lat.append(time.perf_counter() - t0)
        if len(live) >= window:
            live.pop(0).wait()
    for p in live:
        p.wait()
    return time.perf_counter() - start, lat


def executor_run(
    n: int, max_processes: int, threads: int = 1
) -> tuple[float, list[float], float, dict[str, object]]:
    """Submit ``n`` jobs from ``threads`` threads, then observe until all are done."""
    with tempfile.TemporaryDirectory(prefix="yungu-bench-") as tmp:
        ex = LocalExecutor("bench", {"max_processes": max_processes}, Path(tmp))
        try:
            ids = [f"bench-{i}.1" for i in range(n)]
            lat: list[float] = []

            def submit_some(chunk: list[str]) -> None:
                for rid in chunk:
                    t0 = time.perf_counter()
                    st = ex.submit(Launch(rid, rid, "t", "p", "true", (ReplicaLaunch(0),)))
                    lat.append(time.perf_counter() - t0)
                    assert not hasattr(st, "code"), st

            start = time.perf_counter()
            workers = [threading.Thread(target=submit_some, args=(ids[k::threads],)) for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            submitted = time.perf_counter() - start
            remaining = set(ids)
            while remaining:
                obs = ex.observe(sorted(remaining))
                remaining = {rid for rid, s in obs.items() if not getattr(s, "done", False)}
                if remaining:
                    time.sleep(0.005)
            total = time.perf_counter() - start
            bad = [s for s in ex.observe(ids).values() if getattr(s, "exit_code", None) != 0]
            assert not bad, bad[:3]
            return total, lat, submitted, ex.stats()
        finally:
            ex.close()


def idle_latency(n: int) -> list[float]:
    """submit -> running on an idle executor: one ``sleep 0.02`` job at a time."""
    with tempfile.TemporaryDirectory(prefix="yungu-bench-") as tmp:
        ex = LocalExecutor("bench-idle", {}, Path(tmp))
        try:
            lat = []
            for i in range(n):
                rid = f"idle-{i}.1"
                t0 = time.perf_counter()
                st = ex.submit(Launch(rid, f"idle-{i}", "t", "p", "sleep 0.02", (ReplicaLaunch(0),)))
                while getattr(st, "phase", None) is not None and st.phase.value == "pending":  # type: ignore[union-attr]
                    st = ex.status(rid)
                lat.append(time.perf_counter() - t0)
                assert getattr(st, "phase", None) is not None and st.phase.value == "running", st  # type: ignore[union-attr]
                while not getattr(ex.status(rid), "done", True):
                    time.sleep(0.005)
            return lat
        finally:
            ex.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=200, help="jobs for the idle submit -> running latency")
    ap.add_argument("--max-processes", type=int, default=256)
    ap.add_argument("--threads", type=int, default=4, help="submitting threads for the parallel run")
    args = ap.parse_args()
    n = args.jobs

    raw_total, raw_lat = raw_popen(n, args.max_processes)
    ex_total, ex_lat, ex_submitted, stats = executor_run(n, args.max_processes)
    par_total, par_lat, _, _ = executor_run(n, args.max_processes, threads=args.threads)
    idle = idle_latency(args.idle)

    def ms(xs: list[float], q: int) -> float:
        return 1000 * statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else 1000 * xs[0]

    print(
        f"machine: {platform.machine()} {platform.system()} {platform.release()}, python {platform.python_version()}"
    )
    print(
        f"{n} jobs of `true`, max_processes={args.max_processes}; load average before: {os.getloadavg()[0]:.1f}"
    )
    print(f"{'path':<34}{'jobs/s':>10}{'call p50 ms':>13}{'call p99 ms':>13}")
    rows = [
        ("raw Popen(sh -c true) + wait", n / raw_total, raw_lat),
        ("LocalExecutor submit -> done", n / ex_total, ex_lat),
        (f"  same, submits from {args.threads} threads", n / par_total, par_lat),
    ]
    for label, rate, lat in rows:
        print(f"{label:<34}{rate:>10.0f}{ms(lat, 50):>13.3f}{ms(lat, 99):>13.3f}")
    print(f"{'LocalExecutor submit calls only':<34}{n / ex_submitted:>10.0f}")
    print(
        f"ratio executor/raw end to end: {(n / ex_total) / (n / raw_total):.2f} (1 thread), "
        f"{(n / par_total) / (n / raw_total):.2f} ({args.threads} threads)"
    )
    print(f"idle submit -> running ({args.idle} jobs): p50 {ms(idle, 50):.3f} ms, p99 {ms(idle, 99):.3f} ms")
    print("executor latency histogram, throughput run (ms):")
    for op, row in stats.items():
        print(f"  {op:<12} {row}")


if __name__ == "__main__":
    main()

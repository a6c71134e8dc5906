"""Micro-benchmark: the local executor's submit and completion rate against raw Popen.

    python bench/local_executor.py [--jobs 2000]

Runs N trivial jobs (``true``) straight through ``LocalExecutor`` (submit all, then
observe until all are done) and, as the baseline in the same run, N bare
``subprocess.Popen(["/bin/sh", "-c", "true"])`` + ``wait``. Prints one table with
the ratio; the executor's own per-operation latency histogram follows.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
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
        live.append(subprocess.Popen(["/bin/sh", "-c", "true"], stdin=subprocess.DEVNULL, start_new_session=True))
        lat.append(time.perf_counter() - t0)
        if len(live) >= window:
            live.pop(0).wait()
    for p in live:
        p.wait()
    return time.perf_counter() - start, lat


def executor_run(n: int, max_processes: int) -> tuple[float, list[float], float, dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="yungu-bench-") as tmp:
        ex = LocalExecutor("bench", {"max_processes": max_processes}, Path(tmp))
        try:
            start = time.perf_counter()
            lat: list[float] = []
            ids = []
            for i in range(n):
                rid = f"bench-{i}.1"
                t0 = time.perf_counter()
                st = ex.submit(Launch(rid, f"bench-{i}", "t", "p", "true", (ReplicaLaunch(0),)))
                lat.append(time.perf_counter() - t0)
                assert not hasattr(st, "code"), st
                ids.append(rid)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--max-processes", type=int, default=256)
    args = ap.parse_args()
    n = args.jobs

    raw_total, raw_lat = raw_popen(n, args.max_processes)
    ex_total, ex_lat, ex_submitted, stats = executor_run(n, args.max_processes)

    def ms(xs: list[float], q: float) -> float:
        return 1000 * statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else 1000 * xs[0]

    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, python {platform.python_version()}")
    print(f"{n} jobs of `true`, max_processes={args.max_processes}")
    print(f"{'path':<34}{'jobs/s':>10}{'call p50 ms':>13}{'call p99 ms':>13}")
    print(f"{'raw Popen(sh -c true) + wait':<34}{n / raw_total:>10.0f}{ms(raw_lat, 50):>13.3f}{ms(raw_lat, 99):>13.3f}")
    print(f"{'LocalExecutor submit -> done':<34}{n / ex_total:>10.0f}{ms(ex_lat, 50):>13.3f}{ms(ex_lat, 99):>13.3f}")
    print(f"{'LocalExecutor submit only':<34}{n / ex_submitted:>10.0f}")
    print(f"ratio executor/raw end to end: {(n / ex_total) / (n / raw_total):.2f}")
    print("executor latency histogram (ms):")
    for op, row in stats.items():
        print(f"  {op:<12} {row}")


if __name__ == "__main__":
    main()

"""What the job sandbox costs: the local executor with ``sandbox = true`` against
``sandbox = false`` (the previous behaviour: plain processes as the platform's user), in
the same run.

    python bench/executor_sandbox.py [--jobs 1000] [--latency 100] [--tenants 10]

Three figures per mode, one table, and the on/off ratio:

- **throughput**: N trivial jobs (``true``, tenants round-robin) submitted from one thread
  and observed until all are done (jobs/s, first submit -> last done);
- **submit -> running**: one ``sleep 0.05`` at a time on an idle executor, from the call of
  ``submit()`` until the executor reports it running (what the platform's loop sees);
- **submit -> command starts**: the same jobs, until the command's first line runs
  (``date +%s.%N`` inside the job, read from its log): the whole cost of supervisor,
  setpriv, bubblewrap's namespaces and mounts, and the cgroup join.

Run as root (the sandbox's normal mode); it refuses to run without bubblewrap.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from yungu.adapters.executors.local import LocalExecutor
from yungu.ports.executor import ExecError, ExecPhase, ExecStatus, Launch, ReplicaLaunch


def _q(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


def _executor(tmp: Path, name: str, sandbox: bool) -> LocalExecutor:
    settings: dict[str, Any] = {"sandbox": sandbox, "max_processes": 256}
    if sandbox:
        settings["runs_root"] = str(tmp / "runs")
    ex = LocalExecutor(name, settings, tmp / name)
    report = ex.check()
    if sandbox and not report["reachable"]:
        raise SystemExit(f"the sandbox is not available here: {report.get('error')}")
    return ex


def throughput(tmp: Path, sandbox: bool, n: int, tenants: int) -> float:
    ex = _executor(tmp, f"tp-{int(sandbox)}", sandbox)
    try:
        ids = [f"tp-{i}.1" for i in range(n)]
        start = time.perf_counter()
        for i, rid in enumerate(ids):
            st = ex.submit(Launch(rid, rid, f"tenant-{i % tenants}", "p", "true", (ReplicaLaunch(0),)))
            assert not isinstance(st, ExecError), st
        remaining = set(ids)
        while remaining:
            obs = ex.observe(sorted(remaining))
            remaining = {r for r, s in obs.items() if not (isinstance(s, ExecStatus) and s.done)}
            if remaining:
                time.sleep(0.005)
        total = time.perf_counter() - start
        bad = [s for s in ex.observe(ids).values() if not isinstance(s, ExecStatus) or s.exit_code != 0]
        assert not bad, bad[:3]
        return n / total
    finally:
        ex.close()


def latency(tmp: Path, sandbox: bool, n: int) -> tuple[list[float], list[float]]:
    """(submit -> reported running, submit -> the command's first line), seconds."""
    ex = _executor(tmp, f"lat-{int(sandbox)}", sandbox)
    running, started = [], []
    try:
        for i in range(n):
            rid = f"lat-{i}.1"
            la = Launch(rid, rid, "tenant-lat", "p", "date +%s.%N; sleep 0.05", (ReplicaLaunch(0),))
            t_wall, t0 = time.time(), time.perf_counter()
            st = ex.submit(la)
            while isinstance(st, ExecStatus) and st.phase is ExecPhase.PENDING:
                st = ex.status(rid)
            running.append(time.perf_counter() - t0)
            assert isinstance(st, ExecStatus) and st.phase is ExecPhase.RUNNING, st
            while not getattr(ex.status(rid), "done", True):
                time.sleep(0.002)
            chunk = ex.logs(rid)
            assert not isinstance(chunk, ExecError), chunk
            started.append(float(chunk.data.split()[0]) - t_wall)
        return running, started
    finally:
        ex.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--latency", type=int, default=100, help="jobs, one at a time, for the latencies")
    ap.add_argument("--tenants", type=int, default=10)
    args = ap.parse_args()
    if not shutil.which("bwrap"):
        raise SystemExit("bubblewrap is not installed (make system-deps)")
    load = os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="yungu-bench-sandbox-") as name:
        tmp = Path(name)
        tmp.chmod(0o711)
        for sandbox in (False, True):  # off first: the baseline
            rate = throughput(tmp, sandbox, args.jobs, args.tenants)
            run, cmd = latency(tmp, sandbox, args.latency)
            rows[sandbox] = (rate, run, cmd)
    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, uid {os.geteuid()}; load average before: {load:.1f}, "
          f"after: {os.getloadavg()[0]:.1f}")
    print(f"{args.jobs} jobs of `true` over {args.tenants} tenants for throughput; {args.latency} one at a time "
          "for latency")
    head = f"{'sandbox':<9}{'jobs/s':>9}{'->running p50':>15}{'p99 ms':>9}{'->command p50':>15}{'p99 ms':>9}"
    print(head)
    for sandbox in (False, True):
        rate, run, cmd = rows[sandbox]
        print(f"{'on' if sandbox else 'off':<9}{rate:>9.0f}{1000 * _q(run, 50):>15.2f}{1000 * _q(run, 99):>9.2f}"
              f"{1000 * _q(cmd, 50):>15.2f}{1000 * _q(cmd, 99):>9.2f}")
    (r0, run0, cmd0), (r1, run1, cmd1) = rows[False], rows[True]
    print(f"ratio on/off: throughput {r1 / r0:.2f}x; submit->running p50 {_q(run1, 50) / _q(run0, 50):.2f}x; "
          f"submit->command p50 {_q(cmd1, 50) / _q(cmd0, 50):.2f}x "
          f"(+{1000 * (_q(cmd1, 50) - _q(cmd0, 50)):.1f} ms per launch until the command runs)")


if __name__ == "__main__":
    main()

"""Dispatch overhead per job — platform ``submit()`` call to the command running in the engine.

    python bench/dispatch_overhead.py [--jobs 200] [--window 4] [--ray-jobs N] [--engines local,slurm,ray]

For each engine (a real single-machine Slurm cluster and a real Ray head are started here,
as in the tests) it runs N jobs whose command is ``date +%s.%N > <file>``: the overhead of a
job is the wall-clock time its command started minus the time ``submit()`` was called, so
polling granularity does not enter. At most ``--window`` jobs are in flight (the engines
have the CPUs for them), so queueing for resources does not enter either. The baseline in
the same run is the same command started with a bare ``subprocess.Popen``.

Then the Slurm submission rate: N held jobs (``--hold``, so scheduling does not compete)
through ``SlurmExecutor.submit`` (lock + name lookup + sbatch) against N bare
``sbatch --hold --wrap=true`` calls, next to the 500 jobs/s Slurm's documentation states.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.executors import ray_cluster, slurm_cluster  # noqa: E402
from yungu.ports.executor import ExecError, Executor, Launch, ReplicaLaunch  # noqa: E402

SLURM_DOCUMENTED_JOBS_PER_S = 500.0


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def started_at(path: Path, deadline: float) -> float:
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"{path} never appeared")


def run_popen(n: int, out: Path) -> list[float]:
    lat = []
    for i in range(n):
        f = out / f"popen-{i}"
        t0 = time.time()
        p = subprocess.Popen(["/bin/sh", "-c", f"date +%s.%N > {f}"])
        p.wait()
        lat.append(started_at(f, time.monotonic() + 10) - t0)
    return lat


def run_executor(ex: Executor, n: int, window: int, out: Path, timeout_s: float) -> list[float]:
    """Submit n jobs with at most ``window`` in flight; return start - submit per job (seconds)."""
    lat: list[float] = []
    inflight: dict[str, tuple[float, Path]] = {}
    tag = uuid.uuid4().hex[:8]
    i = 0
    deadline = time.monotonic() + timeout_s
    while (i < n or inflight) and time.monotonic() < deadline:
        while i < n and len(inflight) < window:
            f = out / f"{ex.name}-{i}"
            la = Launch(
                f"bench-{tag}-{i}.1",
                f"bench-{tag}-{i}",
                "bench",
                "bench",
                f"date +%s.%N > {f}",
                (ReplicaLaunch(0),),
            )
            t0 = time.time()
            st = ex.submit(la)
            if isinstance(st, ExecError):
                raise SystemExit(f"{ex.name}: submit failed: {st}")
            inflight[la.request_id] = (t0, f)
            i += 1
        seen = ex.observe(list(inflight))
        for rid, st in seen.items():
            if isinstance(st, ExecError):
                raise SystemExit(f"{ex.name}: observe failed: {st}")
            if st.done:
                t0, f = inflight.pop(rid)
                lat.append(started_at(f, time.monotonic() + 10) - t0)
        time.sleep(0.02)
    if len(lat) < n:
        raise SystemExit(f"{ex.name}: only {len(lat)}/{n} jobs finished within {timeout_s:.0f}s")
    return lat


def rate(n: int, fn: Callable[[int], None]) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument(
        "--ray-jobs",
        type=int,
        default=None,
        help="jobs for Ray only (default --jobs); a Ray job costs seconds on a 2-core box",
    )
    ap.add_argument("--engines", default="local,slurm,ray")
    args = ap.parse_args()
    engines = args.engines.split(",")
    rows: list[tuple[str, list[float]]] = []
    extra: list[str] = []
    with tempfile.TemporaryDirectory(prefix="yungu-bench-dispatch-") as tmp_s:
        tmp = Path(tmp_s)
        out = tmp / "out"
        out.mkdir()
        rows.append(("popen (baseline)", run_popen(args.jobs, out)))

        if "local" in engines:
            from yungu.adapters.executors.local import LocalExecutor

            # The job sandbox shows jobs only what is bound in: the output dir (docs/security.md).
            tmp.chmod(0o711)
            out.chmod(0o777)
            bind = {"src": str(out), "dst": str(out), "mode": "rw"}
            ex = LocalExecutor("local", {"runs_root": str(tmp / "runs"), "binds": [bind]}, tmp / "local")
            try:
                rows.append(("local", run_executor(ex, args.jobs, args.window, out, 600)))
            finally:
                ex.close()

        if "slurm" in engines:
            from yungu.adapters.executors.slurm import SlurmConfig, SlurmExecutor

            cluster = slurm_cluster.start_cluster(tmp / "slurm")
            try:
                ex = SlurmExecutor("slurm", SlurmConfig(workdir=tmp / "slurm-jobs", slurm_conf=cluster.conf))
                rows.append(("slurm", run_executor(ex, args.jobs, args.window, out, 900)))
                held = SlurmExecutor(
                    "slurm-held",
                    SlurmConfig(
                        workdir=tmp / "slurm-held", slurm_conf=cluster.conf, extra_sbatch_args=("--hold",)
                    ),
                )
                tag = uuid.uuid4().hex[:8]

                def ours(i: int) -> None:
                    st = held.submit(Launch(f"held-{tag}-{i}.1", "j", "t", "p", "true", (ReplicaLaunch(0),)))
                    if isinstance(st, ExecError):
                        raise SystemExit(f"held submit failed: {st}")

                def bare(i: int) -> None:
                    subprocess.run(
                        ["sbatch", "--hold", "--parsable", "--output=/dev/null", "--wrap=true"],
                        env=cluster.env,
                        check=True,
                        capture_output=True,
                    )

                bare_rate = rate(args.jobs, bare)
                our_rate = rate(args.jobs, ours)
                subprocess.run(["scancel", "--state=PENDING", "--me"], env=cluster.env, check=False)
                extra += [
                    "",
                    f"Slurm submissions/s ({args.jobs} held jobs, one client, sequential)",
                    f"{'path':<34}{'jobs/s':>10}{'vs bare':>10}{'vs 500/s doc':>14}",
                    f"{'bare sbatch --hold --wrap=true':<34}{bare_rate:>10.1f}{1.0:>10.2f}"
                    f"{bare_rate / SLURM_DOCUMENTED_JOBS_PER_S:>14.3f}",
                    f"{'SlurmExecutor.submit':<34}{our_rate:>10.1f}{our_rate / bare_rate:>10.2f}"
                    f"{our_rate / SLURM_DOCUMENTED_JOBS_PER_S:>14.3f}",
                ]
            finally:
                cluster.stop()

        if "ray" in engines:
            from yungu.adapters.executors.ray import RayConfig, RayExecutor

            ray_jobs = args.ray_jobs or args.jobs
            head = ray_cluster.start_cluster(tmp / "ray")
            try:
                ex = RayExecutor("ray", RayConfig(address=head.address))
                rows.append(
                    (
                        f"ray ({ray_jobs} jobs)" if ray_jobs != args.jobs else "ray",
                        run_executor(ex, ray_jobs, args.window, out, 1800),
                    )
                )
            finally:
                head.stop()

    base = statistics.median(rows[0][1])
    print(
        f"Dispatch overhead: submit() -> command running ({args.jobs} jobs each, window {args.window}); "
        f"{platform.machine()}, {platform.python_version()}"
    )
    print(f"{'engine':<18}{'median ms':>12}{'p99 ms':>10}{'max ms':>10}{'median vs popen':>18}")
    for name, lat in rows:
        med = statistics.median(lat)
        print(
            f"{name:<18}{1000 * med:>12.1f}{1000 * pct(lat, 0.99):>10.1f}{1000 * max(lat):>10.1f}"
            f"{med / base:>17.1f}x"
        )
    for line in extra:
        print(line)


if __name__ == "__main__":
    main()

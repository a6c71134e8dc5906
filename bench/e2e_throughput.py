"""End-to-end job throughput and submit -> running latency: Yungu (real server, job sandbox
on) vs a real single-machine Slurm, on the same machine, in the same run, with the CPU each
side spent per job.

    python bench/e2e_throughput.py [--jobs 2000] [--latency-samples 30] [--runs 1] [--skip-slurm]

Yungu: a real `yungu server` (SQLite, the embedded default world, its local executor with
the job sandbox on: every job runs as its tenant's uid in bubblewrap, cgroup limits), N
trivial jobs (`true`) submitted through the HTTP API by 16 concurrent clients; throughput =
N / (first submit -> last job terminal). Slurm: the same N jobs as `sbatch --wrap=true` from
one client against slurmctld + 2 slurmd (Epilog=/bin/true, the fastest setting in
../shared/notes/slurm-on-one-machine.md). Latency: one job at a time on an idle system,
polling every 5 ms until the job is seen running (Yungu: GET /jobs/{id}; Slurm: squeue).

CPU per job (clients included: the 16 HTTP clients here, the sbatch processes there) says where the time goes, and does not depend on how much of the machine the
other tenants of a shared host leave us (throughput does): user + system time from /proc of
the server's threads (named with py-spy when it is installed), of the local executor's
launcher process and of the job processes it reaped (supervisor, unshare, bwrap, the job);
for Slurm, of its daemons and what they reaped, plus the sbatch clients. Run as root (the
sandbox and Slurm need it). `--runs N` repeats the pair N times and prints the ranges.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
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

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ["pending", "queued", "scheduled", "dispatched", "running"]
TICK = os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _stat(path: str) -> list[str]:
    return Path(path).read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process."""
    f = _stat(f"/proc/{pid}/stat")
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def threads_of(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            f = _stat(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / TICK
    return out


def children_of(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):  # a child belongs to the thread that started it
        with contextlib.suppress(OSError):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def thread_names(pid: int) -> dict[int, str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(spy, os.X_OK):
        return {}
    out = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True).stdout
    return {int(m.group(1), 0): m.group(2) for m in re.finditer(r'Thread (\S+) \([^)]*\): "([^"]+)"', out)}


def load() -> float:
    return os.getloadavg()[0]


class CpuAcct:
    """A cgroup v1 ``cpuacct`` group of our own: the CPU of every process moved into it and
    of all their descendants (the jobs too: cpuacct is mounted on its own here, so the jobs'
    cpu/memory/pids cgroups do not take them out of it). None where there is no such mount."""

    def __init__(self, name: str) -> None:
        mount = next((line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                      if line.split()[2] == "cgroup" and "cpuacct" in line.split()[3].split(",")), None)
        self.path = Path(mount, f"yungu-bench-{name}-{os.getpid()}") if mount else None
        if self.path is not None:
            self.path.mkdir(exist_ok=True)

    def join(self, *pids: int) -> None:
        for pid in pids:
            if self.path is not None:
                (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float | None:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9 if self.path is not None else None

    def close(self) -> None:
        if self.path is None:
            return
        root = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                root.write_text(f"{pid}\n")
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def yungu(n: int, samples: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="yungu-bench-e2e-") as tmp:
        Path(tmp).chmod(0o711)  # tenants' bubblewraps traverse it to their run dirs
        data, runs = Path(tmp) / "data", Path(tmp) / "runs"
        data.mkdir(mode=0o700)
        runs.mkdir(mode=0o711)
        os.environ["YUNGU_RUNS_ROOT"] = str(runs)  # the server inherits it: run dirs stay in this temp dir
        # Its own session, like Slurm's daemons: with the kernel's autogroup scheduling a
        # session shares the CPU as one, so the server must not share one with our clients.
        srv = ServerProcess(data, new_session=True).start()
        acct = CpuAcct("yungu")
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
            assert srv.proc is not None
            pid = srv.proc.pid
            kids = children_of(pid)  # the local executor's launcher
            acct.join(pid, *kids)
            before = threads_of(pid), cpu_of(pid), {k: cpu_of(k) for k in kids}
            total0 = acct.seconds()
            load0 = load()
            me0 = resource.getrusage(resource.RUSAGE_SELF)

            def submit(i: int) -> None:
                with httpx.Client(base_url=srv.url + "/api/v1", headers=h) as c:
                    for k in range(i, n, 16):
                        c.post("/jobs", json={"name": f"t{k}", "command": "true"}).raise_for_status()

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(submit, range(16)))
            t_submitted = time.perf_counter() - t0
            me1 = resource.getrusage(resource.RUSAGE_SELF)
            with httpx.Client(base_url=srv.url + "/api/v1", headers=h) as c:
                while c.get("/jobs", params={"state": ACTIVE, "limit": 1}).json()["items"]:
                    time.sleep(0.05)
                elapsed = time.perf_counter() - t0
                failed = len(c.get("/jobs", params={"state": "failed", "limit": 500}).json()["items"])
            after = threads_of(pid), cpu_of(pid), {k: cpu_of(k) for k in kids}
            total1 = acct.seconds()
            names = thread_names(pid)
            cpu: dict[str, float] = {}
            for tid, s in after[0].items():
                label = f"server: {names.get(tid, f'thread {tid}')}"
                cpu[label] = cpu.get(label, 0.0) + (s - before[0].get(tid, 0.0)) * 1000 / n
            cpu["server: reaped children"] = (after[1][1] - before[1][1]) * 1000 / n
            clients = (me1.ru_utime - me0.ru_utime + me1.ru_stime - me0.ru_stime) * 1000 / n
            for k in kids:
                if k in after[2] and k in before[2]:
                    cpu["launcher process"] = (after[2][k][0] - before[2][k][0]) * 1000 / n
                    cpu["job processes (supervisor, unshare, bwrap, job)"] = (
                        after[2][k][1] - before[2][k][1]) * 1000 / n
            return {
                "jobs_per_s": n / elapsed,
                "submit_per_s": n / t_submitted,
                "elapsed_s": elapsed,
                "p50_ms": statistics.median(lat),
                "p99_ms": pct(lat, 99),
                "failed": failed,
                "load": (load0, load()),
                "cpu": {k: v for k, v in cpu.items() if v >= 0.005},
                # the server and everything it started (launcher, jobs), plus the HTTP clients
                "cpu_total": (total1 - total0) * 1000 / n + clients
                if total0 is not None and total1 is not None else None,
                "clients": clients,
            }
        finally:
            srv.stop()
            os.environ.pop("YUNGU_RUNS_ROOT", None)
            acct.close()


def slurm(n: int, samples: int) -> dict[str, object]:
    from tests.executors.slurm_cluster import start_cluster

    with tempfile.TemporaryDirectory() as tmp:
        cl = start_cluster(Path(tmp))
        env = cl.env
        acct = CpuAcct("slurm")
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
                    env=env, capture_output=True, text=True, check=True,
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
            daemons = {p.args[0].rsplit("/", 1)[-1] + (f" {p.args[3]}" if "slurmd" in p.args[0] else ""): p.pid
                       for p in cl.procs}
            acct.join(*daemons.values())
            before = {k: cpu_of(pid) for k, pid in daemons.items()}
            total0 = acct.seconds()
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            load0 = load()
            t0 = time.perf_counter()
            for _ in range(n):
                subprocess.run(
                    ["sbatch", "--parsable", "-o", "/dev/null", "--wrap=true"], env=env, capture_output=True, check=True
                )
            t_submitted = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            while not squeue_empty():
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            total1 = acct.seconds()
            cpu = {}
            for k, pid in daemons.items():
                own, reaped = cpu_of(pid)
                cpu[k] = (own - before[k][0]) * 1000 / n
                if reaped - before[k][1] > 0:
                    cpu[f"{k}: reaped children"] = (reaped - before[k][1]) * 1000 / n
            cpu["sbatch clients"] = clients = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000 / n
            return {
                "jobs_per_s": n / elapsed,
                "submit_per_s": n / t_submitted,
                "elapsed_s": elapsed,
                "p50_ms": statistics.median(lat),
                "p99_ms": pct(lat, 99),
                "failed": 0,
                "load": (load0, load()),
                "cpu": {k: v for k, v in cpu.items() if v >= 0.005},
                # the daemons and everything they started (slurmstepd, the jobs), plus the clients
                "cpu_total": (total1 - total0) * 1000 / n + clients
                if total0 is not None and total1 is not None else None,
                "clients": clients,
            }
        finally:
            cl.stop()
            acct.close()


def _cpu_total(r: dict[str, object]) -> float:
    """Everything the system spent per job: the cpuacct group's figure where there is one,
    else the sum of the parts read from /proc."""
    total = r.get("cpu_total")
    return float(total) if isinstance(total, float) else float(sum(r["cpu"].values()))  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--latency-samples", type=int, default=30)
    ap.add_argument("--runs", type=int, default=1, help="repeat the Yungu/Slurm pair this many times")
    ap.add_argument("--skip-slurm", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the job sandbox and the Slurm test cluster need it")
    results = []
    for _ in range(a.runs):
        pair = [("Yungu, local executor, sandbox on", yungu(a.jobs, a.latency_samples))]
        if not a.skip_slurm:
            pair.append(("Slurm 22.05 (slurmctld + 2 slurmd)", slurm(a.jobs, a.latency_samples)))
        results.append(pair)
    print(f"\nmachine: {machine()}; {a.jobs} trivial jobs; latency over {a.latency_samples} jobs on an idle "
          "system; load average (1 min) at the start and end of each throughput phase\n")
    print("| run | system | end-to-end jobs/s | submissions/s | total s | submit->running p50 ms | p99 ms "
          "| failed | CPU ms/job (clients) | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, pair in enumerate(results, 1):
        for name, r in pair:
            l0, l1 = r["load"]  # type: ignore[misc]
            print(f"| {i} | {name} | {r['jobs_per_s']:.0f} | {r['submit_per_s']:.0f} | {r['elapsed_s']:.1f} | "
                  f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']:.0f} | "
                  f"{_cpu_total(r):.1f} ({r['clients']:.1f}) | {l0:.1f} -> {l1:.1f} |")
    for i, pair in enumerate(results, 1):
        for name, r in pair:
            print(f"\nrun {i}, {name}: CPU ms per job, parts read from /proc (the total above also counts"
                  " what they started and did not reap themselves)")
            for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):  # type: ignore[attr-defined]
                print(f"  {v:7.2f}  {k}")
    if not a.skip_slurm:
        ratios = [p[0][1]["jobs_per_s"] / p[1][1]["jobs_per_s"] for p in results]  # type: ignore[operator]
        cpu = [_cpu_total(p[1][1]) / _cpu_total(p[0][1]) for p in results]
        print(f"\nthroughput ratio Yungu/Slurm per run: {', '.join(f'{x:.1f}x' for x in ratios)}"
              f" (range {min(ratios):.1f}-{max(ratios):.1f}x)")
        print(f"CPU per job, Slurm/Yungu per run: {', '.join(f'{x:.2f}x' for x in cpu)}")


if __name__ == "__main__":
    main()

"""Where a sandboxed launch's time goes: the CPU (and wall time) of each step of the chain.

    python bench/sandbox_chain.py [--launches 200] [--rounds 3]

Runs each variant of the process chain one launch at a time, the variants interleaved in
rounds (the machine's load changes under us), and reports per launch the CPU that the
chain's processes used (user + system, from ``getrusage(RUSAGE_CHILDREN)``: every process
of the chain is reaped by its parent, so all of them count) and the wall time until it
ended. Baseline in the same run: ``/bin/sh -c true``. The real chain is built by the
executor's own ``Sandbox`` (the argv a job gets, with ``true`` as the command; outside the
supervisor without ``--args``, the environment on fd 3 that only the supervisor opens);
variants remove one piece at a time. Needs root and bubblewrap.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine
from yungu.adapters.executors.sandbox import SANDBOX_SHIM, SUPERVISOR_ENV, Sandbox


def variants(sb: Sandbox, uid: int, work: Path, ctl: Path) -> dict[str, list[str]]:
    full = sb.argv(uid, work, "true")  # [unshare --setgid --setuid --, bwrap ..., sh -c true]
    at = full.index("--args")  # the environment on fd 3: only the supervisor opens it
    chain = full[:at] + full[at + 2:]
    bwrap_at = chain.index(sb.bwrap)
    drop, bwrap = chain[:bwrap_at], chain[bwrap_at:]
    setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    no_second_userns = [a for a in bwrap if a != "--disable-userns"]
    tail = bwrap.index("--chdir")
    rest = bwrap[tail:]
    rest[rest.index("--chdir") + 1] = "/tmp"  # an existing mount point: the root is read-only here
    minimal_fs = [sb.bwrap, *bwrap[1:bwrap.index("--ro-bind")], "--ro-bind", "/", "/", "--bind", str(work), "/tmp",
                  *rest]
    (ctl / "p.args").write_bytes(sb.env_args({"PATH": "/usr/bin:/bin"}))
    return {
        "sh -c true (baseline)": ["/bin/sh", "-c", "true"],
        "drop: setpriv --reuid ... (before) -> sh": [*setpriv, "/bin/sh", "-c", "true"],
        "drop: unshare --setuid (now) -> sh": [*drop, "/bin/sh", "-c", "true"],
        "chain with setpriv (before)": [*setpriv, *bwrap],
        "chain with unshare (now)": chain,
        "  ... without --disable-userns (2nd user ns)": [*drop, *no_second_userns],
        "  ... with only --ro-bind / / and the run dir (2 mounts)": [*drop, *minimal_fs],
        "supervisor + chain (now, no cgroups)": ["/bin/sh", "-c", SANDBOX_SHIM, "yungu-bench", str(ctl / "p"), "",
                                                 *full],
    }


def run(argv: list[str], n: int) -> tuple[float, float]:
    """(CPU ms per launch, wall p50 ms)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    walls = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, env=SUPERVISOR_ENV, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / n
    return cpu * 1000, statistics.median(walls) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("bwrap"):
        raise SystemExit("run as root with bubblewrap installed (make system-deps)")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="yungu-bench-chain-") as name:
        tmp = Path(name)
        tmp.chmod(0o711)
        (tmp / "data").mkdir(mode=0o700)
        sb = Sandbox("chain", tmp / "data", runs_root=tmp / "runs", uid_base=299_000, uid_count=10, binds=(),
                     network="host", pids_per_replica=4096)
        if sb.refusal:
            raise SystemExit(sb.refusal)
        uid, work = sb.prepare("bench.1", "tenant-bench")
        ctl = tmp / "ctl"
        ctl.mkdir(mode=0o700)
        vs = variants(sb, uid, work, ctl)
        cpu: dict[str, list[float]] = {k: [] for k in vs}
        wall: dict[str, list[float]] = {k: [] for k in vs}
        for _ in range(a.rounds):
            for k, argv in vs.items():
                c, w = run(argv, a.launches)
                cpu[k].append(c)
                wall[k].append(w)
        sb.close()
    base = statistics.median(cpu["sh -c true (baseline)"])
    print(f"machine: {machine()}; {a.launches} launches x {a.rounds} rounds per variant, one at a time; "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| variant | CPU ms per launch (median of rounds) | range | vs baseline | wall p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for k in vs:
        c = statistics.median(cpu[k])
        print(f"| {k} | {c:.2f} | {min(cpu[k]):.2f}-{max(cpu[k]):.2f} | {c / base:.1f}x | "
              f"{statistics.median(wall[k]):.1f} |")


if __name__ == "__main__":
    main()

"""Child-side cost of the local executor's shim, against bare ``sh -c true``.

    python bench/local_executor_shim.py [--jobs 2000]

Spawns N processes (256 alive at most) for each variant, in the same run:
``sh -c true`` (baseline), the shim as shipped, the shim with a tmp-file + ``mv`` exit
file (the textbook atomic write), and the shim running the command with ``eval`` in a
subshell instead of ``/bin/sh -c``. Explains why the shim is written the way it is.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable

from yungu.adapters.executors.local_runs import SHIM, SHIM_ARGV0

MV = SHIM.replace('>"$p.exit"', '>"$p.exit.tmp" && mv -f "$p.exit.tmp" "$p.exit"')
EVAL = SHIM.replace('/bin/sh -c "$c"', '(set --; eval "$c")')


def rate(n: int, argv: Callable[[int], list[str]]) -> float:
    start = time.perf_counter()
    live: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        live.append(
            subprocess.Popen(
                argv(i),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        if len(live) >= 256:
            live.pop(0).wait()
    for p in live:
        p.wait()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    n = ap.parse_args().jobs
    assert MV != SHIM and EVAL != SHIM
    with tempfile.TemporaryDirectory(prefix="yungu-shim-") as d:

        def shim(script: str, tag: str) -> Callable[[int], list[str]]:
            return lambda i: ["/bin/sh", "-c", script, SHIM_ARGV0, "true", f"{d}/{tag}{i}", "YUNGU_X=1"]

        base = rate(n, lambda i: ["/bin/sh", "-c", "true"])
        rows = [
            ("sh -c true (baseline)", base),
            ("shim as shipped", rate(n, shim(SHIM, "a"))),
            ("shim + tmp/mv exit file", rate(n, shim(MV, "b"))),
            ("shim, eval in a subshell", rate(n, shim(EVAL, "c"))),
        ]
    print(f"{n} processes each, 256 alive at most")
    print(f"{'variant':<28}{'procs/s':>10}{'vs baseline':>13}")
    for label, r in rows:
        print(f"{label:<28}{r:>10.0f}{r / base:>13.2f}")


if __name__ == "__main__":
    main()

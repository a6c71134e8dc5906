"""Shared benchmark plumbing: a throwaway PostgreSQL server, a real `yungu server`, wrk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.pgserver import postgres_server

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/pgserver.py) with an empty ``bench`` database."""
    with postgres_server() as base:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE bench")
        yield f"{base}/bench"


def wrk(
    url: str, seconds: int, connections: int, script: str | None = None, threads: int = 2
) -> dict[str, float]:
    """Run wrk; return requests/s and latency percentiles in milliseconds."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk not found: apt-get install wrk (Debian)")
    args = [exe, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        f.write(script)
        f.close()
        args += ["-s", f.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    res: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out)
        if m:
            v, unit = float(m.group(1)), m.group(2)
            res[f"p{pct}_ms"] = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return res


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"

"""A throwaway PostgreSQL server on loopback, for tests and benchmarks alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.net import free_port


class PostgresMissing(RuntimeError):
    pass


def pg_bin() -> Path:
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise PostgresMissing("PostgreSQL server binaries not found: `make test` installs postgresql from Debian")



@contextmanager
def postgres_server() -> Iterator[str]:
    """Start initdb + pg_ctl in a temp dir (fsync on, synchronous_commit on); yield the base
    URL ``postgresql://yungu@127.0.0.1:PORT``; stop and remove it afterwards."""
    bindir = pg_bin()
    # Not under pytest's tmp dir: that is 0700 root, and the server runs as user postgres.
    root = Path(tempfile.mkdtemp(prefix="yungu-pg-"))
    data = root / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "yungu", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        with (data / "postgresql.conf").open("a") as f:
            f.write(f"\nport={port}\nlisten_addresses='127.0.0.1'\nunix_socket_directories='{root}'\n"
                    "fsync=on\nsynchronous_commit=on\nmax_connections=200\n")
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://yungu@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

"""The lease watchdog stops a delegated command's whole tree at the stop time, before any later
command of it runs; otherwise it is transparent (exit code, output)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from yungu.adapters.federation.watchdog import LEASE_EXPIRED_EXIT, LOCAL_NAME, wrap, write_lease


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def run(cmd: str, cwd: Path, timeout: float = 20) -> tuple[int, float]:
    t = time.monotonic()
    rc = subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, timeout=timeout, capture_output=True).returncode
    return rc, time.monotonic() - t


def test_an_expired_lease_stops_the_job_before_its_next_command_runs(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    stop = int(time.time()) + 2
    rc, took = run(wrap(f"sleep 29.137; echo done >> {out}", lease_file=tmp_path / "lease", stop_at_epoch=stop,
                        kill_grace_s=1), tmp_path)
    assert rc == LEASE_EXPIRED_EXIT and took < 10
    time.sleep(1.5)
    assert not out.exists(), "the command after the killed child ran"
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if b"sleep\x0029.137" in _read(p)], "a process of the stopped job is still alive"


def test_a_renewed_lease_lets_the_job_finish_and_its_exit_code_through(tmp_path: Path) -> None:
    lease = tmp_path / "lease"
    write_lease(lease, int(time.time()) + 1)
    proc = subprocess.Popen(["/bin/sh", "-c", wrap("sleep 3; echo 'it''s done'; exit 7", lease_file=lease,
                                                   stop_at_epoch=int(time.time()) + 1)],
                            cwd=tmp_path, stdout=subprocess.PIPE)
    write_lease(tmp_path / LOCAL_NAME, int(time.time()) + 60)  # the run directory's copy wins
    assert proc.wait(timeout=20) == 7
    assert proc.stdout is not None and proc.stdout.read() == b"its done\n"


def test_a_clock_offset_moves_the_stop_time(tmp_path: Path) -> None:
    rc, took = run(wrap("sleep 30", lease_file=tmp_path / "nope", stop_at_epoch=int(time.time()) + 30,
                        clock_offset_s=40, kill_grace_s=1), tmp_path)
    assert rc == LEASE_EXPIRED_EXIT and took < 10


def test_the_lease_file_is_readable_by_the_job_whatever_the_umask_and_never_follows_a_link(tmp_path: Path) -> None:
    """The platform runs with umask 077 and a sandboxed job (the watchdog) as the tenant's uid,
    in the tenant's own run directory: the copy there must be readable by it, and a link the
    tenant planted at the temporary name must not make the platform write through it."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / f"{LOCAL_NAME}.{os.getpid()}.tmp").symlink_to(victim)
    old = os.umask(0o077)
    try:
        write_lease(tmp_path / LOCAL_NAME, 1234)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / LOCAL_NAME).stat().st_mode) == 0o644
    assert (tmp_path / LOCAL_NAME).read_text() == "1234\n" and victim.read_text() == "keep"

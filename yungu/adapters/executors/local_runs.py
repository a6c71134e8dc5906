"""The on-disk and OS-level pieces of a local run, and the pure rule that reads them.

``local.py`` holds the executor's state and control flow; this module holds what has no
state: the shim, the rule from replica states to a phase (``decide``), the run files'
formats and atomic writes, and the process probes used to re-adopt safely.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import psutil

from yungu.adapters.executors.sandbox import SANDBOX_SHIM
from yungu.ports.executor import ExecPhase, ExecStatus, Launch

log = logging.getLogger("yungu.executor.local")

# The shim: $1 is the command, $2 the replica's path prefix (``<run>/replica-<i>``), the
# rest are ``NAME=value`` platform variables (YUNGU_*) that it exports. The command is a
# positional parameter, never interpolated into the script, so any command text is safe.
# The platform variables travel in argv so that a launch without its own env can inherit
# the platform's environment unconverted (building envp cost ~0.5 ms a spawn); a launch's
# own env, which may hold secrets, goes through the real environment, never argv (argv is
# world-readable in /proc). The shim opens the logs itself (in the child, off the submit
# path) and exits with the command's status, so the parent learns it from waitpid without
# reading a file; the exit file is for a restarted platform that is not the parent.
# The exit file is written by one write(2) of at most 5 bytes ending in a newline, so a
# reader sees it empty or whole (the size grows only after the copy); we accept it only
# with its newline. A tmp+rename would be the textbook way, but `mv` is an extra fork+exec
# per job and halved the job rate on the benchmark machine (see docs/executors.md).
# The mtime of ``$p.start`` (a builtin redirection: no fork) is the supervisor's start
# record, the exit file's that of the end: run times come from these, not from when the
# platform looked. This is the shim of ``sandbox = false``; the sandbox has its own
# (``sandbox.SANDBOX_SHIM``), with the same files and arguments in another order.
SHIM = (
    'c=$1; p=$2; shift 2; export "$@"; exec >>"$p.stdout.log" 2>>"$p.stderr.log"; : >"$p.start"; '
    '/bin/sh -c "$c"; rc=$?; printf \'%s\\n\' "$rc" >"$p.exit"; exit "$rc"'
)
SHIM_ARGV0 = "yungu-shim"


class ReplicaState(Enum):
    """What we know of one replica."""

    QUEUED = "queued"  # waiting for a process slot (in memory only)
    STARTING = "starting"  # handed to the launcher; for decide(): also a supervisor not yet started
    ALIVE = "alive"
    EXITED = "exited"  # exit code known
    GONE = "gone"  # no live shim and no exit code


def decide(states: Sequence[tuple[ReplicaState, int | None]]) -> tuple[ExecPhase, int | None, str]:
    """The phase of a gang from its replicas' states, when no verdict was recorded.

    Pure, so the rules are in one place: a non-zero exit fails the gang (the first one
    seen, lowest replica index on ties); a replica that vanished without an exit code
    makes the launch lost; all zero is success; otherwise it runs (a replica's supervisor
    has written its start record), starts (handed to the launcher, or not yet recorded its
    start) or waits for a process slot.
    """
    if not states:
        return (
            ExecPhase.LOST,
            None,
            "launch was never recorded (platform stopped before writing the manifest)",
        )
    for i, (st, code) in enumerate(states):
        if st is ReplicaState.EXITED and code != 0:
            return ExecPhase.FAILED, code, f"replica {i} exited with code {code}"
    gone = [i for i, (st, _) in enumerate(states) if st is ReplicaState.GONE]
    if gone:
        return (
            ExecPhase.LOST,
            None,
            f"replica(s) {gone} ended without an exit code (killed outside the platform, or never started)",
        )
    if all(st is ReplicaState.EXITED for st, _ in states):
        return ExecPhase.SUCCEEDED, 0, ""
    if any(st is ReplicaState.ALIVE for st, _ in states):
        return ExecPhase.RUNNING, None, ""
    if any(st is ReplicaState.STARTING for st, _ in states):
        return ExecPhase.PENDING, None, "launching: the supervisor has not started yet"
    return ExecPhase.PENDING, None, "waiting for a local process slot (max_processes)"


def manifest(launch: Launch, executor: str, now: datetime) -> dict[str, Any]:
    return {
        "request_id": launch.request_id,
        "job_id": launch.job_id,
        "tenant_id": launch.tenant_id,
        "pool_id": launch.pool_id,
        "command": launch.command,
        "replicas": [{"node": r.node, "devices": list(r.devices)} for r in launch.replicas],
        "cpus_per_replica": launch.cpus_per_replica,
        "memory_gb_per_replica": launch.memory_gb_per_replica,
        "accelerators_per_replica": launch.accelerators_per_replica,
        "env": dict(launch.env),
        "time_limit_s": launch.time_limit_s,
        "executor": executor,
        "submitted_at": now.isoformat(),
    }


def status_json(st: ExecStatus) -> dict[str, Any]:
    return {
        "request_id": st.request_id,
        "phase": st.phase.value,
        "exit_code": st.exit_code,
        "reason": st.reason,
        "native_id": st.native_id,
        "started_at": st.started_at.isoformat() if st.started_at else None,
        "finished_at": st.finished_at.isoformat() if st.finished_at else None,
    }


def status_from_json(d: Mapping[str, Any]) -> ExecStatus:
    def when(key: str) -> datetime | None:
        return datetime.fromisoformat(d[key]) if d.get(key) else None

    return ExecStatus(
        request_id=d["request_id"],
        phase=ExecPhase(d["phase"]),
        exit_code=d.get("exit_code"),
        reason=d.get("reason", ""),
        native_id=d.get("native_id", ""),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
    )


def write_atomic(path: Path, payload: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def write_exit(path: Path, code: int) -> None:
    """The exit file in the shim's format (code and newline), for a shim that could not write it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(f"{code}\n")
    os.replace(tmp, path)


def write_private(path: Path, data: bytes) -> None:
    """A new file only the platform can read (0600): a launch's environment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_new(path: Path, payload: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(payload).encode())
    finally:
        os.close(fd)


def write_exclusive(path: Path, payload: object) -> bool:
    """Write ``path`` only if absent (tmp + link); False if another writer was first."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable run file", extra={"path": str(path), "error": str(exc)})
        return None
    return data if isinstance(data, dict) else None


def read_exit(path: Path) -> int | None:
    try:
        with open(path, "rb") as fh:
            text = fh.read(32)
    except FileNotFoundError:
        return None
    if not text.endswith(b"\n"):
        return None  # not written yet (or the shim was killed while writing it)
    try:
        return int(text.strip())
    except ValueError:
        return None


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def probe(pid: int, create_time: float | None) -> str:
    """``alive``, ``dead`` (no such process, or a zombie) or ``reused`` (same pid, other process)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return "reused"
        return "dead" if proc.status() == psutil.STATUS_ZOMBIE else "alive"
    except psutil.NoSuchProcess:
        return "dead"
    except psutil.Error:
        return "reused"  # not ours to look at, so not ours to signal


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours: the group id was reused by another user's session
        return False


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def shim_index() -> dict[str, tuple[int, float]]:
    """Replica path prefix -> (pid, create_time) of every live shim, found by its argv
    (``sh -c SHIM yungu-shim <command> <prefix> ...`` or ``sh -c SANDBOX_SHIM yungu-shim
    <prefix> ...``)."""
    out: dict[str, tuple[int, float]] = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmd = proc.info.get("cmdline") or []
        if len(cmd) < 6 or cmd[3] != SHIM_ARGV0:
            continue
        if cmd[2] == SHIM:
            prefix = cmd[5]
        elif cmd[2] == SANDBOX_SHIM:
            prefix = cmd[4]
        else:
            continue
        out[prefix] = (proc.pid, float(proc.info.get("create_time") or 0.0))
    return out

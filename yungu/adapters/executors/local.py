"""The local executor: a Yungu launch runs as real OS processes on this machine.

How our concepts map onto the machine:

- a **launch** (one attempt of one job, ``request_id``) is a run directory
  ``<data_dir>/runs/<request_id>/`` holding ``launch.json`` (the manifest), the logs and
  small marker files; the directory *is* the durable record, memory is only a cache;
- a **replica** of a gang is one ``/bin/sh -c <command>`` process tree, started in its own
  session (so it survives the platform being ``kill -9``'d) under a tiny ``sh`` shim that
  writes the command's exit code to ``replica-<i>.exit`` (tmp file, then rename) when it
  ends; ``replica-<i>.pid`` records the shim's pid and start time so a restarted platform
  can recognise it (and not a recycled pid);
- **devices** are declared, not real: they reach the job as ``YUNGU_DEVICES`` (and as
  ``CUDA_VISIBLE_DEVICES`` only if ``set_cuda_visible_devices`` is set); nothing confines
  a process to them;
- **capacity**: the scheduler enforces the pool's declared capacity; ``max_processes``
  (default 256) only protects this one machine: launches beyond it wait in memory in a
  FIFO as ``pending`` and start as processes finish.

Files of a run (all written atomically: tmp then rename, or link for first-writer-wins)::

    launch.json               manifest, written before any process starts
    replica-<i>.pid           {"pid", "create_time", "started_at"} after the spawn
    replica-<i>.exit          the command's exit code and a newline, written by the shim
    replica-<i>.stdout.log    replica-<i>.stderr.log
    verdict.json              a decided outcome that is not "all exited 0": cancelled,
                              gang failure, time limit, lost (first writer wins)
    outcome.json              the final status, once no process of the run is left

Idempotency and crash safety: ``submit`` creates the run directory with ``os.mkdir``; if
it exists, the launch was already submitted and its status is returned, nothing starts.
If the platform died after ``mkdir`` but before a replica was spawned (or while the launch
waited for a slot), a restarted executor finds a manifest without pid, exit file or live
shim and marks the launch **lost**: the caller requeues it under a *new* request id. We
never start a recorded launch a second time, so a job can never run twice by our doing.
A shim that was spawned but whose pid file was not yet written is found by scanning the
process table for its argv (which names its exit file). One executor instance owns a data
directory at a time (``executor.lock``, ``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import psutil

from yungu.adapters.executors.base import BaseExecutor
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput, Unavailable
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Launch,
    LogChunk,
)

log = logging.getLogger("yungu.executor.local")

# The shim: $1 is the command, $2 the replica's path prefix (``<run>/replica-<i>``). The
# command is a positional parameter, never interpolated into the script, so any command
# text is safe. The shim opens the logs itself (that work happens in the child, not on the
# submit path) and exits with the command's status, so the parent learns it from waitpid
# without reading a file; the exit file is for a restarted platform that is not the parent.
# The exit file is written by one write(2) of at most 5 bytes ending in a newline, so a
# reader sees it empty or whole (the size grows only after the copy); we accept it only
# with its newline. A tmp+rename would be the textbook way, but `mv` is an extra fork+exec
# per job and halved the job rate on the benchmark machine (see docs/executors.md).
SHIM = (
    'exec >>"$2.stdout.log" 2>>"$2.stderr.log"; /bin/sh -c "$1"; rc=$?; '
    'printf \'%s\\n\' "$rc" >"$2.exit"; exit "$rc"'
)
SHIM_ARGV0 = "yungu-shim"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STREAM = re.compile(r"^(stdout|stderr)(?::(\d{1,6}))?$")
_FINISHED_CACHE = 100_000


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class LocalSettings:
    """Settings of a local executor (the ``[executors.<name>]`` table of the config)."""

    max_processes: int = 256
    set_cuda_visible_devices: bool = False
    poll_interval_s: float = 0.05
    gang_kill_grace_s: float = 5.0
    declared_cpus: int | None = None
    declared_memory_gb: int | None = None
    inherit_env: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> LocalSettings:
        """Validate a config mapping; unknown keys and wrong types are a clear InvalidInput."""
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(raw) - known - {"kind"})
        if extra:
            raise InvalidInput(f"local executor: unknown setting(s) {extra}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "kind":
                continue
            if key in ("set_cuda_visible_devices", "inherit_env"):
                if not isinstance(value, bool):
                    raise InvalidInput(f"local executor: {key} must be true or false, got {value!r}")
            elif key in ("poll_interval_s", "gang_kill_grace_s"):
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
                    raise InvalidInput(
                        f"local executor: {key} must be a number of seconds in [0, 3600], got {value!r}"
                    )
                value = float(value)
            elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
                raise InvalidInput(f"local executor: {key} must be an integer in [1, 1000000], got {value!r}")
            values[key] = value
        if values.get("poll_interval_s", 1.0) < 0.001:
            raise InvalidInput("local executor: poll_interval_s must be at least 0.001")
        return cls(**values)


class _R(Enum):
    """What we know of one replica."""

    QUEUED = "queued"  # waiting for a process slot (in memory only)
    ALIVE = "alive"
    EXITED = "exited"  # exit code known
    GONE = "gone"  # no live shim and no exit code


def decide(states: Sequence[tuple[_R, int | None]]) -> tuple[ExecPhase, int | None, str]:
    """The phase of a gang from its replicas' states, when no verdict was recorded.

    Pure, so the rules are in one place: a non-zero exit fails the gang (the first one
    seen, lowest replica index on ties); a replica that vanished without an exit code
    makes the launch lost; all zero is success; otherwise it runs or waits.
    """
    if not states:
        return (
            ExecPhase.LOST,
            None,
            "launch was never recorded (platform stopped before writing the manifest)",
        )
    for i, (st, code) in enumerate(states):
        if st is _R.EXITED and code != 0:
            return ExecPhase.FAILED, code, f"replica {i} exited with code {code}"
    gone = [i for i, (st, _) in enumerate(states) if st is _R.GONE]
    if gone:
        return (
            ExecPhase.LOST,
            None,
            f"replica(s) {gone} ended without an exit code (killed outside the platform, or never started)",
        )
    if all(st is _R.EXITED for st, _ in states):
        return ExecPhase.SUCCEEDED, 0, ""
    if any(st is _R.ALIVE for st, _ in states):
        return ExecPhase.RUNNING, None, ""
    return ExecPhase.PENDING, None, "waiting for a local process slot (max_processes)"


@dataclass
class _Replica:
    index: int
    state: _R = _R.QUEUED
    exit_code: int | None = None
    popen: subprocess.Popen[bytes] | None = None  # only for processes this instance started
    pid: int | None = None
    create_time: float | None = None
    signalled: bool = False  # we sent its group SIGTERM (so SIGKILL follows after the grace)


@dataclass
class _Run:
    request_id: str
    path: Path
    replicas: list[_Replica]
    time_limit_s: int | None = None
    launch: Launch | None = None  # kept while queued
    started_at: datetime | None = None
    adopted: bool = False
    slots: int = 0  # process slots held (counted against max_processes)
    verdict: tuple[ExecPhase, int | None, str] | None = None
    grace_s: float = 0.0
    kill_at: float | None = None  # monotonic time of SIGKILL escalation
    kill_sent: bool = False

    @property
    def native_id(self) -> str:
        return ",".join(str(r.pid) for r in self.replicas if r.pid is not None)


class LocalExecutor(BaseExecutor):
    """Runs launches as local process trees; see the module docstring for the mapping."""

    kind = "local"

    def __init__(
        self,
        name: str,
        settings: Mapping[str, Any] | LocalSettings | None = None,
        data_dir: Path | str = ".",
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name)
        self.settings = (
            settings if isinstance(settings, LocalSettings) else LocalSettings.parse(settings or {})
        )
        self.data_dir = Path(data_dir)
        self.runs_dir = self.data_dir / "runs"
        self._clock: Clock = clock or _SystemClock()
        self._lock = threading.RLock()
        self._active: dict[str, _Run] = {}
        self._finished: OrderedDict[str, tuple[ExecStatus, int]] = OrderedDict()
        self._queue: deque[str] = deque()
        self._unrecorded: list[tuple[_Run, _Replica]] = []
        self._to_persist: list[tuple[Path, dict[str, Any]]] = []
        self._slots_used = 0
        self._base_env = dict(os.environ) if self.settings.inherit_env else {"PATH": os.defpath}
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._lockfile = os.open(
                self.data_dir / "executor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise Unavailable(
                f"local executor {name}: data dir {self.data_dir} is not usable: {exc}"
            ) from exc
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lockfile)
            raise Unavailable(
                f"local executor {name}: {self.data_dir} is in use by another executor instance (executor.lock)"
            ) from exc
        os.ftruncate(self._lockfile, 0)
        os.write(self._lockfile, f"{os.getpid()}\n".encode())
        self._adopt_all()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._monitor, name=f"yungu-local-{name}", daemon=True)
        self._thread.start()

    # ---- contract --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name=self.name,
            gangs=True,
            devices=True,
            logs=True,
            energy_accounting=False,
            unsupported={
                "device_isolation": "devices are declared: assigned through YUNGU_DEVICES only, processes are not confined",
                "resource_limits": "cpus and memory per replica are not enforced on local processes",
                "energy_accounting": "local processes are not metered",
            },
        )

    def _submit(self, launch: Launch) -> ExecStatus | ExecError:
        problem = self._validate(launch)
        if problem:
            return ExecError(ExecErrorCode.REJECTED, problem)
        rid = launch.request_id
        with self._lock:
            known = self._lookup(rid)
            if known is not None:
                return known
            path = self.runs_dir / rid
            try:
                os.mkdir(path)
            except FileExistsError:  # submitted before (by an earlier instance): never launch again
                found = self._lookup(rid, load=True)
                return found or ExecError(
                    ExecErrorCode.INTERNAL, f"run dir of {rid} exists but cannot be read"
                )
            except OSError as exc:
                return ExecError(ExecErrorCode.UNREACHABLE, f"cannot create run dir for {rid}: {exc}")
            run = _Run(
                rid,
                path,
                [_Replica(i) for i in range(len(launch.replicas))],
                time_limit_s=launch.time_limit_s,
                launch=launch,
            )
            # Not tmp+rename: a torn manifest can only come from a crash before any spawn,
            # and an unreadable manifest reads as "never started", i.e. lost. Same outcome.
            _write_new(path / "launch.json", _manifest(launch, self.name, self._clock.now()))
            self._active[rid] = run
            if not self._queue and self._slots_used + len(run.replicas) <= self.settings.max_processes:
                self._spawn(run)
            else:
                self._queue.append(rid)
            return self._refresh(run)

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        with self._lock:
            current = self._lookup(request_id, load=True)
            if current is None:
                return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")
            run = self._active.get(request_id)
            if current.done or run is None:
                return current
            self._set_verdict(run, ExecPhase.CANCELLED, None, "cancelled at the platform's request", grace_s)
            if request_id in self._queue:
                self._queue.remove(request_id)
            return self._refresh(run)

    def _status(self, request_id: str) -> ExecStatus | ExecError:
        with self._lock:
            found = self._lookup(request_id, load=True)
        return found or ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")

    def _observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        out: dict[str, ExecStatus | ExecError] = {}
        with self._lock:
            for rid in request_ids:
                found = self._lookup(rid, load=True)
                out[rid] = found or ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {rid}")
        return out

    def _logs(self, request_id: str, stream: str, offset: int, limit: int) -> LogChunk | ExecError:
        m = _STREAM.match(stream)
        if not m:
            return ExecError(
                ExecErrorCode.REJECTED,
                f"stream must be stdout, stderr, stdout:<replica> or stderr:<replica>; got {stream!r}",
            )
        kind, idx = m.group(1), int(m.group(2) or 0)
        with self._lock:
            st = self._lookup(request_id, load=True)
            if st is None:
                return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")
            replicas = self._replica_count(request_id)
        if replicas is not None and idx >= replicas:
            return ExecError(ExecErrorCode.REJECTED, f"replica {idx} out of range: the launch has {replicas}")
        path = self.runs_dir / request_id / f"replica-{idx}.{kind}.log"
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
                data = fh.read(limit)
        except FileNotFoundError:
            data, size = b"", 0
        end = offset + len(data)
        return LogChunk(data=data, next_offset=end, eof=st.done and end >= size)

    def _list_active(self) -> Sequence[ExecStatus] | ExecError:
        with self._lock:
            out = [self._refresh(run) for run in list(self._active.values())]
        return [s for s in out if not s.done]

    def _check(self) -> Mapping[str, object]:
        cpus = os.cpu_count() or 1
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
        warnings: list[str] = []
        s = self.settings
        if s.declared_cpus is not None and s.declared_cpus > cpus:
            warnings.append(f"declared {s.declared_cpus} CPUs but this machine has {cpus}")
        if s.declared_memory_gb is not None and s.declared_memory_gb > mem_gb:
            warnings.append(f"declared {s.declared_memory_gb} GB memory but this machine has {mem_gb} GB")
        writable = os.access(self.runs_dir, os.W_OK)
        with self._lock:
            running, queued = self._slots_used, len(self._queue)
        return {
            "reachable": writable,
            "data_dir": str(self.data_dir),
            "cpus": cpus,
            "memory_gb": mem_gb,
            "declared_cpus": s.declared_cpus,
            "declared_memory_gb": s.declared_memory_gb,
            "max_processes": s.max_processes,
            "running_processes": running,
            "queued_launches": queued,
            "warnings": warnings if writable else [*warnings, f"{self.runs_dir} is not writable"],
        }

    def _close(self) -> None:
        """Stop watching; the processes keep running and a new instance re-adopts them."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            if self._lockfile >= 0:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lockfile, fcntl.LOCK_UN)
                os.close(self._lockfile)
                self._lockfile = -1

    # ---- validation ------------------------------------------------------------------

    def _validate(self, launch: Launch) -> str:
        if not _REQUEST_ID.match(launch.request_id) or launch.request_id in (".", ".."):
            return f"request id {launch.request_id!r} must match {_REQUEST_ID.pattern}"
        if not launch.command.strip() or "\x00" in launch.command:
            return "command must be a non-empty string without NUL bytes"
        n = len(launch.replicas)
        if n == 0:
            return "a launch needs at least one replica"
        if n > self.settings.max_processes:
            return f"a gang of {n} replicas needs {n} local processes but max_processes is {self.settings.max_processes}"
        for key, value in launch.env.items():
            if not _ENV_NAME.match(key) or "\x00" in value:
                return f"environment variable {key!r} has an invalid name or value"
        if launch.time_limit_s is not None and launch.time_limit_s <= 0:
            return f"time_limit_s must be positive, got {launch.time_limit_s}"
        if any(d < 0 for rep in launch.replicas for d in rep.devices):
            return "device indices must be >= 0"
        return ""

    # ---- processes -------------------------------------------------------------------

    def _spawn(self, run: _Run) -> None:
        launch = run.launch
        assert launch is not None
        run.slots = len(run.replicas)
        self._slots_used += run.slots
        run.started_at = self._clock.now()
        n = str(len(launch.replicas))
        try:
            for rep, spec in zip(run.replicas, launch.replicas, strict=True):
                devices = ",".join(str(d) for d in spec.devices)
                env = {**self._base_env, **launch.env}
                env.update(
                    YUNGU_JOB_ID=launch.job_id,
                    YUNGU_REQUEST_ID=launch.request_id,
                    YUNGU_REPLICA=str(rep.index),
                    YUNGU_REPLICAS=n,
                    YUNGU_DEVICES=devices,
                    YUNGU_NODE=str(spec.node),
                )
                if self.settings.set_cuda_visible_devices and spec.devices:
                    env["CUDA_VISIBLE_DEVICES"] = devices
                self._spawn_replica(run, rep, launch.command, env)
        except OSError as exc:
            log.error(
                "local spawn failed",
                extra={"executor": self.name, "request_id": run.request_id, "error": str(exc)},
            )
            self._set_verdict(run, ExecPhase.LOST, None, f"could not start processes: {exc}", 0.0)
        run.launch = None

    def _spawn_replica(self, run: _Run, rep: _Replica, command: str, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", SHIM, SHIM_ARGV0, command, f"{run.path}/replica-{rep.index}"],
            cwd=run.path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        rep.popen, rep.pid, rep.state = proc, proc.pid, _R.ALIVE
        self._unrecorded.append((run, rep))

    def _record_pids(self) -> None:
        """Write ``replica-<i>.pid`` for processes still running (off the submit path).

        A replica that ends before this runs needs no pid file: its exit file says it all.
        A platform crash before this runs is covered by the argv scan in ``_load``.
        """
        with self._lock:
            todo, self._unrecorded = self._unrecorded, []
        for run, rep in todo:
            if rep.popen is None or rep.popen.returncode is not None or rep.pid is None:
                continue
            try:
                rep.create_time = psutil.Process(rep.pid).create_time()
            except psutil.Error:
                continue
            started = run.started_at.isoformat() if run.started_at else None
            with contextlib.suppress(OSError):
                _write_atomic(
                    run.path / f"replica-{rep.index}.pid",
                    {"pid": rep.pid, "create_time": rep.create_time, "started_at": started},
                )

    def _poll(self, run: _Run, rep: _Replica) -> None:
        """Advance one replica's state from the OS (waitpid for ours, files and /proc otherwise)."""
        if rep.state is not _R.ALIVE:
            return
        exit_path = run.path / f"replica-{rep.index}.exit"
        if rep.popen is not None:
            rc = rep.popen.poll()  # reaps: no zombies
            if rc is None:
                return
            rep.popen = None
            if rc >= 0:
                code: int | None = rc
            else:  # the shim itself was killed by a signal: record what the shell would report
                code = _read_exit(exit_path)
                if code is None:
                    code = 128 - rc
                    with contextlib.suppress(OSError):
                        _write_atomic(exit_path, code)
            safe = True  # just reaped by us: the group id cannot have been reused
        else:
            assert rep.pid is not None
            probe = _probe(rep.pid, rep.create_time)
            code = _read_exit(exit_path)
            if code is None:
                if probe == "alive":
                    return
                code = _read_exit(exit_path)  # it may have finished between the two looks
            elif probe == "alive":
                return  # exit code written, shim about to exit: next poll
            safe = probe == "dead"
        rep.state, rep.exit_code = (_R.EXITED, code) if code is not None else (_R.GONE, None)
        if run.kill_at is None and safe and rep.pid is not None:
            _signal_group(rep.pid, signal.SIGKILL)  # leftovers of a finished replica

    def _refresh(self, run: _Run) -> ExecStatus:
        """Bring one run up to date, act on it (kill, escalate, finalise) and say where it is."""
        for rep in run.replicas:
            self._poll(run, rep)
        if run.verdict is None:
            phase, code, reason = decide([(r.state, r.exit_code) for r in run.replicas])
            if phase in (ExecPhase.FAILED, ExecPhase.LOST) and any(r.state is _R.ALIVE for r in run.replicas):
                reason += "; the other replicas were terminated"
            if phase in (ExecPhase.FAILED, ExecPhase.LOST):
                self._set_verdict(run, phase, code, reason, self.settings.gang_kill_grace_s)
            elif phase is ExecPhase.RUNNING and self._over_time(run):
                self._set_verdict(
                    run,
                    ExecPhase.FAILED,
                    None,
                    f"time limit of {run.time_limit_s}s exceeded",
                    self.settings.gang_kill_grace_s,
                )
            elif phase is ExecPhase.SUCCEEDED:
                return self._finalise(run, phase, 0, "")
            else:
                return self._status_of(run, phase, None, reason)
        assert run.verdict is not None
        phase, code, reason = run.verdict
        if not self._terminated(run):
            return self._status_of(run, phase, code, reason)
        return self._finalise(run, phase, code, reason)

    def _terminated(self, run: _Run) -> bool:
        """Drive SIGTERM -> grace -> SIGKILL for a run with a verdict; True once nothing is left."""
        now = time.monotonic()
        if run.kill_at is None:
            run.kill_at = now + run.grace_s
            for rep in run.replicas:
                if rep.state is _R.ALIVE and rep.pid is not None:
                    rep.signalled = True
                    _signal_group(rep.pid, signal.SIGTERM)
            for rep in run.replicas:
                self._poll(run, rep)
        signalled = [r for r in run.replicas if r.signalled and r.pid is not None]
        if any(r.state is _R.ALIVE for r in run.replicas) or any(
            _group_exists(r.pid) for r in signalled if r.pid
        ):
            if now < run.kill_at:
                return False
            if not run.kill_sent:
                run.kill_sent = True
                for rep in signalled:
                    if rep.pid is not None and (
                        rep.popen is not None or _probe(rep.pid, rep.create_time) != "reused"
                    ):
                        _signal_group(rep.pid, signal.SIGKILL)
            for rep in run.replicas:
                if rep.popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        rep.popen.wait(timeout=1.0)
                self._poll(run, rep)
            if any(r.state is _R.ALIVE for r in run.replicas):
                return False
        return True

    def _over_time(self, run: _Run) -> bool:
        if run.time_limit_s is None or run.started_at is None:
            return False
        return (self._clock.now() - run.started_at).total_seconds() > run.time_limit_s

    def _set_verdict(
        self, run: _Run, phase: ExecPhase, code: int | None, reason: str, grace_s: float
    ) -> None:
        """Record a decided outcome; the first verdict on disk wins (link fails if one exists)."""
        payload: dict[str, Any] = {
            "phase": phase.value,
            "exit_code": code,
            "reason": reason,
            "grace_s": grace_s,
        }
        if not _write_exclusive(run.path / "verdict.json", payload):
            stored = _read_json(run.path / "verdict.json")
            if stored:
                payload = stored
        run.verdict = (ExecPhase(payload["phase"]), payload.get("exit_code"), str(payload.get("reason", "")))
        run.grace_s = float(payload.get("grace_s") or 0.0)
        if phase is ExecPhase.LOST:
            log.warning(
                "local launch lost: %s", reason, extra={"executor": self.name, "request_id": run.request_id}
            )

    def _finalise(self, run: _Run, phase: ExecPhase, code: int | None, reason: str) -> ExecStatus:
        finished = self._clock.now()
        if run.adopted:
            mtimes = [_mtime(run.path / f"replica-{r.index}.exit") for r in run.replicas]
            known = [m for m in mtimes if m is not None]
            if known:
                finished = datetime.fromtimestamp(max(known), UTC)
        status = self._status_of(run, phase, code, reason, finished_at=finished)
        # Written by the monitor outside the lock: if we crash first, a restart derives the
        # same outcome from the exit files and verdict.
        self._to_persist.append(
            (run.path / "outcome.json", {**_status_json(status), "replicas": len(run.replicas)})
        )
        self._active.pop(run.request_id, None)
        self._slots_used -= run.slots
        run.slots = 0
        self._remember(status, len(run.replicas))
        self._start_queued()
        return status

    def _status_of(
        self, run: _Run, phase: ExecPhase, code: int | None, reason: str, finished_at: datetime | None = None
    ) -> ExecStatus:
        return ExecStatus(
            request_id=run.request_id,
            phase=phase,
            exit_code=code,
            reason=reason,
            native_id=run.native_id,
            started_at=run.started_at,
            finished_at=finished_at,
        )

    def _start_queued(self) -> None:
        while self._queue:
            run = self._active.get(self._queue[0])
            if run is None or run.verdict is not None:
                self._queue.popleft()
                continue
            if self._slots_used + len(run.replicas) > self.settings.max_processes:
                return
            self._queue.popleft()
            self._spawn(run)

    def _monitor(self) -> None:
        """Reap, fail gangs, escalate kills and start queued launches even when nobody asks."""
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                with self._lock:
                    for run in list(self._active.values()):
                        self._refresh(run)
                    self._start_queued()
                self._flush()
            except Exception:
                log.error("local executor monitor failed", exc_info=True, extra={"executor": self.name})
        self._flush()

    def _flush(self) -> None:
        """Disk writes that need not hold the lock: pid files and outcomes."""
        self._record_pids()
        with self._lock:
            todo, self._to_persist = self._to_persist, []
        for path, payload in todo:
            try:
                _write_new(path, payload)
            except FileExistsError:
                pass
            except OSError as exc:
                log.warning("cannot write outcome", extra={"path": str(path), "error": str(exc)})

    # ---- memory <-> disk -------------------------------------------------------------

    def _lookup(self, rid: str, *, load: bool = False) -> ExecStatus | None:
        run = self._active.get(rid)
        if run is not None:
            return self._refresh(run)
        hit = self._finished.get(rid)
        if hit is not None:
            return hit[0]
        if not load or not _REQUEST_ID.match(rid):
            return None
        path = self.runs_dir / rid
        if not path.is_dir():
            return None
        return self._load(path)

    def _replica_count(self, rid: str) -> int | None:
        if rid in self._active:
            return len(self._active[rid].replicas)
        if rid in self._finished:
            return self._finished[rid][1]
        return None

    def _remember(self, status: ExecStatus, replicas: int) -> None:
        self._finished[status.request_id] = (status, replicas)
        if len(self._finished) > _FINISHED_CACHE:
            self._finished.popitem(last=False)

    def _adopt_all(self) -> None:
        """At start: load every run without an outcome; the data dir is the source of truth."""
        pending = [p for p in self.runs_dir.iterdir() if p.is_dir() and not (p / "outcome.json").exists()]
        shims = _shim_index() if pending else {}
        counts: dict[str, int] = {}
        for path in pending:
            st = self._load(path, shims)
            if st is not None:
                counts[st.phase.value] = counts.get(st.phase.value, 0) + 1
        if pending:
            log.info("local executor re-adopted runs", extra={"executor": self.name, "phases": counts})

    def _load(self, path: Path, shims: Mapping[str, tuple[int, float]] | None = None) -> ExecStatus | None:
        rid = path.name
        outcome = _read_json(path / "outcome.json")
        if outcome is not None:
            status = _status_from_json(outcome)
            self._remember(status, int(outcome.get("replicas", 1)))
            return status
        manifest = _read_json(path / "launch.json")
        n = len(manifest.get("replicas", ())) if manifest else 0
        run = _Run(rid, path, [_Replica(i) for i in range(n)], adopted=True)
        if manifest:
            run.time_limit_s = manifest.get("time_limit_s")
        verdict = _read_json(path / "verdict.json")
        if verdict:
            run.verdict = (
                ExecPhase(verdict["phase"]),
                verdict.get("exit_code"),
                str(verdict.get("reason", "")),
            )
            run.grace_s = float(verdict.get("grace_s") or 0.0)
        for rep in run.replicas:
            base = path / f"replica-{rep.index}"
            info = _read_json(Path(f"{base}.pid"))
            if info is None:
                if shims is None:
                    shims = _shim_index()
                found = shims.get(str(base))
                if found is not None:  # spawned, but the platform died before writing the pid file
                    started = datetime.fromtimestamp(found[1], UTC).isoformat()
                    info = {"pid": found[0], "create_time": found[1], "started_at": started}
                    with contextlib.suppress(OSError):
                        _write_atomic(Path(f"{base}.pid"), info)
            if info is not None:
                rep.pid, rep.create_time = int(info["pid"]), info.get("create_time")
                if info.get("started_at") and run.started_at is None:
                    run.started_at = datetime.fromisoformat(info["started_at"])
            code = _read_exit(Path(f"{base}.exit"))
            if code is not None:
                rep.state, rep.exit_code = _R.EXITED, code
            elif rep.pid is not None:
                rep.state = _R.ALIVE  # _poll verifies identity and liveness
            else:
                rep.state = _R.GONE
        run.slots = sum(1 for r in run.replicas if r.state is _R.ALIVE)
        self._slots_used += run.slots
        self._active[rid] = run
        return self._refresh(run)


# ---- small helpers (no state) ----------------------------------------------------------


def _manifest(launch: Launch, executor: str, now: datetime) -> dict[str, Any]:
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


def _status_json(st: ExecStatus) -> dict[str, Any]:
    return {
        "request_id": st.request_id,
        "phase": st.phase.value,
        "exit_code": st.exit_code,
        "reason": st.reason,
        "native_id": st.native_id,
        "started_at": st.started_at.isoformat() if st.started_at else None,
        "finished_at": st.finished_at.isoformat() if st.finished_at else None,
    }


def _status_from_json(d: Mapping[str, Any]) -> ExecStatus:
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


def _write_atomic(path: Path, payload: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def _write_new(path: Path, payload: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(payload).encode())
    finally:
        os.close(fd)


def _write_exclusive(path: Path, payload: object) -> bool:
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable run file", extra={"path": str(path), "error": str(exc)})
        return None
    return data if isinstance(data, dict) else None


def _read_exit(path: Path) -> int | None:
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


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _probe(pid: int, create_time: float | None) -> str:
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


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours: the group id was reused by another user's session
        return False


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def _shim_index() -> dict[str, tuple[int, float]]:
    """Replica path prefix -> (pid, create_time) of every live shim, found by its argv."""
    out: dict[str, tuple[int, float]] = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmd = proc.info.get("cmdline") or []
        if len(cmd) == 6 and cmd[3] == SHIM_ARGV0 and cmd[2] == SHIM:
            out[cmd[5]] = (proc.pid, float(proc.info.get("create_time") or 0.0))
    return out


__all__ = ["SHIM", "LocalExecutor", "LocalSettings", "decide"]

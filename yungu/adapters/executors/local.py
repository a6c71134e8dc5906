"""The local executor: a Yungu launch runs as real OS processes on this machine.

How our concepts map onto the machine:

- a **launch** (one attempt of one job, ``request_id``) is a control directory
  ``<data_dir>/runs/<request_id>/`` (the platform's, 0700) holding ``launch.json`` (the
  manifest), the logs and small record files; the directory *is* the durable record,
  memory is only a cache. With the sandbox (the default) the job itself works in a run
  directory ``<runs_root>/<key>/<request_id>/`` owned by its tenant's uid, which it sees
  as ``/job``; it never sees the control directory;
- a **tenant** is a uid of its own (``sandbox.TenantUids``); each replica runs in a
  bubblewrap sandbox with that uid, its own PID namespace, a cleared environment and
  cgroup limits (``sandbox.py`` draws the process chain; ``sandbox = false`` runs plain
  process trees as the platform's user, for a trusted single-tenant machine);
- a **replica** of a gang is one ``/bin/sh -c <command>`` process tree under a small
  ``sh`` supervisor started in its own session (so it survives the platform being
  ``kill -9``'d); the supervisor writes ``replica-<i>.start`` as it begins and the
  command's exit code to ``replica-<i>.exit`` when it ends: their mtimes are the run's
  start and end (``ExecStatus.started_at`` / ``finished_at``), never the moment the
  platform looked; ``replica-<i>.pid`` records the supervisor's pid and start time so a
  restarted platform can recognise it (and not a recycled pid);
- **devices** are declared, not real: they reach the job as ``YUNGU_DEVICES`` (and as
  ``CUDA_VISIBLE_DEVICES`` only if ``set_cuda_visible_devices`` is set); nothing confines
  a process to them;
- **capacity**: the scheduler enforces the pool's declared capacity; ``max_processes``
  (default 256) only protects this one machine: launches beyond it wait in memory in a
  FIFO as ``pending`` and start as processes finish;
- **the launch path**: ``submit`` records the launch (``mkdir`` + ``launch.json``) and hands
  a request to the **launcher**, a process of its own (``local_launcher.py``) that makes the
  run dir and cgroups, writes ``.args`` and ``.pid`` and starts the supervisor, then reaps
  it; so ``submit`` never waits for a ``fork``/``exec`` and never holds the GIL through one.
  A launch is ``pending`` ("launching") until its supervisor's start record exists, then
  ``running``. ``observe`` reports a launch that ran as running at least once before its
  outcome (a short job can start and end between two observations, or while the platform
  is down; the control loop records the start when it sees running).

Files of a run (written so that a reader sees them whole or not at all: one write(2) to
a new file, tmp then rename, or link for first-writer-wins)::

    launch.json               manifest, written by submit before any process starts
    replica-<i>.args          the job's environment for bubblewrap (sandbox; 0600; launcher)
    replica-<i>.start         empty; its mtime is the supervisor's start
    replica-<i>.pid           {"pid", "create_time", "started_at"}, by the launcher at the spawn
    replica-<i>.exit          the command's exit code and a newline, written by the shim
    replica-<i>.stdout.log    replica-<i>.stderr.log
    verdict.json              an outcome decided by the platform: cancelled, gang
                              failure, time limit (first writer wins); "lost" needs
                              no file, it follows from the others

and, for the whole data dir, ``finished.jsonl``: one line per finalised launch (its final
status, once no process of it is left), appended in batches by the monitor thread. A
restart skips those run dirs instead of opening each; a crash before a line is written
only means the restart derives the same outcome again from the run's files.

Idempotency and crash safety: ``submit`` creates the run directory with ``os.mkdir``; if
it exists, the launch was already submitted and its status is returned, nothing starts.
If the platform died after ``mkdir`` but before a replica was spawned (while the launch
waited for a slot, or for the launcher), a restarted executor finds a manifest without
pid, exit file or live shim and marks the launch **lost**: the caller requeues it under a
*new* request id. We never start a recorded launch a second time, so a job can never run
twice by our doing. The launcher holds a copy of the data dir's lock and starts nothing
once its platform is gone, so the restart scans only after it has exited, when every
supervisor it started has exec'd. A shim that was spawned but whose pid file was not yet
written is found by scanning the process table for its argv (which names its exit file).
If the launcher dies under a live platform, its replicas are re-adopted like a restart's
and a new launcher takes over (``_launcher_gone``). One executor instance owns a data
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
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from yungu.adapters.executors.base import BaseExecutor
from yungu.adapters.executors.env import ensure_checkpoint_dir, replica_env
from yungu.adapters.executors.local_launcher import Spawner, SpawnerFactory, default_spawner
from yungu.adapters.executors.local_runs import (
    SHIM,
    ReplicaState,
    decide,
    group_exists,
    manifest,
    mtime,
    probe,
    read_exit,
    read_json,
    shim_index,
    signal_group,
    status_from_json,
    status_json,
    write_atomic,
    write_exclusive,
    write_exit,
    write_new,
)
from yungu.adapters.executors.sandbox import (
    CHECKPOINT_DIR,
    JOB_BASE_ENV,
    SANDBOX_KEYS,
    Bind,
    Sandbox,
    SandboxError,
    parse_sandbox_setting,
)
from yungu.adapters.executors.sandbox_cgroups import Events
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
    ReplicaLaunch,
)

log = logging.getLogger("yungu.executor.local")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STREAM = re.compile(r"^(stdout|stderr)(?::(\d{1,6}))?$")
_FINISHED_CACHE = 100_000
_ENDED = (ReplicaState.EXITED, ReplicaState.GONE)


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class LocalSettings:
    """Settings of a local executor (the ``[executor.<name>]`` table of the config)."""

    max_processes: int = 256
    set_cuda_visible_devices: bool = False
    poll_interval_s: float = 0.05
    gang_kill_grace_s: float = 5.0
    declared_cpus: int | None = None
    declared_memory_gb: int | None = None
    # Sandbox (docs/security.md): on unless the operator turns it off for a trusted,
    # single-tenant machine. inherit_env (default true) applies only with sandbox = false.
    sandbox: bool = True
    inherit_env: bool | None = None
    runs_root: str | None = None  # default $YUNGU_RUNS_ROOT, else /var/lib/yungu-runs (root)
    uid_base: int = 200_000
    uid_count: int = 100_000
    binds: tuple[Bind, ...] = ()
    network: str = "host"  # or "none": a network namespace with loopback only
    pids_per_replica: int = 4096

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> LocalSettings:
        """Validate a config mapping; unknown keys and wrong types are a clear InvalidInput."""
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(raw) - known - {"kind", "type"})
        if extra:
            raise InvalidInput(f"local executor: unknown setting(s) {extra}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("kind", "type"):
                continue
            if key in SANDBOX_KEYS:
                values[key] = parse_sandbox_setting(key, value)
                continue
            if key in ("set_cuda_visible_devices", "inherit_env", "sandbox"):
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
        if values.get("sandbox", True) and values.get("inherit_env"):
            raise InvalidInput(
                "local executor: inherit_env = true would give tenant jobs the server's environment; "
                "it is allowed only with sandbox = false / 沙箱模式下不允许继承服务器环境变量"
            )
        return cls(**values)


@dataclass
class _Replica:
    index: int
    state: ReplicaState = ReplicaState.QUEUED
    exit_code: int | None = None
    owned: bool = False  # a child of our launcher, which will report its exit
    reaped: int | None = None  # its wait status as the launcher reported it (Popen's returncode)
    cgroup_events: Events | None = None  # read by the launcher when it reaped the supervisor
    pid: int | None = None
    create_time: float | None = None
    signalled: bool = False  # we sent its group SIGTERM (so SIGKILL follows after the grace)
    killed: bool = False  # we sent SIGKILL
    started: float | None = None  # the supervisor's start record (epoch seconds)
    start_checked: bool = False  # ended, and its start record looked for
    ended: float | None = None  # the supervisor's end record


@dataclass
class _Run:
    request_id: str
    path: Path
    replicas: list[_Replica]
    time_limit_s: int | None = None
    launch: Launch | None = None  # kept while queued
    spawned_at: datetime | None = None  # when we forked it; the supervisor's record beats it
    memory_gb: int = 0  # per replica (for the note on an out-of-memory kill)
    adopted: bool = False
    slots: int = 0  # process slots held (counted against max_processes)
    verdict: tuple[ExecPhase, int | None, str] | None = None
    grace_s: float = 0.0
    kill_at: float | None = None  # monotonic time of SIGKILL escalation
    cached: ExecStatus | None = None  # the last answer, while nothing but an event can change it

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
        spawner: SpawnerFactory | None = None,
    ) -> None:
        """``clock`` must tell real time (the default): run times come from the supervisor's
        file records, which the kernel stamps, and are compared with ``clock.now()``.
        ``spawner`` makes the launcher (``local_launcher.default_spawner``: a process of its
        own); tests pass slow or gated ones."""
        super().__init__(name)
        self.settings = (
            settings if isinstance(settings, LocalSettings) else LocalSettings.parse(settings or {})
        )
        self.data_dir = Path(data_dir)
        self.runs_dir = self.data_dir / "runs"
        self._clock: Clock = clock or _SystemClock()
        self._monotonic = getattr(self._clock, "monotonic", None) or _SystemClock().monotonic
        self._lock = threading.RLock()
        self._active: dict[str, _Run] = {}
        self._finished: OrderedDict[str, tuple[ExecStatus, int]] = OrderedDict()
        self._shown_running: OrderedDict[str, None] = OrderedDict()  # observe has reported them running
        self._queue: deque[str] = deque()
        self._to_persist: list[dict[str, Any]] = []
        self._journaled: set[str] = set()
        self._claims: dict[str, threading.Event] = {}
        self._journal = -1
        self._slots_used = 0
        inherit = self.settings.inherit_env is not False and not self.settings.sandbox
        self._base_env = dict(os.environ) if inherit else {"PATH": os.defpath}
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            for d in (self.data_dir, self.runs_dir):  # the control dirs: the platform's alone
                if d.stat().st_uid == os.geteuid():
                    d.chmod(0o700)
            self._lockfile = os.open(
                self.data_dir / "executor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise Unavailable(
                f"local executor {name}: data dir {self.data_dir} is not usable: {exc}"
            ) from exc
        if not _lock_within(self._lockfile, seconds=10.0):
            holder = os.pread(self._lockfile, 32, 0).decode(errors="replace").strip()
            os.close(self._lockfile)
            raise Unavailable(
                f"local executor {name}: {self.data_dir} is in use by another executor instance "
                f"(executor.lock, pid {holder or '?'})"
            )
        os.ftruncate(self._lockfile, 0)
        os.write(self._lockfile, f"{os.getpid()}\n".encode())
        self._sandbox: Sandbox | None = None
        try:
            self._sandbox = self._make_sandbox() if self.settings.sandbox else None
        except BaseException:
            os.close(self._lockfile)
            raise
        if not self.settings.sandbox:
            log.warning(
                "local executor %s: sandbox = false: jobs run as the platform's own user, see its files "
                "and environment; use only on a trusted single-tenant machine / 沙箱已关闭：仅限可信的单租户环境",
                name, extra={"executor": name},
            )
        self._read_journal()
        self._journal = os.open(
            self.data_dir / "finished.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        self._adopt_all()
        self._spawner_factory = spawner or default_spawner
        self._closing = False
        self._launcher_since, self._launcher_deaths = 0.0, 0
        self._stop = threading.Event()
        try:
            self._launcher = self._start_launcher()
        except OSError as exc:
            os.close(self._lockfile)
            raise Unavailable(f"local executor {name}: cannot start its launcher process: {exc}") from exc
        self._thread = threading.Thread(target=self._monitor, name=f"yungu-local-{name}", daemon=True)
        self._thread.start()

    # ---- contract --------------------------------------------------------------------

    @property
    def max_gang(self) -> int:
        """The largest gang this executor can ever launch (checked at submission by the API)."""
        return self.settings.max_processes

    def capabilities(self) -> Capabilities:
        unsupported = {
            "device_isolation": "devices are declared: assigned through YUNGU_DEVICES only, processes are not confined",
            "energy_accounting": "local processes are not metered",
        }
        sb = self._sandbox
        missing = [c for c, v in sb.cgroups.describe().items() if v is None] if sb else ["cpu", "memory", "pids"]
        if missing:
            unsupported["resource_limits"] = (
                f"{', '.join(missing)} limits per replica are not enforced here "
                + ("(no writable cgroup controller)" if sb else "(sandbox = false)")
            )
        if sb is None:
            unsupported["isolation"] = "sandbox = false: jobs run as the platform's own user"
        return Capabilities(
            name=self.name, gangs=True, devices=True, logs=True, energy_accounting=False, unsupported=unsupported
        )

    def _make_sandbox(self) -> Sandbox:
        s = self.settings
        return Sandbox(
            self.name,
            self.data_dir,
            runs_root=Path(s.runs_root) if s.runs_root else None,
            uid_base=s.uid_base,
            uid_count=s.uid_count,
            binds=s.binds,
            network=s.network,
            pids_per_replica=s.pids_per_replica,
            monotonic=self._monotonic,
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
            claim = self._claims.get(rid)
            owner = claim is None
            if claim is None:
                claim = self._claims[rid] = threading.Event()
        if not owner:  # the same request is being submitted by another thread: its answer is ours
            claim.wait(timeout=30)
            with self._lock:
                found = self._lookup(rid, load=True)
            return found or ExecError(
                ExecErrorCode.UNREACHABLE, f"a concurrent submit of {rid} did not finish"
            )
        try:
            return self._submit_claimed(launch)
        finally:
            with self._lock:
                self._claims.pop(rid, None)
            claim.set()

    def _submit_claimed(self, launch: Launch) -> ExecStatus | ExecError:
        """Disk and process work runs outside the lock: submits from several threads overlap
        (file creation and fork/exec release the GIL) and the monitor never waits on them."""
        rid = launch.request_id
        path = self.runs_dir / rid
        try:
            os.mkdir(path)
        except FileExistsError:  # submitted before (by an earlier instance): never launch again
            with self._lock:
                found = self._lookup(rid, load=True)
            return found or ExecError(ExecErrorCode.INTERNAL, f"run dir of {rid} exists but cannot be read")
        except OSError as exc:
            return ExecError(ExecErrorCode.UNREACHABLE, f"cannot create run dir for {rid}: {exc}")
        n = len(launch.replicas)
        run = _Run(
            rid, path, [_Replica(i) for i in range(n)], time_limit_s=launch.time_limit_s, launch=launch
        )
        try:
            # Not tmp+rename: a torn manifest can only come from a crash before any spawn,
            # and an unreadable manifest reads as "never started", i.e. lost. Same outcome.
            write_new(path / "launch.json", manifest(launch, self.name, self._clock.now()))
        except OSError as exc:  # nothing started; a retry of this id will read "lost"
            return ExecError(ExecErrorCode.UNREACHABLE, f"cannot record launch {rid}: {exc}")
        # The launch is recorded: from here the launcher does the rest, off this thread.
        request = self._request(run)
        with self._lock:
            self._active[rid] = run
            if self._queue or self._slots_used + n > self.settings.max_processes:
                self._queue.append(rid)
            else:
                run.slots = n
                self._slots_used += n
                self._send(run, request)
            return self._status_of(run, *decide([(r.state, None) for r in run.replicas])) if run.verdict is None \
                else self._refresh(run)

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        with self._lock:
            claim = self._claims.get(request_id)
        if claim is not None:  # a submit of it is under way: cancel what it starts, not before
            claim.wait(timeout=30)
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
                out[rid] = self._not_skipping_running(found) if found else ExecError(
                    ExecErrorCode.NOT_FOUND, f"unknown request {rid}")
        return out

    def _not_skipping_running(self, st: ExecStatus) -> ExecStatus:
        """``observe`` reports a launch that ran as running at least once before its outcome.

        Launches start off the caller's thread, so a short one can start and end between two
        observations (or while the platform is down); a caller that records "started" when
        it sees running (the control loop) would otherwise never see it start. The running
        view carries the real start record; the outcome follows on the next observation."""
        rid = st.request_id
        if st.phase is ExecPhase.RUNNING:
            self._shown_running[rid] = None
        elif st.done and st.started_at is not None and rid not in self._shown_running:
            self._shown_running[rid] = None
            while len(self._shown_running) > _FINISHED_CACHE:
                self._shown_running.popitem(last=False)
            return ExecStatus(rid, ExecPhase.RUNNING, native_id=st.native_id, started_at=st.started_at)
        return st

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
        sb = self._sandbox
        if sb is None:
            sandbox: dict[str, Any] = {"enabled": False}
            warnings.append(
                "sandbox = false: jobs run as the platform's own user with its files and environment "
                "(trusted single-tenant use only) / 沙箱已关闭：作业以平台自身用户运行"
            )
        else:
            sandbox = sb.report()
            warnings.extend(sb.warnings)
        refusal = sb.refusal if sb is not None else ""
        return {
            "reachable": writable and not refusal,
            **({"error": refusal} if refusal else {}),
            "sandbox": sandbox,
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
            self._closing = True
        self._launcher.close()  # sends what is queued, then waits for it to exit (it holds the lock)
        self._flush()
        if self._sandbox is not None:
            self._sandbox.close()  # only empty cgroups go; running jobs keep theirs
        with self._lock:
            if self._journal >= 0:
                os.close(self._journal)
                self._journal = -1
            if self._lockfile >= 0:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lockfile, fcntl.LOCK_UN)
                os.close(self._lockfile)
                self._lockfile = -1

    # ---- validation ------------------------------------------------------------------

    def _validate(self, launch: Launch) -> str:
        if self._sandbox is not None and self._sandbox.refusal:
            return self._sandbox.refusal
        if not _REQUEST_ID.match(launch.request_id) or launch.request_id in (".", ".."):
            return f"request id {launch.request_id!r} must match {_REQUEST_ID.pattern}"
        if not launch.command.strip() or "\x00" in launch.command:
            return "command must be a non-empty string without NUL bytes"
        if not launch.job_id or "\x00" in launch.job_id:
            return "job id must be a non-empty string without NUL bytes"
        if self._sandbox is not None and (not launch.tenant_id or "\x00" in launch.tenant_id):
            return "a sandboxed launch needs its tenant id (it decides the uid the job runs as)"
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

    def _start_launcher(self) -> Spawner:
        sb = self._sandbox
        init = {"key": sb.cgroups.key, "cgroups": sb.cgroups.export()} if sb is not None else {}
        self._launcher_since = self._monotonic()
        return self._spawner_factory(init, self._lockfile, self._on_launcher_events, self._launcher_gone)

    def _request(self, run: _Run) -> dict[str, Any] | str:
        """The launcher's spawn request for a run (no processes; only the job's checkpoint
        directory is made here), or why the launch cannot be confined or prepared as promised
        (it must then not run)."""
        launch = run.launch
        assert launch is not None
        sb = self._sandbox
        rid = launch.request_id
        replicas: list[dict[str, Any]] = []
        if sb is None:
            problem = ensure_checkpoint_dir(launch)
            if problem:
                return problem
            # None: the launcher's environment, i.e. the platform's, as is (the common case).
            inherit = self.settings.inherit_env is not False
            env = None if inherit and not launch.env else {**self._base_env, **launch.env}
            for rep, spec in zip(run.replicas, launch.replicas, strict=True):
                platform_vars = [f"{k}={v}" for k, v in self._platform_vars(launch, rep.index, spec).items()]
                replicas.append({"i": rep.index, "kind": "plain", "prefix": f"{run.path}/replica-{rep.index}",
                                 "command": launch.command, "vars": platform_vars, "env": env,
                                 "cwd": str(run.path)})
            return {"op": "spawn", "rid": rid, "replicas": replicas}
        try:
            uid, work = sb.plan(rid, launch.tenant_id)
            # The job's own checkpoint directory (kept across attempts), at /checkpoint inside;
            # the one disk write here (a mkdir, made before the launcher binds it).
            ckpt = sb.checkpoint_dir(launch.job_id, uid) if launch.checkpoint_dir else None
        except SandboxError as exc:
            return str(exc)
        tail = sb.argv(uid, work, launch.command, ckpt)
        for rep, spec in zip(run.replicas, launch.replicas, strict=True):
            env = {**JOB_BASE_ENV, **launch.env, **self._platform_vars(launch, rep.index, spec)}
            if ckpt is not None:
                env["YUNGU_CHECKPOINT_DIR"] = CHECKPOINT_DIR
            replicas.append({
                "i": rep.index, "prefix": f"{run.path}/replica-{rep.index}", "args": sb.env_items(env),
                "cgroup": sb.cgroup_spec(_leaf(rid, rep.index), launch.cpus_per_replica,
                                         launch.memory_gb_per_replica),
                "tail": tail,
            })
        return {"op": "spawn", "rid": rid, "work": str(work), "uid": uid, "replicas": replicas}

    def _send(self, run: _Run, request: dict[str, Any] | str) -> None:
        """Hand a run whose slots are reserved to the launcher (under the lock; never blocks)."""
        assert run.launch is not None
        run.memory_gb = run.launch.memory_gb_per_replica
        run.launch = None
        run.cached = None
        if isinstance(request, str):
            self._sandbox_failure(run, request)
            return
        for rep in run.replicas:
            rep.state = ReplicaState.STARTING
        self._launcher.send(request)

    def _sandbox_failure(self, run: _Run, problem: str) -> None:
        """The launch cannot be confined as promised: it must not run."""
        log.error("local launch not confined", extra={"executor": self.name, "request_id": run.request_id,
                                                      "error": problem})
        self._set_verdict(run, ExecPhase.FAILED, None, f"could not set up the job sandbox: {problem}", 0.0)

    def _on_launcher_events(self, events: list[dict[str, Any]]) -> None:
        """Apply what the launcher reports (its reader thread), then bring those runs up to date."""
        touched: dict[str, _Run] = {}
        with self._lock:
            for ev in events:
                run = self._active.get(ev.get("rid", ""))
                if run is None:
                    continue
                touched[run.request_id] = run
                run.cached = None
                kind = ev["ev"]
                if kind == "spawned":
                    rep = run.replicas[ev["i"]]
                    rep.pid, rep.create_time, rep.owned = ev["pid"], ev.get("ct"), True
                    rep.state = ReplicaState.ALIVE
                    at = datetime.fromisoformat(ev["at"])
                    run.spawned_at = min(run.spawned_at, at) if run.spawned_at else at
                elif kind == "exit":
                    rep = run.replicas[ev["i"]]
                    if rep.owned and rep.pid == ev["pid"]:
                        rep.reaped = ev["rc"]
                        if "oom" in ev:  # the launcher read the cgroup's counters and removed it
                            rep.cgroup_events = Events(int(ev["oom"]), int(ev["pids_denied"]))
                elif kind == "skipped":
                    for i in ev["replicas"]:
                        run.replicas[i].state = ReplicaState.GONE
                elif kind == "failed":
                    for i in ev["unspawned"]:
                        run.replicas[i].state = ReplicaState.GONE
                    if ev["kind"] == "sandbox":
                        self._sandbox_failure(run, ev["msg"])
                    elif run.verdict is None:
                        log.error("local spawn failed", extra={"executor": self.name, "request_id": run.request_id,
                                                               "error": ev["msg"]})
                        self._set_verdict(run, ExecPhase.LOST, None, ev["msg"], 0.0)
            for run in touched.values():
                if run.request_id in self._active:
                    self._refresh(run)

    def _launcher_gone(self) -> None:
        """The launcher process died under a live executor (its reader saw EOF): every
        supervisor it started has exec'd, and it will start no more. Its replicas become
        re-adopted ones (pid file, argv or records), those it never reached are gone (the
        run reads lost), and a new launcher takes the next requests (after a pause if it
        keeps dying young)."""
        with self._lock:
            young = self._monotonic() - self._launcher_since < 5.0
            self._launcher_deaths = self._launcher_deaths + 1 if young else 1
        if self._launcher_deaths > 1:
            self._stop.wait(min(10.0, 0.5 * 2 ** (self._launcher_deaths - 2)))
        with self._lock:
            if self._closing:
                return
            log.error("local executor %s: the launcher process died; starting a new one", self.name,
                      extra={"executor": self.name})
            shims: Mapping[str, tuple[int, float]] | None = None
            for run in list(self._active.values()):
                run.cached = None
                for rep in run.replicas:
                    if rep.state is ReplicaState.ALIVE and rep.owned and rep.reaped is None:
                        rep.owned = False  # from now on: probe + exit file, like any adopted one
                    elif rep.state is ReplicaState.STARTING:
                        base = run.path / f"replica-{rep.index}"
                        info = read_json(Path(f"{base}.pid"))
                        if info is None:
                            shims = shim_index() if shims is None else shims
                            found = shims.get(str(base))
                            info = {"pid": found[0], "create_time": found[1]} if found else None
                        if info is not None:
                            rep.pid, rep.create_time = int(info["pid"]), info.get("create_time")
                            rep.state = ReplicaState.ALIVE
                        elif read_exit(Path(f"{base}.exit")) is not None:
                            rep.state, rep.exit_code = ReplicaState.EXITED, read_exit(Path(f"{base}.exit"))
                        else:
                            rep.state = ReplicaState.GONE  # never spawned, and never will be
            self._launcher = self._start_launcher()  # before the refresh: it may send queued launches
            for run in list(self._active.values()):
                self._refresh(run)

    def _platform_vars(self, launch: Launch, index: int, spec: ReplicaLaunch) -> dict[str, str]:
        out = replica_env(launch, index)  # the YUNGU_* block every executor builds the same way
        if self.settings.set_cuda_visible_devices and spec.devices:
            out["CUDA_VISIBLE_DEVICES"] = out["YUNGU_DEVICES"]
        return out

    def _signal(self, rep: _Replica, sig: int) -> None:
        assert rep.pid is not None
        if self._sandbox is not None:
            self._sandbox.signal(rep.pid, sig)
        else:
            signal_group(rep.pid, sig)

    def _poll(self, run: _Run, rep: _Replica) -> None:
        """Advance one replica's state: the launcher's report for its children, files and
        /proc for re-adopted ones; and, until it is seen, the supervisor's start record."""
        if rep.state is not ReplicaState.ALIVE:
            return
        if rep.started is None:
            rep.started = mtime(run.path / f"replica-{rep.index}.start")
        exit_path = run.path / f"replica-{rep.index}.exit"
        if rep.owned:
            rc = rep.reaped
            if rc is None:
                return
            rep.owned = False
            if rc >= 0:
                code: int | None = rc
            else:  # the shim itself was killed by a signal: record what the shell would report
                code = read_exit(exit_path)
                if code is None:
                    code = 128 - rc
                    with contextlib.suppress(OSError):
                        write_exit(exit_path, code)
            safe = True  # just reaped: the group id stays ours while anything is left in it
        else:
            assert rep.pid is not None
            seen = probe(rep.pid, rep.create_time)
            code = read_exit(exit_path)
            if code is None:
                if seen == "alive":
                    return
                code = read_exit(exit_path)  # it may have finished between the two looks
            elif seen == "alive":
                return  # exit code written, shim about to exit: next poll
            safe = seen == "dead"
        if rep.started is None:
            rep.started = mtime(run.path / f"replica-{rep.index}.start")
        rep.state, rep.exit_code = (
            (ReplicaState.EXITED, code) if code is not None else (ReplicaState.GONE, None)
        )
        if code is not None:
            rep.ended = mtime(exit_path)  # the supervisor's end record (or ours, just reaped)
        if run.kill_at is None and safe and rep.pid is not None:
            signal_group(rep.pid, signal.SIGKILL)  # leftovers of a finished replica

    def _refresh(self, run: _Run) -> ExecStatus:
        """Bring one run up to date, act on it (kill, escalate, finalise) and say where it is.

        A run that only the launcher's events can change (queued, starting, or running as its
        child with its start seen) answers from its last status: ``observe`` over thousands of
        launches then costs a lookup each; every event, verdict or hand-over clears it."""
        if run.cached is not None and not self._needs_watching(run):
            return run.cached
        status = self._refresh_now(run)
        run.cached = status if not status.done else None
        return status

    def _refresh_now(self, run: _Run) -> ExecStatus:
        for rep in run.replicas:
            self._poll(run, rep)
        if run.verdict is None:
            # A replica runs once its supervisor's start record exists; until then it starts.
            phase, code, reason = decide([
                (ReplicaState.STARTING if r.state is ReplicaState.ALIVE and r.started is None else r.state,
                 r.exit_code) for r in run.replicas
            ])
            if phase in (ExecPhase.FAILED, ExecPhase.LOST) and any(
                r.state in (ReplicaState.ALIVE, ReplicaState.STARTING) for r in run.replicas
            ):
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
        """Drive SIGTERM -> grace -> SIGKILL for a run with a verdict; True once nothing is left.

        A replica the launcher has not started yet is cancelled there; if it was started
        meanwhile, it is signalled as soon as its pid is known, and killed at the deadline."""
        now = self._monotonic()
        if run.kill_at is None:
            run.kill_at = now + run.grace_s
            if any(r.state is ReplicaState.STARTING for r in run.replicas):
                self._launcher.send({"op": "cancel", "rid": run.request_id})
        for rep in run.replicas:
            if rep.state is ReplicaState.ALIVE and rep.pid is not None and not rep.signalled:
                rep.signalled = True
                self._signal(rep, signal.SIGTERM)
        for rep in run.replicas:
            self._poll(run, rep)
        signalled = [r for r in run.replicas if r.signalled and r.pid is not None]
        undecided = any(r.state is ReplicaState.STARTING for r in run.replicas)  # the launcher has not said
        if any(r.state is ReplicaState.ALIVE for r in run.replicas) or undecided or any(
            group_exists(r.pid) for r in signalled if r.pid
        ):
            if now < run.kill_at:
                return False
            for rep in signalled:
                if not rep.killed and rep.pid is not None and (
                    rep.owned or probe(rep.pid, rep.create_time) != "reused"
                ):
                    rep.killed = True
                    self._signal(rep, signal.SIGKILL)
            for rep in run.replicas:
                self._poll(run, rep)
            if undecided or any(r.state is ReplicaState.ALIVE for r in run.replicas):
                return False
        return True

    def _over_time(self, run: _Run) -> bool:
        started = self._started_at(run)
        if run.time_limit_s is None or started is None:
            return False
        return (self._clock.now() - started).total_seconds() > run.time_limit_s

    def _started_at(self, run: _Run) -> datetime | None:
        """When the run really started: the earliest supervisor start record of its replicas
        (``replica-<i>.start``, written by the supervisor as it begins); until that file
        exists (the first milliseconds), the moment we forked it."""
        known: list[float] = []
        for rep in run.replicas:
            if rep.started is None and not rep.start_checked and rep.state in _ENDED:
                rep.started = mtime(run.path / f"replica-{rep.index}.start")  # (ALIVE: _poll reads it)
                rep.start_checked = True
            if rep.started is not None:
                known.append(rep.started)
        if known:
            return datetime.fromtimestamp(min(known), UTC)
        return run.spawned_at

    def _finished_at(self, run: _Run) -> datetime:
        """When the run really ended: the latest supervisor end record (``replica-<i>.exit``)."""
        ends = []
        for rep in run.replicas:
            if rep.ended is None and rep.state is ReplicaState.EXITED:
                rep.ended = mtime(run.path / f"replica-{rep.index}.exit")
            if rep.ended is not None:
                ends.append(rep.ended)
        return datetime.fromtimestamp(max(ends), UTC) if ends else self._clock.now()

    def _set_verdict(
        self, run: _Run, phase: ExecPhase, code: int | None, reason: str, grace_s: float
    ) -> None:
        """Record a decided outcome; the first verdict on disk wins (link fails if one exists).

        "Lost" is not written: it follows from the files alone (no live shim, no exit code)
        and stays true, since a recorded launch is never started again; skipping the write
        keeps a restart after a crash with many queued launches fast.
        """
        payload: dict[str, Any] = {
            "phase": phase.value,
            "exit_code": code,
            "reason": reason,
            "grace_s": grace_s,
            "decided_at": self._clock.now().isoformat(),
        }
        if phase is not ExecPhase.LOST and not write_exclusive(run.path / "verdict.json", payload):
            stored = read_json(run.path / "verdict.json")
            if stored:
                payload = stored
        run.verdict = (ExecPhase(payload["phase"]), payload.get("exit_code"), str(payload.get("reason", "")))
        run.grace_s = float(payload.get("grace_s") or 0.0)
        if phase is ExecPhase.LOST and not run.adopted:  # adopted ones are summed up in _adopt_all
            log.warning(
                "local launch lost: %s", reason, extra={"executor": self.name, "request_id": run.request_id}
            )

    def _finalise(self, run: _Run, phase: ExecPhase, code: int | None, reason: str) -> ExecStatus:
        finished = self._finished_at(run)
        if self._sandbox is not None:
            notes = [self._cgroup_note(run, r, self._sandbox) for r in run.replicas]
            note = "; ".join(sorted({n for n in notes if n}))
            if note and phase is ExecPhase.FAILED:
                reason = f"{reason} ({note})" if reason else note
        status = self._status_of(run, phase, code, reason, finished_at=finished)
        # Journaled by the monitor outside the lock: if we crash first, a restart derives
        # the same outcome from the exit files and verdict.
        self._to_persist.append({**status_json(status), "replicas": len(run.replicas)})
        self._active.pop(run.request_id, None)
        self._slots_used -= run.slots
        run.slots = 0
        self._remember(status, len(run.replicas))
        self._start_queued()
        return status

    def _cgroup_note(self, run: _Run, rep: _Replica, sb: Sandbox) -> str:
        """What the kernel stopped in a finished replica's cgroups; they go (or are retried)."""
        leaf = _leaf(run.request_id, rep.index)
        if rep.cgroup_events is None:  # re-adopted, or never spawned: read and remove them here
            return sb.finished(leaf, run.memory_gb)
        return sb.note(rep.cgroup_events, run.memory_gb)  # the launcher removed them (or retries)

    def _status_of(
        self, run: _Run, phase: ExecPhase, code: int | None, reason: str, finished_at: datetime | None = None
    ) -> ExecStatus:
        return ExecStatus(
            request_id=run.request_id,
            phase=phase,
            exit_code=code,
            reason=reason,
            native_id=run.native_id,
            started_at=self._started_at(run),
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
            run.slots = len(run.replicas)
            self._slots_used += run.slots
            self._send(run, self._request(run))

    def _monitor(self) -> None:
        """Reap, fail gangs, escalate kills and start queued launches even when nobody asks."""
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                with self._lock:
                    for run in list(self._active.values()):
                        if self._needs_watching(run):
                            self._refresh(run)
                    self._start_queued()
                self._flush()
                if self._sandbox is not None:
                    self._sandbox.collect()  # nothing to do unless a removal was refused
            except Exception:
                log.error("local executor monitor failed", exc_info=True, extra={"executor": self.name})
        self._flush()

    @staticmethod
    def _needs_watching(run: _Run) -> bool:
        """Whether the monitor must look at a run: one the launcher reports on (its replicas
        starting, or running as its children) changes only by its events or a deadline."""
        if run.verdict is not None or run.time_limit_s is not None:
            return True
        return not all(
            r.state in (ReplicaState.QUEUED, ReplicaState.STARTING)
            or (r.state is ReplicaState.ALIVE and r.owned and r.started is not None)
            for r in run.replicas
        )

    def _flush(self) -> None:
        """Disk writes that need not hold the lock: the finished journal."""
        with self._lock:
            todo, self._to_persist = self._to_persist, []
            fd = self._journal
        if not todo or fd < 0:
            return
        data = "".join(json.dumps(row) + "\n" for row in todo).encode()
        try:
            os.write(fd, data)  # O_APPEND: one write per batch
        except OSError as exc:
            log.warning("cannot append to finished.jsonl", extra={"executor": self.name, "error": str(exc)})
        else:
            with self._lock:
                self._journaled.update(row["request_id"] for row in todo)

    # ---- memory <-> disk -------------------------------------------------------------

    def _lookup(self, rid: str, *, load: bool = False) -> ExecStatus | None:
        run = self._active.get(rid)
        if run is not None:
            return self._refresh(run)
        hit = self._finished.get(rid)
        if hit is not None:
            return hit[0]
        if rid in self._claims:  # mkdir done, processes not yet: do not read a half-made run
            return ExecStatus(rid, ExecPhase.PENDING, reason="being submitted")
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

    def _read_journal(self) -> None:
        """Load ``finished.jsonl``: every finalised id, and the newest statuses into the cache."""
        try:
            with open(self.data_dir / "finished.jsonl", "rb") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        status = status_from_json(row)
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line after a crash: that run is derived again
                    self._journaled.add(status.request_id)
                    self._remember(status, int(row.get("replicas", 1)))
        except FileNotFoundError:
            return

    def _journal_row(self, rid: str) -> dict[str, Any] | None:
        needle = json.dumps(rid).encode()
        found = None
        with open(self.data_dir / "finished.jsonl", "rb") as fh:
            for line in fh:
                if needle in line:
                    with contextlib.suppress(ValueError):
                        row = json.loads(line)
                        if row.get("request_id") == rid:
                            found = row
        return found

    def _adopt_all(self) -> None:
        """At start: load every run without an outcome; the data dir is the source of truth."""
        pending = [p for p in self.runs_dir.iterdir() if p.name not in self._journaled and p.is_dir()]
        shims = shim_index() if pending else {}
        counts: dict[str, int] = {}
        for path in pending:
            st = self._load(path, shims)
            if st is not None:
                counts[st.phase.value] = counts.get(st.phase.value, 0) + 1
        if self._sandbox is not None:  # cgroups of runs that ended while we were away
            live = {_leaf(rid, r.index) for rid, run in self._active.items() for r in run.replicas}
            for leaf in self._sandbox.cgroups.leaves() - live:
                self._sandbox.cgroups.remove(leaf)
        if pending:
            log.info(
                "local executor %s: %d unfinished runs on disk at start: %s",
                self.name,
                len(pending),
                counts,
                extra={"executor": self.name, "phases": counts},
            )

    def _load(self, path: Path, shims: Mapping[str, tuple[int, float]] | None = None) -> ExecStatus | None:
        rid = path.name
        if rid in self._journaled:  # finished long ago and evicted from the cache
            row = self._journal_row(rid)
            if row is not None:
                status = status_from_json(row)
                self._remember(status, int(row.get("replicas", 1)))
                return status
        manifest = read_json(path / "launch.json")
        n = len(manifest.get("replicas", ())) if manifest else 0
        run = _Run(rid, path, [_Replica(i) for i in range(n)], adopted=True)
        if manifest:
            run.time_limit_s = manifest.get("time_limit_s")
            run.memory_gb = int(manifest.get("memory_gb_per_replica") or 0)
            with contextlib.suppress(KeyError, TypeError, ValueError):
                run.spawned_at = datetime.fromisoformat(manifest["submitted_at"])
        verdict = read_json(path / "verdict.json")
        if verdict:
            run.verdict = (
                ExecPhase(verdict["phase"]),
                verdict.get("exit_code"),
                str(verdict.get("reason", "")),
            )
            run.grace_s = float(verdict.get("grace_s") or 0.0)
            with contextlib.suppress(KeyError, TypeError, ValueError):
                # A restart does not extend the grace period: only what is left of it remains.
                spent = (self._clock.now() - datetime.fromisoformat(verdict["decided_at"])).total_seconds()
                run.grace_s = max(0.0, run.grace_s - max(0.0, spent))
        for rep in run.replicas:
            base = path / f"replica-{rep.index}"
            info = read_json(Path(f"{base}.pid"))
            if info is None:
                if shims is None:
                    shims = shim_index()
                found = shims.get(str(base))
                if found is not None:  # spawned, but the platform died before writing the pid file
                    started = datetime.fromtimestamp(found[1], UTC).isoformat()
                    info = {"pid": found[0], "create_time": found[1], "started_at": started}
                    with contextlib.suppress(OSError):
                        write_atomic(Path(f"{base}.pid"), info)
            if info is not None:
                rep.pid, rep.create_time = int(info["pid"]), info.get("create_time")
                if info.get("started_at"):  # the spawn time beats the manifest's submit time
                    run.spawned_at = datetime.fromisoformat(info["started_at"])
            code = read_exit(Path(f"{base}.exit"))
            if code is not None:
                rep.state, rep.exit_code = ReplicaState.EXITED, code
            elif rep.pid is not None:
                rep.state = ReplicaState.ALIVE  # _poll verifies identity and liveness
            else:
                rep.state = ReplicaState.GONE
            if run.verdict is not None and rep.pid is not None and probe(rep.pid, rep.create_time) == "dead":
                # We had decided to stop this run and then stopped ourselves: a replica whose
                # shim is gone may have left processes that ignored SIGTERM. Finish the job.
                signal_group(rep.pid, signal.SIGKILL)
        run.slots = sum(1 for r in run.replicas if r.state is ReplicaState.ALIVE)
        self._slots_used += run.slots
        self._active[rid] = run
        return self._refresh(run)


def _leaf(request_id: str, index: int) -> str:
    """A replica's cgroup name."""
    return f"{request_id}-r{index}"


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the data dir's lock, waiting a little: when the previous owner was killed while
    forking a replica, the child holds the lock (a copy of the descriptor) for the moment
    until its exec closes it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


__all__ = ["SHIM", "LocalExecutor", "LocalSettings", "ReplicaState", "decide"]

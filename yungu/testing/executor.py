"""A fake execution engine that keeps the executor contract (``yungu/ports/executor.py``).

``FakeCluster`` is the engine (it outlives executor instances, as a real cluster outlives a
platform restart); ``FakeExecutor(cluster)`` is one platform's client of it. Two ways for
a launch to run, chosen per cluster:

- **scripted** (``FakeCluster(clock, script=...)``): no processes at all. ``script(launch)``
  says how long the launch runs on the injected clock, its exit code and output, and how
  long it takes to stop after SIGTERM. With a :class:`~yungu.testing.clock.MockClock` a
  whole lifecycle (start, run, finish, a cancel with its grace period) is deterministic and
  instant. This is what control-loop tests use.
- **shell** (the default): every replica is a real ``/bin/sh -c`` process in its own process
  group, with the ``YUNGU_*`` variables, output kept in files of a temporary directory,
  SIGTERM then SIGKILL after the grace period, and gang failure. This is what lets the fake
  pass ``tests/executors/contract.py`` like the real executors.

Faults on demand, for either mode: ``cluster.unreachable = "why"`` makes every call answer
``UNREACHABLE`` (and ``check()`` unreachable); ``cluster.reject = lambda launch: "why"``
refuses launches; ``cluster.lose(request_id)`` forgets one (``NOT_FOUND``, as after an
engine restart); ``cluster.unsupported`` is reported in ``capabilities()``.

Nothing is durable: "restart" means a new ``FakeExecutor`` on the same cluster. Call
``cluster.close()`` at the end of a test (it kills what still runs).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from yungu.domain.clock import Clock
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Launch,
    LogChunk,
)

_STREAM = re.compile(r"^(stdout|stderr)(?::(\d{1,6}))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Script:
    """How a scripted launch behaves."""

    run_s: float = 1.0  # from submit to its own end
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    stop_s: float = 0.0  # how long it takes to exit after SIGTERM (beyond grace: SIGKILL)
    start_s: float = 0.0  # pending this long before it runs


ScriptFn = Callable[[Launch], Script]


class _WallClock:
    """The machine's clocks (``yungu.testing`` sits beside the adapters, so it has its own)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    exit_code: int | None = None


@dataclass
class _FakeRun:
    launch: Launch
    submitted: float  # monotonic
    started_at: datetime
    script: Script | None = None
    procs: list[_Proc] = field(default_factory=list)
    verdict: tuple[ExecPhase, int | None, str] | None = None
    stop_at: float | None = None  # scripted: when it exits after SIGTERM
    kill_at: float | None = None  # shell: when SIGKILL follows SIGTERM
    outcome: ExecStatus | None = None
    finished_at: datetime | None = None


class FakeCluster:
    def __init__(self, clock: Clock | None = None, *, script: ScriptFn | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.clock: Clock = clock or _WallClock()
        self.script = script
        self.unreachable: str | None = None
        self.reject: Callable[[Launch], str] | None = None
        self.unsupported: dict[str, str] = {}
        self.runs: dict[str, _FakeRun] = {}
        self.submits: list[str] = []  # every request id that started (a test can count runs)
        self.cancels: list[tuple[str, float]] = []  # (request id, grace) of every cancel asked
        self.lock = threading.RLock()
        self._env = dict(os.environ if env is None else env)
        self._dir = Path(tempfile.mkdtemp(prefix="yungu-fake-"))

    # ---- faults ---------------------------------------------------------------------------

    def lose(self, request_id: str) -> None:
        with self.lock:
            run = self.runs.pop(request_id, None)
        if run is not None:
            for p in run.procs:
                _signal(p.popen, signal.SIGKILL)

    def close(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            for p in run.procs:
                _signal(p.popen, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.popen.wait(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- running launches -----------------------------------------------------------------

    def _start(self, launch: Launch) -> _FakeRun:
        run = _FakeRun(launch, self.clock.monotonic(), self.clock.now())
        if self.script is not None:
            run.script = self.script(launch)
            return run
        d = self._dir / launch.request_id
        d.mkdir(parents=True, exist_ok=True)
        n = len(launch.replicas)
        for i, rep in enumerate(launch.replicas):
            env = {**self._env, **launch.env, "YUNGU_JOB_ID": launch.job_id, "YUNGU_REQUEST_ID": launch.request_id,
                   "YUNGU_TENANT_ID": launch.tenant_id, "YUNGU_POOL_ID": launch.pool_id,
                   "YUNGU_REPLICA": str(i), "YUNGU_REPLICAS": str(n), "YUNGU_NODE": str(rep.node),
                   "YUNGU_DEVICES": ",".join(str(x) for x in rep.devices)}
            if launch.checkpoint_dir:
                Path(launch.checkpoint_dir).mkdir(parents=True, exist_ok=True)
                env["YUNGU_CHECKPOINT_DIR"] = launch.checkpoint_dir
            with open(d / f"{i}.stdout", "wb") as out, open(d / f"{i}.stderr", "wb") as err:
                popen = subprocess.Popen(["/bin/sh", "-c", launch.command], env=env, cwd=d,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            run.procs.append(_Proc(popen))
        return run

    def status(self, run: _FakeRun) -> ExecStatus:
        """Advance ``run`` to the clock's present and say where it is (call under the lock)."""
        if run.outcome is not None:
            return run.outcome
        rid = run.launch.request_id
        now = self.clock.monotonic()
        if run.script is not None:
            sc = run.script
            end = run.submitted + sc.start_s + sc.run_s
            if run.verdict is not None and run.stop_at is not None and run.stop_at <= now and run.stop_at < end:
                return self._finish(run, *run.verdict)
            if now >= end:
                phase = ExecPhase.SUCCEEDED if sc.exit_code == 0 else ExecPhase.FAILED
                return self._finish(run, phase, sc.exit_code, "" if sc.exit_code == 0 else f"exit code {sc.exit_code}")
            phase = ExecPhase.PENDING if now < run.submitted + sc.start_s else ExecPhase.RUNNING
            return ExecStatus(rid, phase, native_id=f"fake-{rid}", started_at=run.started_at)
        for p in run.procs:
            if p.exit_code is None:
                rc = p.popen.poll()
                if rc is not None:
                    p.exit_code = rc if rc >= 0 else 128 - rc
        alive = [p for p in run.procs if p.exit_code is None]
        if run.verdict is None:
            bad = next((p for p in run.procs if p.exit_code not in (None, 0)), None)
            if bad is not None:
                run.verdict = (ExecPhase.FAILED, bad.exit_code, f"exit code {bad.exit_code}")
                self._terminate(run, 1.0)
            elif not alive:
                return self._finish(run, ExecPhase.SUCCEEDED, 0, "")
        if run.verdict is not None:
            if alive and run.kill_at is not None and now >= run.kill_at:
                for p in alive:
                    _signal(p.popen, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.popen.wait(timeout=1)
            if not any(p.popen.poll() is None for p in run.procs):
                return self._finish(run, *run.verdict)
        return ExecStatus(rid, ExecPhase.RUNNING, native_id=",".join(str(p.popen.pid) for p in run.procs),
                          started_at=run.started_at)

    def _terminate(self, run: _FakeRun, grace_s: float) -> None:
        run.kill_at = self.clock.monotonic() + grace_s
        for p in run.procs:
            if p.popen.poll() is None:
                _signal(p.popen, signal.SIGTERM)

    def _finish(self, run: _FakeRun, phase: ExecPhase, code: int | None, reason: str) -> ExecStatus:
        native = f"fake-{run.launch.request_id}" if run.script else ",".join(str(p.popen.pid) for p in run.procs)
        run.finished_at = self.clock.now()
        run.outcome = ExecStatus(run.launch.request_id, phase, code, reason, native, run.started_at, run.finished_at)
        return run.outcome

    def cancel(self, run: _FakeRun, grace_s: float) -> ExecStatus:
        st = self.status(run)
        if st.done:
            return st
        if run.verdict is None:
            run.verdict = (ExecPhase.CANCELLED, None, "cancelled at the platform's request")
            if run.script is not None:
                run.stop_at = self.clock.monotonic() + min(run.script.stop_s, grace_s)
            else:
                self._terminate(run, grace_s)
        return self.status(run)

    def read_log(self, run: _FakeRun, kind: str, replica: int) -> bytes:
        if run.script is not None:
            if replica != 0:
                return b""
            return run.script.stdout if kind == "stdout" else run.script.stderr
        try:
            return (self._dir / run.launch.request_id / f"{replica}.{kind}").read_bytes()
        except FileNotFoundError:
            return b""


def _signal(p: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(p.pid, sig)


class FakeExecutor:
    """One platform's client of a :class:`FakeCluster` (see the module doc)."""

    kind = "fake"

    def __init__(self, name: str = "fake", cluster: FakeCluster | None = None) -> None:
        self.name = name
        self.cluster = cluster or FakeCluster()
        self.calls: list[str] = []  # operation names, in order (a test can assert what was asked)

    def _down(self) -> ExecError | None:
        why = self.cluster.unreachable
        return None if why is None else ExecError(ExecErrorCode.UNREACHABLE, why)

    def capabilities(self) -> Capabilities:
        return Capabilities(name=self.name, gangs=True, devices=True, logs=True, energy_accounting=False,
                            unsupported=dict(self.cluster.unsupported))

    def submit(self, launch: Launch) -> ExecStatus | ExecError:
        self.calls.append("submit")
        down = self._down()
        if down:
            return down
        bad = _validate(launch) or (self.cluster.reject(launch) if self.cluster.reject else "")
        if bad:
            return ExecError(ExecErrorCode.REJECTED, bad)
        c = self.cluster
        with c.lock:
            run = c.runs.get(launch.request_id)
            if run is None:
                run = c.runs[launch.request_id] = c._start(launch)
                c.submits.append(launch.request_id)
            return c.status(run)

    def cancel(self, request_id: str, grace_s: float = 10.0) -> ExecStatus | ExecError:
        self.calls.append("cancel")
        if not (grace_s >= 0 and math.isfinite(grace_s)):
            return ExecError(ExecErrorCode.REJECTED, f"grace_s must be a finite number >= 0, got {grace_s!r}")
        down = self._down()
        if down:
            return down
        c = self.cluster
        with c.lock:
            c.cancels.append((request_id, grace_s))
            run = c.runs.get(request_id)
            if run is None:
                return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")
            return c.cancel(run, grace_s)

    def status(self, request_id: str) -> ExecStatus | ExecError:
        return self.observe([request_id])[request_id]

    def observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        self.calls.append("observe")
        down = self._down()
        if down:
            return {rid: down for rid in request_ids}
        c = self.cluster
        out: dict[str, ExecStatus | ExecError] = {}
        with c.lock:
            for rid in request_ids:
                run = c.runs.get(rid)
                out[rid] = c.status(run) if run else ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {rid}")
        return out

    def logs(self, request_id: str, stream: str = "stdout", offset: int = 0, limit: int = 1 << 20) -> LogChunk | ExecError:
        self.calls.append("logs")
        if offset < 0 or limit <= 0:
            return ExecError(ExecErrorCode.REJECTED, f"offset must be >= 0 and limit > 0 (got {offset}, {limit})")
        down = self._down()
        if down:
            return down
        c = self.cluster
        with c.lock:
            run = c.runs.get(request_id)
            if run is None:
                return ExecError(ExecErrorCode.NOT_FOUND, f"unknown request {request_id}")
            m = _STREAM.match(stream)
            if not m:
                return ExecError(ExecErrorCode.REJECTED, f"stream must be stdout, stderr, stdout:<i> or stderr:<i>; got {stream!r}")
            idx = int(m.group(2) or 0)
            if idx >= len(run.launch.replicas):
                return ExecError(ExecErrorCode.REJECTED, f"replica {idx} out of range")
            done = c.status(run).done
            data = c.read_log(run, m.group(1), idx)
        chunk = data[offset:offset + limit]
        end = offset + len(chunk)
        return LogChunk(chunk, end, done and end >= len(data))

    def list_active(self) -> Sequence[ExecStatus] | ExecError:
        self.calls.append("list_active")
        down = self._down()
        if down:
            return down
        c = self.cluster
        with c.lock:
            out = [c.status(r) for r in c.runs.values()]
        return [s for s in out if not s.done]

    def check(self) -> Mapping[str, object]:
        self.calls.append("check")
        why = self.cluster.unreachable
        return {"executor": self.name, "kind": self.kind, "reachable": why is None, **({"error": why} if why else {})}

    def close(self) -> None:
        return None  # the cluster (the engine) keeps running, as a real one does


def _validate(launch: Launch) -> str:
    if not launch.command.strip() or "\x00" in launch.command:
        return "command must be a non-empty string without NUL bytes"
    if not launch.replicas:
        return "a launch needs at least one replica"
    for key, value in launch.env.items():
        if not _ENV_NAME.match(key) or "\x00" in value:
            return f"environment variable {key!r} has an invalid name or value"
    return ""

"""The local executor's launcher: a process of its own that starts the job supervisors.

Starting a sandboxed replica costs milliseconds of work: its run dir (``mkdir``, ``chown``),
its cgroups and limits, the job's environment file, the supervisor's ``fork``/``exec``, the
pid file, and later the reaping and the cgroups' removal. Done on the caller's thread it
stalled the control loop (about a third of the loop went to ``fork_exec``); done on another
thread of the platform it would still stall it, because CPython 3.11 holds the GIL through
``vfork`` until the child's ``exec``, and a thread that makes many small system calls waits
for the GIL after each one while the loop computes. So ``submit`` only records the launch
(``mkdir`` + ``launch.json``, the durable intent) and hands a request to this process::

    platform (LocalExecutor)                 launcher (python -m ...local_launcher, root)
      submit: mkdir, launch.json, request      stdin: JSON requests, one a line, read in
        -> LauncherClient.send (O(1))            batches; per replica: run dir (tenant's
      writer thread: batched writes  ------>     uid, 0700), cgroups + limits, .args, the
      reader thread: events  <-------------      supervisor (fork/exec), .pid; it reaps
        -> executor state, slots, refresh        supervisors (SIGCHLD), reads and removes
                                                 their cgroups; stdout: JSON events

Requests (platform -> launcher): ``init`` (the cgroup hierarchies, once), ``spawn`` (one
launch, every replica), ``cancel`` (skip a launch not yet spawned) and ``stop`` (a clean
close: spawn what came before, then exit). Events (launcher ->
platform): ``spawned`` (pid, create time, spawn time), ``exit`` (the supervisor's wait
status, the cgroup's OOM and pids counters), ``failed`` (kind ``sandbox``: the launch could
not be confined and must not run; kind ``spawn``: the OS refused the process) and
``skipped`` (cancelled before its spawn). Every replica sent ends in exactly one of
``spawned``, ``failed`` or ``skipped``. A cgroup still busy when its supervisor is reaped
(cgroup v1 may keep an emptied one a moment) is retried here every 0.1 s; what is left when
the launcher stops goes at the next start's sweep.

Crash safety. The launcher holds a copy of ``executor.lock`` (its open file description),
spawns nothing once its stdin reaches EOF without a ``stop`` (the platform died) and then
exits.
A restarted platform waits for that lock, so it scans the run dirs only after the old
launcher has gone, when every supervisor it started has ``exec``'d (its pid file, its argv
and its records show it). A request the launcher never acted on is "accepted, never
launched": the restarted executor reports it lost and the caller requeues the job under a
new request id; a recorded request id is never started twice. If the launcher itself dies
while the platform runs, the executor treats its replicas as re-adopted ones and starts a
new launcher (``LocalExecutor._launcher_gone``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("yungu.executor.local")

Event = dict[str, Any]
OnEvents = Callable[[list[Event]], None]


class Spawner(Protocol):
    """What the local executor needs of its launcher (tests substitute slow or gated ones)."""

    def send(self, request: Mapping[str, Any]) -> None:
        """Queue one request; never blocks on the launcher."""
        ...

    def close(self) -> None:
        """Flush what is queued, stop the launcher and wait for it (its children keep running)."""
        ...


SpawnerFactory = Callable[[Mapping[str, Any], int, OnEvents, Callable[[], None]], Spawner]


class LauncherClient:
    """The platform's side: starts the launcher process, writes requests, reads events.

    ``on_events`` is called from the reader thread with each batch of events, in order;
    ``on_gone`` once when the launcher's stdout reaches EOF without ``close`` (the process
    has exited: every supervisor it started has exec'd)."""

    def __init__(self, init: Mapping[str, Any], lock_fd: int, on_events: OnEvents, on_gone: Callable[[], None]) -> None:
        self._init, self._lock_fd = dict(init), lock_fd
        self._on_events, self._on_gone = on_events, on_gone
        self._cv = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._closing = False
        self.proc = self._start()
        self._writer = threading.Thread(target=self._write_loop, name="yungu-launch-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="yungu-launch-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self._lock_fd)],
            executable=_interpreter(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(self._lock_fd,) if self._lock_fd >= 0 else (),
            cwd="/",
            start_new_session=True,  # a signal to the platform's process group does not hit it mid-spawn
            bufsize=0,
        )
        assert proc.stdin is not None
        proc.stdin.write(_line({"op": "init", **self._init}))
        return proc

    def send(self, request: Mapping[str, Any]) -> None:
        data = _line(request)
        with self._cv:
            self._queue.append(data)
            if len(self._queue) == 1:  # the writer takes all that is queued when it runs
                self._cv.notify()

    def _write_loop(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                batch = b"".join(self._queue)
                self._queue.clear()
                closing = self._closing
            if batch:
                try:
                    stdin.write(batch)  # one write for every request queued meanwhile
                except (BrokenPipeError, ValueError, OSError):
                    return  # the launcher is gone: the reader reports it
            if closing:
                with contextlib.suppress(OSError):
                    stdin.write(_line({"op": "stop"}))  # spawn what was sent, then exit
                    stdin.close()
                return

    def _read_loop(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        fd, tail = stdout.fileno(), b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            events = []
            for raw in lines:
                try:
                    events.append(json.loads(raw))
                except ValueError:
                    log.error("launcher sent an unreadable line", extra={"line": raw[:200]})
            if events:
                try:
                    self._on_events(events)
                except Exception:
                    log.error("local executor failed to apply launcher events", exc_info=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with self._cv:
            closing = self._closing
        if not closing:
            self._on_gone()

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._writer.join(timeout=timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=timeout)


def _interpreter() -> str:
    """This Python. ``/proc/self/exe`` when the platform's user cannot reach its path (a
    venv made by root, run by an unprivileged platform): the kernel opens the running binary
    directly, and argv[0] (``sys.executable``) still finds the venv."""
    return sys.executable if os.access(sys.executable, os.X_OK) else "/proc/self/exe"


def default_spawner(init: Mapping[str, Any], lock_fd: int, on_events: OnEvents, on_gone: Callable[[], None]) -> Spawner:
    return LauncherClient(init, lock_fd, on_events, on_gone)


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# ---- the launcher process ------------------------------------------------------------


class _Child:
    __slots__ = ("index", "leaf", "popen", "rid")

    def __init__(self, rid: str, index: int, leaf: str | None, popen: subprocess.Popen[bytes] | None) -> None:
        self.rid, self.index, self.leaf, self.popen = rid, index, leaf, popen


class Launcher:
    """The loop of the launcher process: requests in on fd 0, events out on fd 1."""

    def __init__(self, wakeup_fd: int) -> None:
        from yungu.adapters.executors.sandbox_cgroups import Cgroups

        self._wakeup = wakeup_fd
        self._cgroups: Cgroups | None = None
        self._cgroups_class = Cgroups
        self._children: dict[int, _Child] = {}
        self._pending: deque[dict[str, Any]] = deque()
        self._cancelled: set[str] = set()
        self._out: list[bytes] = []
        self._tail = b""
        self._eof = False  # stdin is closed
        self._stop = False  # ... after a stop request: finish what came before it
        self._leftover: set[str] = set()  # cgroups still busy when their supervisor was reaped

    def run(self) -> None:
        os.set_blocking(0, False)
        sel = selectors.DefaultSelector()
        sel.register(0, selectors.EVENT_READ)
        sel.register(self._wakeup, selectors.EVENT_READ)
        while not self._eof or self._stop:
            timeout = 0 if self._eof else 0.1 if self._leftover else None
            for key, _ in sel.select(timeout=timeout):
                if key.fd == self._wakeup:
                    with contextlib.suppress(OSError):
                        os.read(self._wakeup, 4096)
            self._reap()
            self._remove_leftovers()
            self._read()
            while self._pending and (self._stop or not self._eof):
                msg = self._pending.popleft()
                if msg.get("op") == "stop":  # a clean close: everything before it is done
                    self._flush()
                    deadline = time.monotonic() + 1.0
                    while self._leftover and time.monotonic() < deadline:
                        time.sleep(0.02)
                        self._remove_leftovers()
                    return
                self._handle(msg)
                self._reap()
                self._read()  # notice EOF and cancels between spawns
                if len(self._out) >= 64:
                    self._flush()
            self._flush()

    def _read(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(0, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True  # the platform closed us or died: spawn nothing more
                return
            lines = (self._tail + chunk).split(b"\n")
            self._tail = lines.pop()
            for raw in lines:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    print(f"yungu launcher: unreadable request {raw[:200]!r}", file=sys.stderr)
                    continue
                op = msg.get("op")
                if op == "cancel":
                    self._cancelled.add(msg["rid"])
                elif op == "init":
                    self._cgroups = self._cgroups_class.of(msg["key"], msg["cgroups"]) if msg.get("cgroups") else None
                else:  # spawn, or stop: after the requests before it
                    self._stop = self._stop or op == "stop"
                    self._pending.append(msg)

    def _emit(self, event: Mapping[str, Any]) -> None:
        self._out.append(_line(event))

    def _flush(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        view = memoryview(data)
        while view:
            try:
                n = os.write(1, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except BrokenPipeError:
                self._eof = True
                return
            view = view[n:]

    def _handle(self, msg: dict[str, Any]) -> None:
        from yungu.adapters.executors.sandbox import SandboxError, make_run_dir

        rid = msg["rid"]
        replicas: list[dict[str, Any]] = msg["replicas"]
        if rid in self._cancelled:
            self._cancelled.discard(rid)
            self._emit({"ev": "skipped", "rid": rid, "replicas": [r["i"] for r in replicas]})
            return
        if msg.get("work"):
            try:
                make_run_dir(Path(msg["work"]), msg["uid"], privileged=os.geteuid() == 0)
            except SandboxError as exc:
                self._emit({"ev": "failed", "rid": rid, "kind": "sandbox", "msg": str(exc),
                            "unspawned": [r["i"] for r in replicas]})
                return
        for n, rep in enumerate(replicas):
            if rid in self._cancelled:
                self._cancelled.discard(rid)
                self._emit({"ev": "skipped", "rid": rid, "replicas": [r["i"] for r in replicas[n:]]})
                return
            kind, problem = self._spawn(rid, rep)
            if problem:
                self._emit({"ev": "failed", "rid": rid, "kind": kind, "msg": problem,
                            "unspawned": [r["i"] for r in replicas[n:]]})
                return

    def _spawn(self, rid: str, rep: Mapping[str, Any]) -> tuple[str, str]:
        """Start one replica's supervisor; ("", "") or (kind, problem)."""
        from yungu.adapters.executors.local_runs import SHIM, SHIM_ARGV0, write_private
        from yungu.adapters.executors.sandbox import SANDBOX_SHIM, SUPERVISOR_ENV
        from yungu.adapters.executors.sandbox_cgroups import Limits

        prefix, index = rep["prefix"], rep["i"]
        leaf: str | None = None
        popen: subprocess.Popen[bytes] | None = None
        try:
            if rep.get("kind") == "plain":  # its own cwd and environment: subprocess does those
                argv = ["/bin/sh", "-c", SHIM, SHIM_ARGV0, rep["command"], prefix, *rep["vars"]]
                at = datetime.now(UTC).isoformat()
                popen = subprocess.Popen(
                    argv, cwd=rep["cwd"], env=rep.get("env"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                )
                pid = popen.pid
            else:
                procs = ""
                cg = rep.get("cgroup")
                if cg and self._cgroups is not None and self._cgroups.hierarchies:
                    try:
                        made = self._cgroups.create(cg["leaf"], Limits(cg["cpus"], cg["memory"], cg["pids"]))
                    except OSError as exc:
                        return "sandbox", f"cannot set the cgroup limits of {cg['leaf']}: {exc}"
                    leaf = cg["leaf"]
                    procs = " ".join(str(p) for p in made)
                write_private(Path(f"{prefix}.args"), b"".join(x.encode() + b"\0" for x in rep["args"]))
                argv = ["/bin/sh", "-c", SANDBOX_SHIM, SHIM_ARGV0, prefix, procs, *rep["tail"]]
                at = datetime.now(UTC).isoformat()
                # posix_spawn (vfork + exec in libc) from our cwd "/": every descriptor of ours
                # is close-on-exec (Python's default), 0-2 become /dev/null.
                pid = os.posix_spawn("/bin/sh", argv, SUPERVISOR_ENV, file_actions=_DEVNULL_012, setsid=True)
        except OSError as exc:  # EAGAIN, ENOMEM, a vanished run dir...: never started
            if leaf is not None and self._cgroups is not None:
                self._cgroups.remove(leaf)
            return "spawn", f"could not start processes: {exc}"
        self._children[pid] = _Child(rid, index, leaf, popen)
        created = _create_time(pid)
        with contextlib.suppress(OSError):  # a crash before this is covered by the argv scan
            _write_once(f"{prefix}.pid", {"pid": pid, "create_time": created, "started_at": at})
        self._emit({"ev": "spawned", "rid": rid, "i": index, "pid": pid, "ct": created, "at": at})
        return "", ""

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self._children.pop(pid, None)
            if child is None:
                continue
            rc = os.waitstatus_to_exitcode(status)
            if child.popen is not None:
                child.popen.returncode = rc
            event: dict[str, Any] = {"ev": "exit", "rid": child.rid, "i": child.index, "pid": pid, "rc": rc}
            if child.leaf is not None and self._cgroups is not None:
                ev = self._cgroups.events(child.leaf)  # read before removal: the kernel's counters
                if not self._cgroups.remove(child.leaf):
                    self._leftover.add(child.leaf)  # v1 may keep an emptied cgroup busy a moment
                event.update(oom=ev.oom_kills, pids_denied=ev.pids_denied)
            self._emit(event)

    def _remove_leftovers(self) -> None:
        if self._leftover and self._cgroups is not None:
            self._leftover = {leaf for leaf in self._leftover if not self._cgroups.remove(leaf)}


_DEVNULL_012 = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
_BOOT_TIME: float | None = None


def _create_time(pid: int) -> float | None:
    """A process's start time as psutil reports it (boot time + start ticks), which the
    executor's ``probe`` compares: from ``/proc/<pid>/stat`` directly, without psutil's
    per-process setup."""
    global _BOOT_TIME
    try:
        if _BOOT_TIME is None:
            with open("/proc/stat", "rb") as fh:
                _BOOT_TIME = float(next(line for line in fh if line.startswith(b"btime")).split()[1])
        with open(f"/proc/{pid}/stat", "rb") as fh:
            ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        return _BOOT_TIME + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _write_once(path: str, payload: Mapping[str, Any]) -> None:
    """A new small file in one write(2): a reader sees it whole or unreadable (the executor
    then falls back to the argv scan), never half of an old one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps(payload).encode())
    finally:
        os.close(fd)


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:  # the data dir's lock, held (never used) until we exit
        with contextlib.suppress(OSError, ValueError):
            os.set_inheritable(int(argv[1]), False)
    os.chdir("/")
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the platform decides when we stop (EOF)
    Launcher(r).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

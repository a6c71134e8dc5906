"""Launch off the caller's thread (issue 15): ``submit`` records, the launcher process starts.

What the platform relies on, shown with real processes and a gate the test controls
(``gated_spawner.Gate``: the real launcher, holding spawn requests until the test opens it),
so ordering is asserted, never speed:

- ``submit`` and ``observe`` answer while the launcher has not started the launch, and a
  control-loop round completes meanwhile (the loop never waits for a spawn);
- ``observe`` says pending until the supervisor's start record exists;
- ``kill -9`` of the platform between accepting and launching: the restart answers every id,
  starts nothing twice, and what was never launched never runs;
- the launcher process itself dying: running jobs are re-adopted and finish, a request it
  never acted on is lost (and never runs), later launches go through a new launcher;
- a cancel that reaches the launcher before the spawn: the command never runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.executors.contract import make_launch, ok, wait_done, wait_file, wait_until
from tests.executors.gated_spawner import Gate
from tests.executors.sandbox_env import BINDS, shared_dir
from yungu.adapters.executors.local import LocalExecutor
from yungu.adapters.executors.local_launcher import LauncherClient, OnEvents
from yungu.ports.executor import ExecPhase, ExecStatus

FAST = {"poll_interval_s": 0.02, "gang_kill_grace_s": 1.0, "binds": BINDS}


@pytest.fixture
def out() -> Path:
    """The file jobs append their names to: writable by every tenant's uid."""
    path = shared_dir("launch") / "ran"
    path.touch()
    path.chmod(0o666)
    return path


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("launch") / "data"


@pytest.fixture
def closing() -> Iterator[list[LocalExecutor]]:
    made: list[LocalExecutor] = []
    yield made
    for ex in made:
        ex.close()


def _in_thread(fn: Callable[[], Any], timeout: float = 30) -> Any:
    """Run ``fn`` on another thread; fail (instead of hanging) if it never returns."""
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"{fn} did not return: it waited for the launcher"
    return box[0]


def _ran(out: Path) -> list[str]:
    return out.read_text().split()


def test_submit_and_observe_do_not_wait_for_a_slow_launcher(
    data_dir: Path, out: Path, closing: list[LocalExecutor]
) -> None:
    gate = Gate()  # closed: the launcher gets no spawn request until the test opens it
    ex = LocalExecutor("launch-test", FAST, data_dir, spawner=gate.factory())
    closing.append(ex)
    la = make_launch(f"echo $YUNGU_REQUEST_ID >> {out}")
    first = ok(_in_thread(lambda: ex.submit(la)))
    assert first.phase is ExecPhase.PENDING and "launching" in first.reason
    assert gate.spawns_seen == [la.request_id] and len(gate.held) == 1, "handed over, not started"
    seen = _in_thread(lambda: ex.observe([la.request_id]))[la.request_id]
    assert (seen.phase, seen.native_id) == (ExecPhase.PENDING, "")
    assert ok(_in_thread(lambda: ex.submit(la))).phase is ExecPhase.PENDING  # a retry: same answer
    run = ex.runs_dir / la.request_id
    assert sorted(p.name for p in run.iterdir()) == ["launch.json"], "recorded, nothing spawned"
    gate.open()
    done = wait_done(ex, la.request_id, 20)
    assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
    assert done.started_at is not None and done.finished_at is not None
    assert _ran(out) == [la.request_id]


def test_a_control_loop_round_completes_while_the_launcher_is_held(data_dir: Path, tmp_path: Path) -> None:
    """The real loop with the embedded default world: rounds place and dispatch jobs while
    no launch can start; once the launcher may, the jobs run and succeed."""
    from yungu.app.container import build
    from yungu.domain.job import JobSpec, JobState, Resources

    c = build(tmp_path / "platform", start_loop=False)
    gate = Gate()
    try:
        name = next(iter(c.executors))
        c.executors[name].close()
        settings = {k: v for k, v in c.config.executors[name].items() if k != "type"}
        held = LocalExecutor(name, {**settings, "poll_interval_s": 0.02}, c.data_dir / "executors" / name,
                             spawner=gate.factory())
        c.executors[name] = held  # the reconciler's own mapping (in place of the standby placeholder)
        c.reconciler.health.probe([name])  # as the leader does once it has opened its executors
        c.reconciler.may_act = lambda: True  # driven by hand, the only process: no lease to hold
        tenant = c.store.create_tenant(c.ids.new(), "launch-loop", c.clock.now())
        spec = JobSpec(name="j", command="true", resources=Resources(cpus=1, memory_gb=1))
        jobs = [c.store.submit(tenant.id, spec, c.clock.now(), c.ids.new())[0] for _ in range(3)]
        for _ in range(10):
            _in_thread(c.reconciler.run_once)  # returns though every spawn is held
            states = {c.store.get(j.id).state for j in jobs}
            if states == {JobState.DISPATCHED}:
                break
        assert states == {JobState.DISPATCHED}, states
        assert len(gate.held) == 3 and gate.spawns_seen, "dispatched = handed to the launcher, not started"
        _in_thread(c.reconciler.run_once)
        assert {c.store.get(j.id).state for j in jobs} == {JobState.DISPATCHED}  # pending: not running
        gate.open()
        deadline = time.monotonic() + 30
        while {c.store.get(j.id).state for j in jobs} != {JobState.SUCCEEDED} and time.monotonic() < deadline:
            c.reconciler.run_once()
            time.sleep(0.02)
        assert {c.store.get(j.id).state for j in jobs} == {JobState.SUCCEEDED}
        assert all(c.store.get(j.id).started_at is not None for j in jobs)
    finally:
        gate.open()
        c.close()


class _FakeLauncher:
    """Stands in for the launcher process to show the phase rule alone: it reports a spawn
    of a real process the test controls, which writes no start record by itself."""

    def __init__(self, on_events: OnEvents) -> None:
        self.on_events, self.requests = on_events, []  # type: ignore[var-annotated]
        self.children: list[subprocess.Popen[bytes]] = []

    def send(self, request: Mapping[str, Any]) -> None:
        self.requests.append(request)

    def spawn(self, index: int = 0) -> subprocess.Popen[bytes]:
        req = self.requests[-1]
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.children.append(proc)
        ct = psutil.Process(proc.pid).create_time()
        self.on_events([{"ev": "spawned", "rid": req["rid"], "i": index, "pid": proc.pid, "ct": ct,
                         "at": "2026-01-01T00:00:00+00:00"}])
        return proc

    def close(self) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_observe_is_pending_until_the_supervisors_start_record_exists(data_dir: Path) -> None:
    fakes: list[_FakeLauncher] = []

    def factory(init: Mapping[str, Any], lock_fd: int, on_events: OnEvents, on_gone: Callable[[], None]) -> Any:
        fakes.append(_FakeLauncher(on_events))
        return fakes[-1]

    ex = LocalExecutor("launch-test", {**FAST, "sandbox": False}, data_dir, spawner=factory)
    try:
        la = make_launch("true", request_id="s.1")
        ok(ex.submit(la))
        proc = fakes[0].spawn()
        st = ok(ex.status("s.1"))
        assert (st.phase, st.native_id) == (ExecPhase.PENDING, str(proc.pid)), "a process, no start record yet"
        assert "launching" in st.reason
        (ex.runs_dir / "s.1" / "replica-0.start").touch()  # what the supervisor writes first
        st = ok(ex.status("s.1"))
        assert st.phase is ExecPhase.RUNNING and st.started_at is not None
        (ex.runs_dir / "s.1" / "replica-0.exit").write_text("0\n")
        proc.kill()
        proc.wait()
        fakes[0].on_events([{"ev": "exit", "rid": "s.1", "i": 0, "pid": proc.pid, "rc": 0}])
        assert ok(ex.status("s.1")).phase is ExecPhase.SUCCEEDED
    finally:
        ex.close()


def test_cancel_before_the_launcher_starts_it_never_runs(
    data_dir: Path, out: Path, closing: list[LocalExecutor]
) -> None:
    gate = Gate()
    ex = LocalExecutor("launch-test", FAST, data_dir, spawner=gate.factory())
    closing.append(ex)
    la = make_launch(f"echo ran >> {out}")
    ok(ex.submit(la))
    assert ok(ex.cancel(la.request_id, grace_s=0)).phase is ExecPhase.CANCELLED
    gate.open()  # the spawn request reaches the launcher after the cancel: it is skipped
    assert wait_done(ex, la.request_id, 10).phase is ExecPhase.CANCELLED
    marker = make_launch(f"echo marker >> {out}")  # a later launch: proof the launcher went on
    ok(ex.submit(marker))
    assert wait_done(ex, marker.request_id, 20).phase is ExecPhase.SUCCEEDED
    assert _ran(out) == ["marker"]
    assert not (ex.runs_dir / la.request_id / "replica-0.pid").exists()


OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.executors.gated_spawner import Gate
    from yungu.adapters.executors.local import LocalExecutor
    from yungu.ports.executor import Launch, ReplicaLaunch
    data, out, n, allow, binds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    gate = Gate(allow=allow)  # the first `allow` launches start, the rest are accepted and held
    ex = LocalExecutor("launch-test", {"poll_interval_s": 0.02, "binds": [{"src": binds, "dst": binds, "mode": "rw"}]},
                       data, spawner=gate.factory())
    for i in range(n):
        st = ex.submit(Launch(f"k{i}.1", f"k{i}", "tenant-k", "p", f"echo k{i}.1 >> {out}", (ReplicaLaunch(0),)))
        assert st.phase.value == "pending", st
    print("accepted", len(gate.held), flush=True)
    time.sleep(600)
    """
)


def test_kill_9_between_accepting_and_launching_runs_nothing_twice(data_dir: Path, out: Path) -> None:
    n, allow = 12, 4
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(data_dir), str(out), str(n), str(allow),
                              str(out.parent.parent)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line.split() == ["accepted", str(n - allow)], line
        for i in range(allow):  # the allowed ones have run: their supervisors wrote their exit
            wait_file(data_dir / "runs" / f"k{i}.1" / "replica-0.exit", 20)
        owner.kill()  # kill -9 of the platform: 8 launches accepted, never started
        owner.wait(timeout=10)
    finally:
        if owner.poll() is None:
            owner.kill()
    ex = LocalExecutor("launch-test", FAST, data_dir)  # waits for the old launcher to let go of the lock
    try:
        ids = [f"k{i}.1" for i in range(n)]
        final = {rid: wait_done(ex, rid, 20) for rid in ids}
        assert [final[r].phase for r in ids] == [ExecPhase.SUCCEEDED] * allow + [ExecPhase.LOST] * (n - allow)
        for rid in ids:  # the restarted platform submits what it believes in flight: nothing starts
            again = ok(ex.submit(make_launch(f"echo {rid} >> {out}", request_id=rid)))
            assert again.phase is final[rid].phase
        marker = make_launch(f"echo marker >> {out}")
        ok(ex.submit(marker))
        assert wait_done(ex, marker.request_id, 20).phase is ExecPhase.SUCCEEDED
    finally:
        ex.close()
    assert sorted(_ran(out)) == sorted([f"k{i}.1" for i in range(allow)] + ["marker"]), "once each, never the lost"


def _unread(pid: int) -> int:
    """Bytes waiting in a process's stdin pipe (requests it has not read yet)."""
    import array
    import termios

    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return buf[0]
    finally:
        os.close(fd)


def test_the_launcher_dies_and_the_executor_carries_on(
    data_dir: Path, out: Path, closing: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("launch-test", FAST, data_dir)
    closing.append(ex)
    first = ex._launcher
    assert isinstance(first, LauncherClient)
    a = make_launch(f"sleep 1; echo a >> {out}")
    ok(ex.submit(a))
    wait_until(ex, a.request_id, lambda s: s.phase is ExecPhase.RUNNING, 20, "running")
    os.kill(first.proc.pid, signal.SIGSTOP)  # requests now wait in its pipe
    b = make_launch(f"echo b >> {out}")
    ok(ex.submit(b))
    deadline = time.monotonic() + 10
    while _unread(first.proc.pid) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _unread(first.proc.pid) > 0, "b's request is in the launcher's pipe, unread"
    os.kill(first.proc.pid, signal.SIGKILL)  # dies with b unread
    done_a = wait_done(ex, a.request_id, 20)
    assert (done_a.phase, done_a.exit_code) == (ExecPhase.SUCCEEDED, 0), "re-adopted, ran to its end"
    done_b = wait_done(ex, b.request_id, 20)
    assert done_b.phase is ExecPhase.LOST, "never started: the caller requeues it under a new id"
    assert ex._launcher is not first
    c = make_launch(f"echo c >> {out}")
    ok(ex.submit(c))
    assert wait_done(ex, c.request_id, 20).phase is ExecPhase.SUCCEEDED
    time.sleep(0.2)
    assert sorted(_ran(out)) == ["a", "c"]


def test_close_starts_what_was_accepted_and_hands_the_lock_over(data_dir: Path, out: Path) -> None:
    """A clean close sends what is queued; the launcher starts it, exits, and only then
    is the data dir free for the next instance, which finds the job and its outcome."""
    ex = LocalExecutor("launch-test", FAST, data_dir)
    la = make_launch(f"echo closed >> {out}")
    ok(ex.submit(la))
    ex.close()
    lock = os.open(data_dir / "executor.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the launcher has gone
        fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)
    ex2 = LocalExecutor("launch-test", FAST, data_dir)
    try:
        done: ExecStatus = wait_done(ex2, la.request_id, 20)
        assert done.phase is ExecPhase.SUCCEEDED
    finally:
        ex2.close()
    assert _ran(out) == ["closed"]
    assert json.loads((data_dir / "runs" / la.request_id / "replica-0.pid").read_text())["pid"] > 0


def _status_until_done(ex: LocalExecutor, rid: str) -> ExecStatus:
    """Poll with ``status`` (never ``observe``) until the launch has its outcome."""
    deadline = time.monotonic() + 20
    while not (st := ok(ex.status(rid))).done:
        assert time.monotonic() < deadline, st
        time.sleep(0.02)
    return st


def test_observe_never_skips_the_running_phase_of_a_launch_that_ran(data_dir: Path, out: Path) -> None:
    """A launch that starts and ends between two observations (here: before the first) is
    reported running once, with its real start, then its outcome: a caller that records the
    start when it sees running (the control loop) never misses one. ``status`` tells the
    outcome as soon as it is known. Also after a restart, for a run that ended while nobody watched."""
    ex = LocalExecutor("launch-test", FAST, data_dir)
    try:
        la = make_launch(f"echo once >> {out}")
        ok(ex.submit(la))
        _status_until_done(ex, la.request_id)  # ended before anyone observed it
        first = ok(ex.observe([la.request_id])[la.request_id])
        assert first.phase is ExecPhase.RUNNING and first.started_at is not None
        views = [ok(ex.observe([la.request_id])[la.request_id]) for _ in range(3)]
        assert [v.phase for v in views] == [ExecPhase.SUCCEEDED] * 3, "once running, then the outcome for good"
        assert views[0].started_at == first.started_at
        gone = make_launch("echo unwatched")
        ok(ex.submit(gone))
        _status_until_done(ex, gone.request_id)
    finally:
        ex.close()
    back = LocalExecutor("launch-test", FAST, data_dir)
    try:
        first = ok(back.observe([gone.request_id])[gone.request_id])
        assert first.phase is ExecPhase.RUNNING and first.started_at is not None
        assert ok(back.observe([gone.request_id])[gone.request_id]).phase is ExecPhase.SUCCEEDED
    finally:
        back.close()
    assert _ran(out) == ["once"]

"""The local executor: the shared contract, plus what only real local processes can show.

Everything here runs real ``/bin/sh`` processes in a temp data dir; nothing is mocked. The
executor runs with its default sandbox (bubblewrap, a tenant uid, cgroups); ``tmp_path``
is overridden with a directory bound into the sandbox (``tests/executors/sandbox_env.py``),
so the contract's commands can leave files the test reads. Cases about the plain shim
(``sandbox = false``) say so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.executors.contract import (
    ExecutorContract,
    MakeExecutor,
    make_launch,
    ok,
    read_all,
    wait_done,
    wait_file,
    wait_until,
)
from tests.executors.sandbox_env import BINDS, shared_dir
from yungu.adapters.executors.base import BaseExecutor, LatencyHistogram
from yungu.adapters.executors.local import LocalExecutor, LocalSettings
from yungu.adapters.executors.local_runs import ReplicaState as _R
from yungu.adapters.executors.local_runs import decide, shim_index
from yungu.adapters.executors.registry import ExecutorRegistry, build_executor, default_registry
from yungu.domain.errors import Conflict, InvalidInput, Unavailable
from yungu.ports.executor import (
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Executor,
    Launch,
    ReplicaLaunch,
)

FAST = {"poll_interval_s": 0.02, "gang_kill_grace_s": 1.0, "binds": BINDS}
PLAIN = {"poll_interval_s": 0.02, "gang_kill_grace_s": 1.0, "sandbox": False}


@pytest.fixture
def tmp_path() -> Path:
    """Overrides pytest's: a directory the sandboxed jobs can write too."""
    return shared_dir()


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local") / "data"


@pytest.fixture
def executors(data_dir: Path) -> Iterator[list[LocalExecutor]]:
    made: list[LocalExecutor] = []
    yield made
    for ex in made:
        ex.close()
    _kill_leftovers(data_dir)


@pytest.fixture
def make_executor(data_dir: Path, executors: list[LocalExecutor]) -> MakeExecutor:
    """A new instance on the same data dir; the previous one is closed first (a restart)."""

    def make() -> Executor:
        for ex in executors:
            ex.close()
        ex = LocalExecutor("local-test", FAST, data_dir)
        executors.append(ex)
        return ex

    return make


@pytest.fixture
def engine_timeout() -> float:
    return 10.0


def _kill_leftovers(data_dir: Path) -> None:
    """Tests start real process sessions; never leave one behind (a sandboxed replica dies
    with its supervisor's group: bwrap runs with --die-with-parent)."""
    for prefix, (pid, _) in shim_index().items():
        if prefix.startswith(f"{data_dir}/"):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    for pidfile in data_dir.glob("runs/*/replica-*.pid"):
        info = json.loads(pidfile.read_text())
        try:
            if abs(psutil.Process(info["pid"]).create_time() - info["create_time"]) < 0.05:
                os.killpg(info["pid"], signal.SIGKILL)
        except (psutil.Error, OSError):
            pass


class TestLocalContract(ExecutorContract):
    """The shared contract, run against real local processes."""


def spawned(ex: Executor, rid: str, replicas: int = 1) -> ExecStatus:
    """The status once every replica's supervisor exists (``submit`` returns before: the
    launcher starts them)."""
    return wait_until(ex, rid, lambda s: len([p for p in s.native_id.split(",") if p]) == replicas, 10,
                      "every supervisor spawned")


# ---- local-only behaviour ---------------------------------------------------------------


def test_platform_kill_9_then_new_instance_readopts_and_sees_success(data_dir: Path, tmp_path: Path) -> None:
    """The owner of the executor dies by SIGKILL while a job runs; nothing is lost."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from yungu.adapters.executors.local import LocalExecutor
        from yungu.ports.executor import Launch, ReplicaLaunch
        ex = LocalExecutor("local-test", {{"poll_interval_s": 0.02}}, Path({str(data_dir)!r}))
        ex.submit(Launch("crash-job.1", "crash-job", "t", "p", "sleep 2; echo done", (ReplicaLaunch(0),)))
        while (st := ex.status("crash-job.1")).phase.value == "pending":
            time.sleep(0.01)
        print(st.phase.value, st.native_id, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        assert line.startswith("running"), line
        job_pid = int(line.split()[1])
        time.sleep(0.2)  # let the owner's monitor write the pid file
        owner.kill()  # kill -9 of the platform
        owner.wait(timeout=5)
        assert psutil.pid_exists(job_pid), "the job must survive its platform"
        assert os.getsid(job_pid) == job_pid, "each replica runs in its own session"

        ex = LocalExecutor("local-test", FAST, data_dir)
        try:
            active = ok_list(ex.list_active())
            assert [s.request_id for s in active] == ["crash-job.1"]
            assert active[0].phase is ExecPhase.RUNNING
            assert active[0].native_id == str(job_pid)
            done = wait_done(ex, "crash-job.1", 10)
            assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
            assert read_all(ex, "crash-job.1") == b"done\n"
            # A retry of the same request after the restart is answered, never re-run.
            assert (
                ok(ex.submit(make_launch("echo again", request_id="crash-job.1"))).phase
                is ExecPhase.SUCCEEDED
            )
        finally:
            ex.close()
    finally:
        if owner.poll() is None:
            owner.kill()
        _kill_leftovers(data_dir)


def ok_list(result: object) -> list:  # type: ignore[type-arg]
    assert not isinstance(result, ExecError), result
    return list(result)  # type: ignore[call-overload]


def test_launch_recorded_but_never_started_is_lost_and_never_runs(data_dir: Path, tmp_path: Path) -> None:
    """Platform died between mkdir+manifest and the spawn: deterministically lost."""
    marker = tmp_path / "ran"
    run = data_dir / "runs" / "half.1"
    run.mkdir(parents=True)
    la = make_launch(f"touch {marker}", request_id="half.1")
    (run / "launch.json").write_text(
        json.dumps({"request_id": "half.1", "replicas": [{"node": 0, "devices": []}]})
    )
    ex = LocalExecutor("local-test", FAST, data_dir)
    try:
        st = ok(ex.status("half.1"))
        assert st.phase is ExecPhase.LOST
        assert "without an exit code" in st.reason
        again = ok(ex.submit(la))
        assert again.phase is ExecPhase.LOST, "a recorded launch is never started a second time"
        time.sleep(0.3)
        assert not marker.exists()
        assert ok_list(ex.list_active()) == []
    finally:
        ex.close()
    # The verdict is durable: a later instance says the same.
    ex2 = LocalExecutor("local-test", FAST, data_dir)
    try:
        assert ok(ex2.status("half.1")).phase is ExecPhase.LOST
    finally:
        ex2.close()


def test_run_dir_without_manifest_is_lost(data_dir: Path) -> None:
    (data_dir / "runs" / "bare.1").mkdir(parents=True)
    ex = LocalExecutor("local-test", FAST, data_dir)
    try:
        st = ok(ex.status("bare.1"))
        assert st.phase is ExecPhase.LOST and "manifest" in st.reason
    finally:
        ex.close()


def test_max_processes_queues_fifo_and_never_exceeds_the_cap(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", {**FAST, "max_processes": 2}, data_dir)
    executors.append(ex)
    log = tmp_path / "log"
    launches = [make_launch(f"echo start-{i} >> {log}; sleep 0.4; echo end-{i} >> {log}") for i in range(5)]
    first = [ok(ex.submit(la)) for la in launches]
    assert [s.phase for s in first] == [ExecPhase.PENDING] * 5  # submit records; the launcher starts
    assert ["launching" in s.reason for s in first] == [True] * 2 + [False] * 3
    assert all("max_processes" in s.reason for s in first[2:])
    peak = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        phases = [ok(s).phase for s in ex.observe([la.request_id for la in launches]).values()]
        peak = max(peak, phases.count(ExecPhase.RUNNING))
        if all(p is ExecPhase.SUCCEEDED for p in phases):
            break
        time.sleep(0.02)
    assert peak <= 2
    lines = log.read_text().split()
    assert len(lines) == 10
    # FIFO: launches are spawned in submission order (the spawn times in the pid files; the
    # supervisors' own start records of two launches spawned in the same pass may be a few
    # ms the other way round); at most two are between start and end.
    spawned = [json.loads((data_dir / "runs" / la.request_id / "replica-0.pid").read_text())["started_at"]
               for la in launches]
    assert spawned == sorted(spawned)
    started = [ok(ex.status(la.request_id)).started_at for la in launches]
    assert all(t is not None for t in started)
    assert started[2] >= max(started[:2])  # type: ignore[operator]
    running = 0
    for x in lines:
        running += 1 if x.startswith("start") else -1
        assert running <= 2


def test_cancel_of_a_queued_launch_never_starts_it(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", {**FAST, "max_processes": 1}, data_dir)
    executors.append(ex)
    blocker = make_launch("sleep 0.5")
    queued = make_launch(f"touch {tmp_path}/ran")
    ok(ex.submit(blocker))
    assert ok(ex.submit(queued)).phase is ExecPhase.PENDING
    assert ok(ex.cancel(queued.request_id)).phase is ExecPhase.CANCELLED
    wait_done(ex, blocker.request_id, 10)
    time.sleep(0.2)
    assert not (tmp_path / "ran").exists()


def test_cancel_escalates_to_sigkill_for_a_process_that_ignores_sigterm(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    la = make_launch(f"trap '' TERM; touch {tmp_path}/up; while true; do sleep 0.05; done")
    ok(ex.submit(la))
    shim_pid = int(spawned(ex, la.request_id).native_id)
    wait_file(tmp_path / "up", 5)
    members = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == shim_pid]
    assert len(members) >= 2
    t0 = time.monotonic()
    assert ok(ex.cancel(la.request_id, grace_s=0.6)).phase is ExecPhase.CANCELLED
    time.sleep(0.3)
    assert _group_alive(shim_pid), "SIGTERM is ignored: the group lives until the grace ends"
    while _group_alive(shim_pid) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert not _group_alive(shim_pid)
    assert 0.55 <= elapsed < 3, elapsed
    done = wait_done(ex, la.request_id, 5)
    assert done.phase is ExecPhase.CANCELLED and done.finished_at is not None
    # The decision survives a restart.
    ex.close()
    ex2 = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex2)
    assert ok(ex2.status(la.request_id)).phase is ExecPhase.CANCELLED


def test_gang_failure_terminates_the_siblings(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    la = make_launch(
        f'echo $$ > {tmp_path}/pid-$YUNGU_REPLICA; if [ "$YUNGU_REPLICA" = 1 ]; then sleep 0.3; exit 5; fi; '
        "exec sleep 60",
        replicas=3,
    )
    ok(ex.submit(la))
    supervisors = [int(p) for p in spawned(ex, la.request_id, replicas=3).native_id.split(",")]
    wait_file(tmp_path / "pid-0", 5)
    sibling = _job_processes(supervisors[0])  # host pids: $$ inside is the namespace's
    assert sibling
    done = wait_done(ex, la.request_id, 10)
    assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 5)
    assert "replica 1" in done.reason
    deadline = time.monotonic() + 3
    while any(_running(p) for p in sibling) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_running(p) for p in sibling), "sibling replicas must be terminated"


def test_environment_devices_and_per_replica_logs(data_dir: Path, executors: list[LocalExecutor]) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    la = Launch(
        request_id="env.1",
        job_id="env",
        tenant_id="t",
        pool_id="gpu-pool",
        command='echo "$YUNGU_DEVICES|$YUNGU_NODE|${CUDA_VISIBLE_DEVICES-unset}|$EXTRA|$(pwd)"; echo err-$YUNGU_REPLICA >&2',
        replicas=(ReplicaLaunch(node=0, devices=(0, 1)), ReplicaLaunch(node=3, devices=(2, 3))),
        accelerators_per_replica=2,
        env={"EXTRA": "x y 'z'", "YUNGU_REPLICA": "spoofed"},
    )
    ok(ex.submit(la))
    assert wait_done(ex, "env.1", 10).phase is ExecPhase.SUCCEEDED
    run = "/job"  # the sandbox's view of the run directory
    assert read_all(ex, "env.1").decode().strip() == f"0,1|0|unset|x y 'z'|{run}"
    assert read_all(ex, "env.1", "stdout:1").decode().strip() == f"2,3|3|unset|x y 'z'|{run}"
    assert read_all(ex, "env.1", "stderr:1") == b"err-1\n", "platform variables win over the launch env"
    out_of_range = ex.logs("env.1", "stdout:2")
    assert isinstance(out_of_range, ExecError) and out_of_range.code is ExecErrorCode.REJECTED

    ex.close()
    ex2 = LocalExecutor("local-test", {**FAST, "set_cuda_visible_devices": True}, data_dir)
    executors.append(ex2)
    ok(ex2.submit(dataclasses.replace(la, request_id="env.2")))
    assert wait_done(ex2, "env.2", 10).phase is ExecPhase.SUCCEEDED
    assert read_all(ex2, "env.2", "stdout:1").decode().split("|")[2] == "2,3"


def test_command_text_is_never_interpolated_into_the_shim(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    nasty = "printf '%s\\n' \"a\\\"b\" '$2' \"$1\"; echo '; exit 9'"
    ok(ex.submit(make_launch(nasty, request_id="nasty.1")))
    done = wait_done(ex, "nasty.1", 10)
    assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
    assert read_all(ex, "nasty.1") == b'a"b\n$2\n\n; exit 9\n'


def test_time_limit_fails_the_launch(data_dir: Path, executors: list[LocalExecutor]) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    ok(ex.submit(make_launch("sleep 30", request_id="slow.1", time_limit_s=1)))
    done = wait_done(ex, "slow.1", 6)
    assert done.phase is ExecPhase.FAILED and "time limit" in done.reason


@pytest.mark.parametrize(
    ("launch", "fragment"),
    [
        (make_launch("true", request_id="../escape"), "request id"),
        (make_launch("true", request_id="has space.1"), "request id"),
        (make_launch("   "), "command"),
        (make_launch("true", replicas=0), "at least one replica"),
        (make_launch("true", replicas=300), "max_processes"),
        (make_launch("true", env={"BAD=NAME": "x"}), "environment"),
        (make_launch("true", time_limit_s=0), "time_limit_s"),
    ],
)
def test_bad_launches_are_rejected_and_write_nothing(
    data_dir: Path, executors: list[LocalExecutor], launch: Launch, fragment: str
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    result = ex.submit(launch)
    assert isinstance(result, ExecError) and result.code is ExecErrorCode.REJECTED, result
    assert fragment in result.message
    assert list((data_dir / "runs").iterdir()) == []
    assert ok_list(ex.list_active()) == []


def test_status_of_a_path_like_id_is_not_found_not_a_file_read(
    data_dir: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    for rid in ("../../etc", "a/b", ".."):
        res = ex.status(rid)
        assert isinstance(res, ExecError) and res.code is ExecErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_procs": 3}, "unknown setting"),
        ({"max_processes": 0}, "max_processes"),
        ({"max_processes": "8"}, "max_processes"),
        ({"set_cuda_visible_devices": "yes"}, "true or false"),
        ({"gang_kill_grace_s": -1}, "gang_kill_grace_s"),
    ],
)
def test_bad_settings_are_a_clear_error(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        LocalSettings.parse(settings)


def test_one_instance_per_data_dir(data_dir: Path, executors: list[LocalExecutor]) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    with pytest.raises(Unavailable, match="in use"):
        LocalExecutor("local-test", FAST, data_dir)
    ex.close()
    executors.append(LocalExecutor("local-test", FAST, data_dir))  # free again after close


def test_check_capabilities_and_stats(data_dir: Path, executors: list[LocalExecutor]) -> None:
    ex = LocalExecutor("local-test", {**FAST, "declared_cpus": 100_000}, data_dir)
    executors.append(ex)
    report = ex.check()
    assert report["reachable"] is True and report["kind"] == "local" and report["executor"] == "local-test"
    assert report["cpus"] == os.cpu_count()
    assert any("declared 100000 CPUs" in w for w in report["warnings"])  # type: ignore[attr-defined]
    caps = ex.capabilities()
    assert caps.gangs and caps.logs and "device_isolation" in caps.unsupported
    ok(ex.submit(make_launch("true", request_id="s.1")))
    ex.status("s.1")
    ex.status("missing.1")
    stats = ex.stats()
    assert stats["submit"]["count"] == 1
    assert stats["status"]["count"] == 2 and stats["status"]["errors"] == 1
    assert stats["submit"]["p50_ms"] > 0


def test_no_zombies_after_jobs_finish(data_dir: Path, executors: list[LocalExecutor]) -> None:
    # Only this executor's children count: other tests in the same process may have closed
    # executors whose jobs ended afterwards (in production the platform's exit reparents them).
    before = {c.pid for c in psutil.Process().children()}
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    las = [make_launch("true") for _ in range(20)]
    for la in las:
        ok(ex.submit(la))
    for la in las:
        wait_done(ex, la.request_id, 10)
    time.sleep(0.2)
    zombies = [c for c in psutil.Process().children()
               if c.pid not in before and c.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


# ---- pure rules, base class, registry ----------------------------------------------------

_state = st.sampled_from(list(_R))
_replica = st.tuples(_state, st.integers(min_value=0, max_value=255)).map(
    lambda t: (t[0], t[1] if t[0] is _R.EXITED else None)
)


@given(st.lists(_replica, min_size=1, max_size=8))
def test_decide_invariants(states: list[tuple[_R, int | None]]) -> None:
    phase, code, reason = decide(states)
    nonzero = [c for s, c in states if s is _R.EXITED and c != 0]
    if phase is ExecPhase.SUCCEEDED:
        assert all(s is _R.EXITED and c == 0 for s, c in states) and code == 0
    if nonzero:
        assert (phase, code) == (ExecPhase.FAILED, nonzero[0])
    elif any(s is _R.GONE for s, _ in states):
        assert phase is ExecPhase.LOST
    if phase is ExecPhase.RUNNING:
        assert any(s is _R.ALIVE for s, _ in states)
    if phase is ExecPhase.PENDING:  # nothing runs, nothing ended badly
        assert not any(s in (_R.ALIVE, _R.GONE) for s, _ in states) and not nonzero
        assert ("launching" in reason) == any(s is _R.STARTING for s, _ in states)


class _Broken(BaseExecutor):
    kind = "broken"

    def _status(self, request_id: str) -> ExecError:
        raise RuntimeError("bug in the backend")

    def _check(self) -> dict[str, object]:
        raise OSError("engine gone")


def test_base_maps_exceptions_to_internal_errors() -> None:
    ex = _Broken("b")
    res = ex.status("x.1")
    assert (
        isinstance(res, ExecError)
        and res.code is ExecErrorCode.INTERNAL
        and "bug in the backend" in res.message
    )
    assert ex.observe(["x.1", "y.1"]) == {"x.1": res, "y.1": res}
    report = ex.check()
    assert report["reachable"] is False and "engine gone" in str(report["error"])
    assert ex.stats()["status"]["errors"] == 1
    bad = ex.logs("x.1", offset=-1)
    assert isinstance(bad, ExecError) and bad.code is ExecErrorCode.REJECTED


def test_latency_histogram_quantiles() -> None:
    h = LatencyHistogram()
    for ms in range(1, 101):
        h.record(ms / 1000)
    assert h.count == 100
    assert 0.049 <= h.quantile(0.5) <= 0.055  # within one ~9 % bucket
    assert 0.098 <= h.quantile(0.99) <= 0.1
    assert h.summary()["max_ms"] == 100.0


def test_registry_rejects_duplicates_and_unknown_kinds(data_dir: Path) -> None:
    reg = ExecutorRegistry()
    reg.register("local", lambda n, s, d, c: LocalExecutor(n, s, d, clock=c))
    with pytest.raises(Conflict):
        reg.register("local", lambda n, s, d, c: LocalExecutor(n, s, d, clock=c))
    assert default_registry().kinds() == ("local", "ray", "slurm")
    with pytest.raises(InvalidInput, match="unknown executor kind 'kubernetes'"):
        build_executor("kubernetes", "k", {}, data_dir)
    with pytest.raises(InvalidInput, match="unknown setting"):
        build_executor("local", "l", {"nope": 1}, data_dir)
    with pytest.raises(InvalidInput, match="name"):
        build_executor("local", "../x", {}, data_dir)


def test_build_executor_gives_each_executor_its_own_dir(data_dir: Path) -> None:
    a = build_executor("local", "site-a", {"kind": "local", **FAST}, data_dir)
    b = build_executor("local", "site-b", FAST, data_dir)
    try:
        assert isinstance(a, LocalExecutor) and isinstance(b, LocalExecutor)
        assert a.data_dir == data_dir / "executors" / "site-a"
        assert b.data_dir == data_dir / "executors" / "site-b"
        ok(a.submit(make_launch("echo a", request_id="same.1")))
        ok(b.submit(make_launch("echo b", request_id="same.1")))
        assert wait_done(a, "same.1", 10).phase is ExecPhase.SUCCEEDED
        assert wait_done(b, "same.1", 10).phase is ExecPhase.SUCCEEDED
        assert read_all(a, "same.1") == b"a\n" and read_all(b, "same.1") == b"b\n"
    finally:
        a.close()
        b.close()


def _job_processes(supervisor: int) -> list[int]:
    """Host pids of what a replica's supervisor runs (the sandbox and the job in it)."""
    try:
        return [c.pid for c in psutil.Process(supervisor).children(recursive=True)]
    except psutil.Error:
        return []


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _shim_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> bool:
    """True if any non-zombie process is in the group."""
    for p in psutil.process_iter(["status"]):
        if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def test_shim_without_pid_file_is_found_by_its_argv(data_dir: Path, tmp_path: Path) -> None:
    """The platform died after the spawn but before writing the pid file: still re-adopted."""
    ex = LocalExecutor("local-test", FAST, data_dir)
    ok(ex.submit(make_launch(f"touch {tmp_path}/up; sleep 1; exit 3", request_id="nopid.1")))
    st = spawned(ex, "nopid.1")
    wait_file(tmp_path / "up", 5)
    ex.close()
    (data_dir / "runs" / "nopid.1" / "replica-0.pid").unlink(missing_ok=True)
    ex2 = LocalExecutor("local-test", FAST, data_dir)
    try:
        active = ok_list(ex2.list_active())
        assert [(s.request_id, s.phase, s.native_id) for s in active] == [
            ("nopid.1", ExecPhase.RUNNING, st.native_id)
        ]
        done = wait_done(ex2, "nopid.1", 10)
        assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 3)
    finally:
        ex2.close()
        _kill_leftovers(data_dir)


def test_finished_runs_are_journaled_and_answered_after_restart(data_dir: Path) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    ok(ex.submit(make_launch("exit 2", request_id="j.1")))
    first = wait_done(ex, "j.1", 10)
    ex.close()
    rows = [json.loads(x) for x in (data_dir / "finished.jsonl").read_text().splitlines()]
    assert [(r["request_id"], r["phase"], r["exit_code"]) for r in rows] == [("j.1", "failed", 2)]
    ex2 = LocalExecutor("local-test", FAST, data_dir)
    try:
        assert ok(ex2.status("j.1")) == first
        ex2._finished.clear()  # evicted from the cache: read back from the journal
        assert ok(ex2.status("j.1")) == first
        assert ok(ex2.submit(make_launch("true", request_id="j.1"))) == first
    finally:
        ex2.close()
    assert len((data_dir / "finished.jsonl").read_text().splitlines()) == 1, "journaled once"


def test_cancel_interrupted_by_a_restart_still_ends_with_sigkill(data_dir: Path, tmp_path: Path) -> None:
    """The plain shim (sandbox = false) dies of the SIGTERM; a restart kills what is left."""
    ex = LocalExecutor("local-test", PLAIN, data_dir)
    la = make_launch(f"trap '' TERM; touch {tmp_path}/up; while true; do sleep 0.05; done")
    ok(ex.submit(la))
    shim = int(spawned(ex, la.request_id).native_id)
    wait_file(tmp_path / "up", 5)
    ok(ex.cancel(la.request_id, grace_s=30))
    # The monitor sends SIGTERM on its next pass; the shim dies of it, the command ignores it.
    # Wait for that (on a loaded machine it can take longer than a fixed pause).
    deadline = time.monotonic() + 10
    while _shim_running(shim) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _shim_running(shim)
    ex.close()  # the platform stops during the grace period
    assert _group_alive(shim)
    ex2 = LocalExecutor("local-test", PLAIN, data_dir)
    try:
        deadline = time.monotonic() + 5
        while _group_alive(shim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(shim)
        assert wait_done(ex2, la.request_id, 5).phase is ExecPhase.CANCELLED
    finally:
        ex2.close()
        _kill_leftovers(data_dir)


def test_a_restart_does_not_extend_the_grace_period(data_dir: Path, tmp_path: Path) -> None:
    """A stop decided 100 s ago with a 30 s grace: after a restart the SIGKILL is due at once
    (counting the grace afresh would leave the command running another 30 s)."""
    ex = LocalExecutor("local-test", FAST, data_dir)
    la = make_launch(f"trap '' TERM; touch {tmp_path}/up; while true; do sleep 0.05; done")
    ok(ex.submit(la))
    shim = int(spawned(ex, la.request_id).native_id)
    wait_file(tmp_path / "up", 5)
    ex.close()  # the platform stops; the launch keeps running
    decided = (datetime.now(UTC) - timedelta(seconds=100)).isoformat()
    run_dir = next(p for p in data_dir.rglob("launch.json")).parent
    (run_dir / "verdict.json").write_text(json.dumps(
        {"phase": "cancelled", "exit_code": None, "reason": "cancelled at the platform's request", "grace_s": 30,
         "decided_at": decided}))
    ex2 = LocalExecutor("local-test", FAST, data_dir)
    try:
        done = wait_done(ex2, la.request_id, 10)
        assert done.phase is ExecPhase.CANCELLED
        assert not _group_alive(shim)
    finally:
        ex2.close()
        _kill_leftovers(data_dir)


def test_shim_killed_from_outside_fails_with_the_signal_code_and_cleans_up(
    data_dir: Path, tmp_path: Path, executors: list[LocalExecutor]
) -> None:
    ex = LocalExecutor("local-test", FAST, data_dir)
    executors.append(ex)
    la = make_launch(f"echo $$ > {tmp_path}/inner; sleep 60")
    ok(ex.submit(la))
    shim = int(spawned(ex, la.request_id).native_id)
    wait_file(tmp_path / "inner", 5)
    time.sleep(0.05)
    inner = _job_processes(shim)
    assert inner
    os.kill(shim, signal.SIGKILL)  # e.g. the OOM killer picked the shim
    done = wait_done(ex, la.request_id, 5)
    assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 137)
    assert (data_dir / "runs" / la.request_id / "replica-0.exit").read_text() == "137\n"
    deadline = time.monotonic() + 3
    while any(_running(p) for p in inner) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_running(p) for p in inner), "the replica's other processes are stopped too"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_owner_killed_mid_burst_nothing_runs_twice_and_lost_never_ran(
    data_dir: Path, tmp_path: Path, seed: int
) -> None:
    """kill -9 the owner at a random moment of a burst of submits (some queued, some
    running, some mid-spawn); a new instance answers every id, re-submits start nothing,
    and each id ran exactly once if it succeeded and never if it is lost."""
    import random

    rng = random.Random(seed)
    out = tmp_path / "ran"
    n = 40
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from yungu.adapters.executors.local import LocalExecutor
        from yungu.ports.executor import Launch, ReplicaLaunch
        ex = LocalExecutor("local-test", {{"max_processes": 4, "poll_interval_s": 0.01, "binds": {BINDS!r}}},
                           Path({str(data_dir)!r}))
        for i in range({n}):
            cmd = "sleep 0.$((RANDOM % 3)); echo $YUNGU_REQUEST_ID >> {out}"
            ex.submit(Launch(f"b{{i}}.1", f"b{{i}}", "tenant-test", "p", cmd, (ReplicaLaunch(0),)))
            print(i, flush=True)
        import time; time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    kill_after = rng.randint(3, n - 1)
    try:
        assert owner.stdout is not None
        for _ in range(kill_after):
            owner.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        owner.kill()
        owner.wait(timeout=5)
    finally:
        if owner.poll() is None:
            owner.kill()
    ex = LocalExecutor("local-test", FAST, data_dir)
    try:
        ids = [f"b{i}.1" for i in range(n)]
        for rid in ids:  # the restarted platform re-submits what it believes is in flight
            res = ex.submit(make_launch(f"echo {rid} >> {out}", request_id=rid))
            assert not isinstance(res, ExecError), res
        final = {rid: wait_done(ex, rid, 20) for rid in ids}
    finally:
        ex.close()
        _kill_leftovers(data_dir)
    ran = out.read_text().split() if out.exists() else []
    for rid, status in final.items():
        if status.phase is ExecPhase.SUCCEEDED:
            assert ran.count(rid) == 1, (rid, status)
        else:
            assert status.phase is ExecPhase.LOST, (rid, status)
            assert ran.count(rid) == 0, (rid, status)
    assert len(ran) == len(set(ran))

"""Contract cases every real-engine executor (Slurm, Ray) must pass, against a real cluster.

A test module subclasses :class:`EngineContract` and provides two fixtures:

- ``make_executor``: a callable returning a *new* executor instance on the same cluster
  (a second instance is how the cases simulate a restarted platform or a racing replica);
- ``engine_timeout``: seconds a trivial job may take end to end on this engine.

The cases say what the platform relies on (see ``yungu/ports/executor.py``): idempotent
submit by request id, exit codes, cancel, logs, gangs, re-adoption after a restart, and
expected failures as ``ExecError`` values.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from yungu.ports.executor import (
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Executor,
    Launch,
    ReplicaLaunch,
)

MakeExecutor = Callable[[], Executor]


def launch(command: str, *, replicas: int = 1, rid: str | None = None, **kw: object) -> Launch:
    job = uuid.uuid4().hex[:12]
    return Launch(
        request_id=rid or f"{job}.1",
        job_id=job,
        tenant_id="t-test",
        pool_id="p-test",
        command=command,
        replicas=tuple(ReplicaLaunch(node=i) for i in range(replicas)),
        **kw,  # type: ignore[arg-type]
    )


def wait_for(ex: Executor, rid: str, pred: Callable[[ExecStatus], bool], timeout: float) -> ExecStatus:
    deadline = time.monotonic() + timeout
    last: ExecStatus | ExecError | None = None
    while time.monotonic() < deadline:
        last = ex.observe([rid])[rid]
        if isinstance(last, ExecStatus) and pred(last):
            return last
        time.sleep(0.2)
    pytest.fail(f"{rid}: condition not reached within {timeout:.0f}s; last status {last!r}")


def wait_done(ex: Executor, rid: str, timeout: float) -> ExecStatus:
    return wait_for(ex, rid, lambda s: s.done, timeout)


def all_logs(ex: Executor, rid: str, stream: str = "stdout") -> bytes:
    chunk = ex.logs(rid, stream)
    assert not isinstance(chunk, ExecError), chunk
    return chunk.data


class EngineContract:
    """The shared cases. Subclasses are collected (``Test...``); this base is not."""

    def test_runs_to_success_and_reports_its_output(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        ex = make_executor()
        la = launch("echo hello-from-$YUNGU_REQUEST_ID")
        first = ex.submit(la)
        assert isinstance(first, ExecStatus), first
        assert first.phase in (ExecPhase.PENDING, ExecPhase.RUNNING)
        assert first.native_id
        done = wait_done(ex, la.request_id, engine_timeout)
        assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert f"hello-from-{la.request_id}".encode() in all_logs(ex, la.request_id)

    def test_failure_keeps_the_exit_code(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        ex = make_executor()
        la = launch("echo about to fail; exit 7")
        assert isinstance(ex.submit(la), ExecStatus)
        done = wait_done(ex, la.request_id, engine_timeout)
        assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 7)
        assert "7" in done.reason

    def test_cancel_while_running(self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path) -> None:
        ex = make_executor()
        marker = tmp_path / "started"
        la = launch(f"touch {marker}; sleep 120; echo never | tr a-z A-Z")
        assert isinstance(ex.submit(la), ExecStatus)
        wait_for(ex, la.request_id, lambda s: s.phase is ExecPhase.RUNNING and marker.exists(), engine_timeout)
        t0 = time.monotonic()
        ex.cancel(la.request_id, grace_s=5)
        done = wait_done(ex, la.request_id, engine_timeout)
        assert done.phase is ExecPhase.CANCELLED
        assert time.monotonic() - t0 < 60, "cancel must not wait for the command to finish"
        active = ex.list_active()
        assert not isinstance(active, ExecError)
        assert la.request_id not in {s.request_id for s in active}
        assert b"NEVER" not in all_logs(ex, la.request_id)  # (engines may echo the command itself)
        # Cancelling a finished request changes nothing and is not an error.
        again = ex.cancel(la.request_id)
        assert isinstance(again, ExecStatus) and again.phase is ExecPhase.CANCELLED

    def test_logs_read_in_chunks_to_eof(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        ex = make_executor()
        la = launch("for i in 1 2 3 4 5; do echo line-$i; done")
        assert isinstance(ex.submit(la), ExecStatus)
        wait_done(ex, la.request_id, engine_timeout)
        data, offset = b"", 0
        for _ in range(10_000):
            chunk = ex.logs(la.request_id, "stdout", offset=offset, limit=7)
            assert not isinstance(chunk, ExecError), chunk
            assert len(chunk.data) <= 7
            data += chunk.data
            offset = chunk.next_offset
            if chunk.eof:
                break
        else:
            pytest.fail("logs never reached eof")
        for i in range(1, 6):
            assert f"line-{i}\n".encode() in data
        assert data == all_logs(ex, la.request_id)
        bad = ex.logs(la.request_id, "nonsense")
        assert isinstance(bad, ExecError) and bad.code is ExecErrorCode.REJECTED

    def test_gang_of_two_runs_every_replica(self, make_executor: MakeExecutor, engine_timeout: float,
                                            tmp_path: Path) -> None:
        ex = make_executor()
        la = launch(f"echo replica-$YUNGU_REPLICA-of-$YUNGU_REPLICAS > {tmp_path}/rank-$YUNGU_REPLICA", replicas=2)
        assert isinstance(ex.submit(la), ExecStatus)
        done = wait_done(ex, la.request_id, engine_timeout * 2)
        assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert sorted(p.read_text().strip() for p in tmp_path.glob("rank-*")) == ["replica-0-of-2", "replica-1-of-2"]

    def test_gang_fails_as_a_whole(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        ex = make_executor()
        la = launch('if [ "$YUNGU_REPLICA" = 1 ]; then exit 5; fi; sleep 120', replicas=2)
        assert isinstance(ex.submit(la), ExecStatus)
        t0 = time.monotonic()
        done = wait_done(ex, la.request_id, engine_timeout * 3)
        assert done.phase is ExecPhase.FAILED
        assert time.monotonic() - t0 < 100, "the surviving replica must be stopped, not waited for"

    def test_duplicate_submit_runs_once(self, make_executor: MakeExecutor, engine_timeout: float,
                                        tmp_path: Path) -> None:
        out = tmp_path / "runs.txt"
        la = launch(f"echo ran >> {out}")
        a, b = make_executor(), make_executor()
        results: list[object] = []
        # Two platform replicas race on the same request id, then a plain retry follows.
        threads = [threading.Thread(target=lambda e=e: results.append(e.submit(la))) for e in (a, b, a)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(isinstance(r, ExecStatus) for r in results), results
        assert len({r.native_id for r in results if isinstance(r, ExecStatus)}) == 1
        wait_done(a, la.request_id, engine_timeout)
        again = b.submit(la)
        assert isinstance(again, ExecStatus) and again.phase is ExecPhase.SUCCEEDED
        time.sleep(1.0)
        assert out.read_text().splitlines() == ["ran"]

    def test_restarted_platform_readopts_a_running_job(self, make_executor: MakeExecutor, engine_timeout: float,
                                                       tmp_path: Path) -> None:
        out = tmp_path / "runs.txt"
        started = tmp_path / "started"
        la = launch(f"touch {started}; sleep 3; echo ran >> {out}")
        old = make_executor()
        assert isinstance(old.submit(la), ExecStatus)
        wait_for(old, la.request_id, lambda s: s.phase is ExecPhase.RUNNING and started.exists(), engine_timeout)
        old.close()  # the platform goes away; the engine keeps running the job

        new = make_executor()
        active = new.list_active()
        assert not isinstance(active, ExecError), active
        adopted = {s.request_id: s for s in active}
        assert la.request_id in adopted, f"list_active did not return the running job: {active}"
        assert adopted[la.request_id].phase is ExecPhase.RUNNING
        # The restarted platform re-submits what its store says is in flight: that must not run it again.
        assert isinstance(new.submit(la), ExecStatus)
        done = wait_done(new, la.request_id, engine_timeout + 10)
        assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert out.read_text().splitlines() == ["ran"]

    def test_unknown_request_is_not_found(self, make_executor: MakeExecutor) -> None:
        ex = make_executor()
        for result in (ex.status("nope.1"), ex.observe(["nope.1"])["nope.1"], ex.cancel("nope.1"), ex.logs("nope.1")):
            assert isinstance(result, ExecError) and result.code is ExecErrorCode.NOT_FOUND, result

    def test_impossible_request_is_rejected_with_the_reason(self, make_executor: MakeExecutor) -> None:
        ex = make_executor()
        la = launch("echo never", accelerators_per_replica=4)
        result = ex.submit(la)
        assert isinstance(result, ExecError) and result.code is ExecErrorCode.REJECTED, result
        assert result.message
        assert not result.retryable
        active = ex.list_active()
        assert not isinstance(active, ExecError)
        assert la.request_id not in {s.request_id for s in active}

    def test_check_reports_reachability_and_capacity(self, make_executor: MakeExecutor) -> None:
        report = make_executor().check()
        assert report["reachable"] is True, report
        assert int(report["cpus"]) > 0  # type: ignore[call-overload]
        caps = make_executor().capabilities()
        assert caps.gangs and caps.logs
        assert not caps.devices and "devices" in caps.unsupported

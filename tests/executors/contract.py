"""The executor contract as a reusable test suite (issue 6, item 5).

Any executor's test module subclasses :class:`ExecutorContract` (the class name starts
with ``Test`` there, so pytest collects it) and provides two fixtures:

- ``make_executor() -> Executor``: a *new* executor instance on the same engine and data
  dir. Each call stands for a platform (re)start: the fixture may close instances it made
  before (the local executor allows one live instance per data dir), but it must not stop
  the engine or the jobs it runs.
- ``engine_timeout -> float``: seconds a trivial job may take end to end on that engine.

The cases state what the platform relies on (``yungu/ports/executor.py``): idempotent
submit by request id, exit codes, cancel, logs, gangs, and re-adoption after a restart.
Commands only use POSIX ``sh`` and write into pytest's ``tmp_path``, so for a remote engine
``tmp_path`` must be visible to the nodes (it is, for the single-machine test clusters).
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
    LogChunk,
    ReplicaLaunch,
)

MakeExecutor = Callable[[], Executor]


def make_launch(command: str, *, replicas: int = 1, request_id: str | None = None, **kw: object) -> Launch:
    job = uuid.uuid4().hex[:12]
    return Launch(
        request_id=request_id or f"{job}.1",
        job_id=job,
        tenant_id="tenant-test",
        pool_id="pool-test",
        command=command,
        replicas=tuple(ReplicaLaunch(node=i) for i in range(replicas)),
        **kw,  # type: ignore[arg-type]
    )


def ok(result: ExecStatus | ExecError) -> ExecStatus:
    assert isinstance(result, ExecStatus), f"expected a status, got {result!r}"
    return result


def wait_until(
    ex: Executor, rid: str, pred: Callable[[ExecStatus], bool], timeout: float, what: str = "condition"
) -> ExecStatus:
    deadline = time.monotonic() + timeout
    last: ExecStatus | ExecError | None = None
    while time.monotonic() < deadline:
        last = ex.observe([rid])[rid]
        if isinstance(last, ExecStatus) and pred(last):
            return last
        time.sleep(0.05)
    pytest.fail(f"{rid}: {what} not reached within {timeout:.1f}s; last status {last!r}")


def wait_done(ex: Executor, rid: str, timeout: float) -> ExecStatus:
    return wait_until(ex, rid, lambda s: s.done, timeout, "a final phase")


def read_all(ex: Executor, rid: str, stream: str = "stdout") -> bytes:
    chunk = ex.logs(rid, stream)
    assert isinstance(chunk, LogChunk), chunk
    return chunk.data


def wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout:.1f}s")
        time.sleep(0.02)


class ExecutorContract:
    """Cases every executor must pass. Not collected itself (no ``Test`` prefix)."""

    def test_submit_runs_to_success_with_its_output_and_identity(
        self, make_executor: MakeExecutor, engine_timeout: float
    ) -> None:
        ex = make_executor()
        la = make_launch("echo hello $YUNGU_JOB_ID $YUNGU_REQUEST_ID $YUNGU_REPLICA/$YUNGU_REPLICAS")
        first = ok(ex.submit(la))
        assert first.request_id == la.request_id
        assert first.phase in (ExecPhase.PENDING, ExecPhase.RUNNING, ExecPhase.SUCCEEDED)
        done = wait_done(ex, la.request_id, engine_timeout)
        assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert done.native_id, "the engine's own id must be reported"
        assert read_all(ex, la.request_id).strip() == f"hello {la.job_id} {la.request_id} 0/1".encode()

    def test_failure_reports_the_exit_code(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        ex = make_executor()
        la = make_launch("echo oops >&2; exit 7")
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, engine_timeout)
        assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 7)
        assert "7" in done.reason
        assert b"oops" in read_all(ex, la.request_id, "stderr")

    # How far the reported start and end may be from the job's own clock (seconds).
    start_tolerance_s = 1.0
    end_tolerance_s = 1.0

    def test_reports_when_the_run_started_and_ended(
        self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path
    ) -> None:
        """Billing meters these times (docs/ledger.md): the run itself, not when anyone looked,
        and the same after a platform restart."""
        ex = make_executor()
        own = tmp_path / "own"
        la = make_launch(f"date +%s.%N > {own}.start; sleep 1; date +%s.%N > {own}.end")
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, engine_timeout)
        assert done.phase is ExecPhase.SUCCEEDED
        assert done.started_at is not None and done.finished_at is not None, done
        start, end = float((tmp_path / "own.start").read_text()), float((tmp_path / "own.end").read_text())
        print(f"run times vs the job's own: start {done.started_at.timestamp() - start:+.3f} s, "
              f"end {done.finished_at.timestamp() - end:+.3f} s")
        assert abs(done.started_at.timestamp() - start) <= self.start_tolerance_s, (done.started_at, start)
        assert abs(done.finished_at.timestamp() - end) <= self.end_tolerance_s, (done.finished_at, end)
        again = ok(make_executor().status(la.request_id))
        assert again.started_at is not None and again.finished_at is not None, again
        assert abs((again.finished_at - again.started_at) - (done.finished_at - done.started_at)).total_seconds() < 1

    def test_cancel_while_running_stops_it(
        self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path
    ) -> None:
        ex = make_executor()
        started = tmp_path / "started"
        la = make_launch(f"touch {started}; sleep 60; echo not-reached")
        ok(ex.submit(la))
        wait_file(started, engine_timeout)
        t0 = time.monotonic()
        ok(ex.cancel(la.request_id, grace_s=2.0))
        done = wait_done(ex, la.request_id, engine_timeout)
        assert done.phase is ExecPhase.CANCELLED
        assert time.monotonic() - t0 < engine_timeout + 5, "cancel must not wait for the command"
        active = ex.list_active()
        assert not isinstance(active, ExecError)
        assert la.request_id not in {s.request_id for s in active}
        assert b"not-reached" not in read_all(ex, la.request_id)
        # Cancelling again (or a finished request) is harmless and changes nothing.
        assert ok(ex.cancel(la.request_id)).phase is ExecPhase.CANCELLED

    def test_logs_are_read_in_chunks_up_to_eof(
        self, make_executor: MakeExecutor, engine_timeout: float
    ) -> None:
        ex = make_executor()
        la = make_launch("for i in 1 2 3 4 5 6; do echo line-$i; done")
        ok(ex.submit(la))
        wait_done(ex, la.request_id, engine_timeout)
        data, offset = b"", 0
        for _ in range(1000):
            chunk = ex.logs(la.request_id, "stdout", offset=offset, limit=5)
            assert isinstance(chunk, LogChunk), chunk
            assert len(chunk.data) <= 5
            data, offset = data + chunk.data, chunk.next_offset
            if chunk.eof:
                break
        else:
            pytest.fail("logs never reached eof")
        assert data == b"".join(f"line-{i}\n".encode() for i in range(1, 7))
        bad = ex.logs(la.request_id, "not-a-stream")
        assert isinstance(bad, ExecError) and bad.code is ExecErrorCode.REJECTED

    def test_gang_of_two_runs_each_replica_once(
        self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path
    ) -> None:
        ex = make_executor()
        la = make_launch(f"echo $YUNGU_REPLICA/$YUNGU_REPLICAS >> {tmp_path}/ranks", replicas=2)
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, engine_timeout * 2)
        assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert sorted((tmp_path / "ranks").read_text().split()) == ["0/2", "1/2"]

    def test_gang_fails_as_a_whole_with_the_failing_code(
        self, make_executor: MakeExecutor, engine_timeout: float
    ) -> None:
        ex = make_executor()
        la = make_launch('if [ "$YUNGU_REPLICA" = 1 ]; then exit 5; fi; sleep 60', replicas=2)
        ok(ex.submit(la))
        t0 = time.monotonic()
        done = wait_done(ex, la.request_id, engine_timeout * 3)
        assert done.phase is ExecPhase.FAILED
        assert done.exit_code not in (None, 0)  # the local executor reports exactly 5 (test_local)
        assert time.monotonic() - t0 < 50, "the surviving replica must be stopped, not waited for"

    def test_duplicate_submit_with_the_same_request_id_runs_once(
        self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path
    ) -> None:
        ex = make_executor()
        out = tmp_path / "ran"
        la = make_launch(f"echo once >> {out}")
        results: list[ExecStatus | ExecError] = []
        threads = [threading.Thread(target=lambda: results.append(ex.submit(la))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = [ok(r) for r in results]
        assert len({s.native_id for s in statuses if s.native_id}) <= 1
        wait_done(ex, la.request_id, engine_timeout)
        again = ok(ex.submit(la))  # a plain retry after completion returns the outcome
        assert (again.phase, again.exit_code) == (ExecPhase.SUCCEEDED, 0)
        time.sleep(0.5)
        assert out.read_text().splitlines() == ["once"]

    def test_restarted_platform_readopts_running_jobs(
        self, make_executor: MakeExecutor, engine_timeout: float, tmp_path: Path
    ) -> None:
        good = make_launch(f"touch {tmp_path}/a; sleep 2; echo finished; echo ran >> {tmp_path}/ran-a")
        bad = make_launch(f"touch {tmp_path}/b; sleep 2; exit 4")
        old = make_executor()
        ok(old.submit(good))
        ok(old.submit(bad))
        wait_file(tmp_path / "a", engine_timeout)
        wait_file(tmp_path / "b", engine_timeout)

        new = make_executor()  # the platform restarted; the jobs kept running
        active = new.list_active()
        assert not isinstance(active, ExecError), active
        seen = {s.request_id: s for s in active}
        assert {good.request_id, bad.request_id} <= set(seen), f"not re-adopted: {active}"
        assert all(seen[r].phase is ExecPhase.RUNNING for r in (good.request_id, bad.request_id))
        # The restarted platform re-submits what its store says is in flight: no second run.
        ok(new.submit(good))
        done_good = wait_done(new, good.request_id, engine_timeout + 10)
        done_bad = wait_done(new, bad.request_id, engine_timeout + 10)
        assert (done_good.phase, done_good.exit_code) == (ExecPhase.SUCCEEDED, 0)
        assert (done_bad.phase, done_bad.exit_code) == (ExecPhase.FAILED, 4)
        assert b"finished" in read_all(new, good.request_id)
        assert (tmp_path / "ran-a").read_text().splitlines() == ["ran"]

    def test_unknown_request_is_not_found(self, make_executor: MakeExecutor) -> None:
        ex = make_executor()
        rid = f"{uuid.uuid4().hex}.9"
        for result in (ex.status(rid), ex.observe([rid])[rid], ex.cancel(rid), ex.logs(rid)):
            assert isinstance(result, ExecError) and result.code is ExecErrorCode.NOT_FOUND, result
            assert not result.retryable

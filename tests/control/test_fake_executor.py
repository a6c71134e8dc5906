"""``yungu.testing.FakeExecutor`` keeps the same executor contract as local, Slurm and Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.executors.contract import ExecutorContract, MakeExecutor, make_launch, ok
from yungu.ports.executor import ExecErrorCode, ExecPhase, Executor
from yungu.testing import FakeCluster, FakeExecutor, MockClock, Script


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    c = FakeCluster()
    yield c
    c.close()


@pytest.fixture
def make_executor(cluster: FakeCluster) -> MakeExecutor:
    def make() -> Executor:
        return FakeExecutor("fake-test", cluster)  # a restart: a new client of the same engine

    return make


@pytest.fixture
def engine_timeout() -> float:
    return 10.0


class TestFakeContract(ExecutorContract):
    """The shared contract, run against the fake in shell mode."""


def test_scripted_lifecycle_follows_the_mock_clock() -> None:
    clock = MockClock()
    cluster = FakeCluster(clock, script=lambda la: Script(run_s=30, exit_code=0, stdout=b"hi\n", stop_s=2))
    ex = FakeExecutor("f", cluster)
    la = make_launch("anything")
    assert ok(ex.submit(la)).phase is ExecPhase.RUNNING
    clock.jump(29.9)
    assert ok(ex.status(la.request_id)).phase is ExecPhase.RUNNING
    clock.jump(0.1)
    done = ok(ex.status(la.request_id))
    assert (done.phase, done.exit_code) == (ExecPhase.SUCCEEDED, 0)
    chunk = ex.logs(la.request_id)
    assert not isinstance(chunk, type(None)) and getattr(chunk, "data", None) == b"hi\n"


def test_scripted_cancel_takes_the_stop_time_within_the_grace() -> None:
    clock = MockClock()
    cluster = FakeCluster(clock, script=lambda la: Script(run_s=600, stop_s=5))
    ex = FakeExecutor("f", cluster)
    la = make_launch("x")
    ok(ex.submit(la))
    assert ok(ex.cancel(la.request_id, grace_s=3)).phase is ExecPhase.RUNNING  # SIGTERM sent
    clock.jump(2.9)
    assert ok(ex.status(la.request_id)).phase is ExecPhase.RUNNING
    clock.jump(0.1)  # the grace ran out before its own 5 s stop: SIGKILL
    assert ok(ex.status(la.request_id)).phase is ExecPhase.CANCELLED
    assert cluster.cancels == [(la.request_id, 3)]


def test_faults_on_demand() -> None:
    cluster = FakeCluster(MockClock(), script=lambda la: Script(run_s=10))
    ex = FakeExecutor("f", cluster)
    la = make_launch("x")
    cluster.unreachable = "network down"
    err = ex.submit(la)
    assert getattr(err, "code", None) is ExecErrorCode.UNREACHABLE
    assert ex.check()["reachable"] is False
    cluster.unreachable = None
    ok(ex.submit(la))
    cluster.lose(la.request_id)
    assert getattr(ex.status(la.request_id), "code", None) is ExecErrorCode.NOT_FOUND
    cluster.reject = lambda launch: "no such partition"
    assert getattr(ex.submit(make_launch("y")), "code", None) is ExecErrorCode.REJECTED

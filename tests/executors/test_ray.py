"""The Ray executor against a real local Ray head (Jobs API), started by the fixture.

If Ray cannot start, the tests fail loudly with the head's log; they never skip.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executors.engine_cases import EngineContract, MakeExecutor, launch, wait_done
from tests.executors.ray_cluster import ClusterStartError, RayCluster, start_cluster
from yungu.adapters.executors.ray import RayConfig, RayExecutor
from yungu.ports.executor import ExecError, ExecErrorCode, ExecPhase, ExecStatus

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("ray"))
    except (ClusterStartError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the Ray test cluster could not start (pip install -e '.[dev,ray]'): {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def make_executor(ray_head: RayCluster) -> MakeExecutor:
    return lambda: RayExecutor("ray-test", RayConfig(address=ray_head.address, platform="yungu-test"))


@pytest.fixture
def engine_timeout() -> float:
    return 60.0  # a Ray job starts a supervisor actor and a driver: seconds on a 2-core box


class TestRayContract(EngineContract):
    pass


def test_stderr_is_merged_into_stdout(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    assert "stderr" in ex.capabilities().unsupported
    la = launch("echo to-err >&2")
    assert isinstance(ex.submit(la), ExecStatus)
    wait_done(ex, la.request_id, 60)
    out, err = ex.logs(la.request_id, "stdout"), ex.logs(la.request_id, "stderr")
    assert not isinstance(out, ExecError) and not isinstance(err, ExecError)
    assert b"to-err" in out.data and err.data == b"" and err.eof


def test_other_platforms_jobs_are_not_adopted(make_executor: MakeExecutor, ray_head: RayCluster) -> None:
    mine = make_executor()
    theirs = RayExecutor("other", RayConfig(address=ray_head.address, platform="someone-else"))
    la = launch("sleep 20")
    assert isinstance(theirs.submit(la), ExecStatus)
    try:
        active = mine.list_active()
        assert not isinstance(active, ExecError)
        assert la.request_id not in {s.request_id for s in active}
    finally:
        theirs.cancel(la.request_id, grace_s=0)


def test_unreachable_jobs_api_is_a_retryable_error() -> None:
    ex = RayExecutor("down", RayConfig(address="http://127.0.0.1:1"))
    t0 = time.monotonic()
    for result in (ex.submit(launch("true")), ex.status("a.1"), ex.list_active()):
        assert isinstance(result, ExecError) and result.code is ExecErrorCode.UNREACHABLE, result
        assert result.retryable
    assert ex.check()["reachable"] is False
    assert time.monotonic() - t0 < 20


def test_the_core_does_not_import_ray() -> None:
    code = ("import sys, yungu.ports.executor, yungu.adapters.executors.base, yungu.adapters.executors.ray;"
            "assert 'ray' not in sys.modules, 'ray imported at module import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_status_phases_map_from_ray(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    la = launch("exit 0")
    assert isinstance(ex.submit(la), ExecStatus)
    done = wait_done(ex, la.request_id, 60)
    assert done.phase is ExecPhase.SUCCEEDED
    assert done.started_at is not None and done.finished_at is not None and done.started_at <= done.finished_at

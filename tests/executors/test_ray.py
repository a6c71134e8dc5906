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

from tests.executors.contract import (
    ExecutorContract,
    MakeExecutor,
    make_launch,
    ok,
    read_all,
    wait_done,
)
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


class TestRayContract(ExecutorContract):
    # Ray's start_time is when the Jobs server accepted the job: it includes the supervisor's
    # start-up (ray.py, "run times"): 4.1 s early measured on the 2-core VM at load 16.
    start_tolerance_s = 10.0

    def test_failure_reports_the_exit_code(self, make_executor: MakeExecutor, engine_timeout: float) -> None:
        """As the shared case, except that Ray merges stderr into stdout (a declared capability gap)."""
        ex = make_executor()
        la = make_launch("echo oops >&2; exit 7")
        ok(ex.submit(la))
        done = wait_done(ex, la.request_id, engine_timeout)
        assert (done.phase, done.exit_code) == (ExecPhase.FAILED, 7)
        assert "7" in done.reason
        assert b"oops" in read_all(ex, la.request_id, "stdout")


def test_time_limit_stops_the_job_and_fails_it(make_executor: MakeExecutor) -> None:
    """Ray has no time limit of its own; the executor stops a job that runs past ``time_limit_s``
    and the outcome stays 'failed' once Ray reports the job as stopped."""
    ex = make_executor()
    la = make_launch("sleep 120", time_limit_s=2)
    ok(ex.submit(la))
    deadline = time.monotonic() + 90
    st = ok(ex.status(la.request_id))
    while not st.done and time.monotonic() < deadline:
        time.sleep(0.5)
        st = ok(ex.status(la.request_id))
    assert st.phase is ExecPhase.FAILED and "time limit" in st.reason, st
    # Ray stops it for real: it reaches STOPPED, and the outcome still reads 'failed'.
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ex.config.address)
    while client.get_job_status(la.request_id) != JobStatus.STOPPED and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_job_status(la.request_id) == JobStatus.STOPPED
    again = ok(ex.status(la.request_id))
    assert again.phase is ExecPhase.FAILED and "time limit" in again.reason


def test_stderr_is_merged_into_stdout(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    assert "stderr" in ex.capabilities().unsupported
    la = make_launch("echo to-err >&2")
    assert isinstance(ex.submit(la), ExecStatus)
    wait_done(ex, la.request_id, 60)
    out, err = ex.logs(la.request_id, "stdout"), ex.logs(la.request_id, "stderr")
    assert not isinstance(out, ExecError) and not isinstance(err, ExecError)
    assert b"to-err" in out.data and err.data == b"" and err.eof


def test_other_platforms_jobs_are_not_adopted(make_executor: MakeExecutor, ray_head: RayCluster) -> None:
    mine = make_executor()
    theirs = RayExecutor("other", RayConfig(address=ray_head.address, platform="someone-else"))
    la = make_launch("sleep 20")
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
    for result in (ex.submit(make_launch("true")), ex.status("a.1"), ex.list_active()):
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
    la = make_launch("exit 0")
    assert isinstance(ex.submit(la), ExecStatus)
    done = wait_done(ex, la.request_id, 60)
    assert done.phase is ExecPhase.SUCCEEDED
    assert done.started_at is not None and done.finished_at is not None and done.started_at <= done.finished_at


def test_more_gpus_than_any_node_is_rejected_not_queued_forever(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    la = make_launch("echo never", accelerators_per_replica=4)
    result = ex.submit(la)
    assert isinstance(result, ExecError) and result.code is ExecErrorCode.REJECTED, result
    assert "0 GPU" in result.message and not result.retryable
    assert isinstance(ex.status(la.request_id), ExecError)  # nothing was submitted


def test_check_reports_the_capacity_ray_sees(make_executor: MakeExecutor) -> None:
    report = make_executor().check()
    assert report["reachable"] is True, report
    assert (report["nodes"], report["cpus"], report["gpus"]) == (1, 4.0, 0.0)
    assert report["ray_version"]
    caps = make_executor().capabilities()
    assert caps.gangs and caps.logs and not caps.devices and "stderr" in caps.unsupported


def test_ray_log_noise_is_removed_but_job_lines_are_kept() -> None:
    from yungu.adapters.executors.ray import job_output

    text = ("2026-11-22 14:33:58,538\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
            "Running entrypoint for job a.1: echo hi\n"
            "2026-11-22 14:34:07,053\tINFO worker.py:1691 -- Connecting to existing Ray cluster\n"
            "\x1b[36m(run_replica pid=13776)\x1b[0m rank 0\n"
            "(run_replica pid=13777, ip=10.0.0.2) rank 1\n"
            "Running entrypoint for job b.1: user line that merely looks alike\n")
    assert job_output(text, "a.1") == (
        "rank 0\nrank 1\nRunning entrypoint for job b.1: user line that merely looks alike\n")

"""The Slurm executor against a real two-node Slurm cluster (slurmctld + 2 slurmd, munge).

No mocks: the fixture starts the daemons in a temp directory; if they cannot start, the
tests fail loudly with the daemons' logs (CI installs slurm-wlm and munge from Debian).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executors.contract import (
    ExecutorContract,
    MakeExecutor,
    make_launch,
    ok,
    wait_done,
    wait_file,
    wait_until,
)
from tests.executors.slurm_cluster import ClusterStartError, SlurmCluster, start_cluster
from yungu.adapters.executors.slurm import (
    SlurmConfig,
    SlurmExecutor,
    _read_epoch,
    parse_sacct,
    parse_scontrol_times,
    parse_squeue,
)
from yungu.ports.executor import ExecError, ExecErrorCode, ExecPhase, ExecStatus

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except (ClusterStartError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the Slurm test cluster could not start (install slurm-wlm and munge; run as root): {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def make_executor(slurm: SlurmCluster, tmp_path: Path) -> MakeExecutor:
    workdir = tmp_path / "slurm-jobs"
    return lambda: SlurmExecutor("hpc-test", SlurmConfig(workdir=workdir, slurm_conf=slurm.conf))


@pytest.fixture
def engine_timeout() -> float:
    return 30.0


class TestSlurmContract(ExecutorContract):
    pass


def test_gang_spans_two_slurm_nodes(make_executor: MakeExecutor, tmp_path: Path) -> None:
    ex = make_executor()
    la = make_launch(f"echo $SLURMD_NODENAME > {tmp_path}/node-$YUNGU_REPLICA", replicas=2, cpus_per_replica=4)
    assert isinstance(ex.submit(la), ExecStatus)
    assert wait_done(ex, la.request_id, 30).phase is ExecPhase.SUCCEEDED
    # 4 CPUs each: the two replicas cannot share one 4-CPU node.
    assert sorted(p.read_text().strip() for p in tmp_path.glob("node-*")) == ["n1", "n2"]


def test_stderr_is_a_separate_stream(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    la = make_launch("echo to-out; echo to-err >&2")
    assert isinstance(ex.submit(la), ExecStatus)
    wait_done(ex, la.request_id, 30)
    out, err = ex.logs(la.request_id, "stdout"), ex.logs(la.request_id, "stderr")
    assert not isinstance(out, ExecError) and not isinstance(err, ExecError)
    assert (out.data, err.data) == (b"to-out\n", b"to-err\n")
    assert out.eof and err.eof


def test_outcome_survives_slurm_forgetting_the_job(make_executor: MakeExecutor, slurm: SlurmCluster) -> None:
    """Accounting is off: once the job leaves squeue (MinJobAge=2 s) the exit-code file answers."""
    ex = make_executor()
    la = make_launch("exit 4")
    assert isinstance(ex.submit(la), ExecStatus)
    _wait_until_slurm_forgets(slurm, ok(ex.status(la.request_id)).native_id)
    st = make_executor().status(la.request_id)
    assert isinstance(st, ExecStatus) and (st.phase, st.exit_code) == (ExecPhase.FAILED, 4)


def _wait_until_slurm_forgets(slurm: SlurmCluster, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True, text=True, env=slurm.env)
        if job_id not in r.stdout.split():
            return
        time.sleep(0.5)
    pytest.fail(f"Slurm kept job {job_id} in squeue for 30 s")


def test_cancel_gives_the_command_its_grace_period(make_executor: MakeExecutor, tmp_path: Path) -> None:
    """SIGTERM first; the command may clean up for up to grace_s. The clean-up takes 9 s, longer
    than plain scancel allows on the test cluster (KillWait=2: SIGKILL came within 4-9 s; with
    plain scancel this test fails). A command that ignores SIGTERM is stopped hard once the
    grace period is over."""
    ex = make_executor()
    started, mark = tmp_path / "started", tmp_path / "mark"
    la = make_launch(f"trap 'sleep 9; echo cleaned > {mark}; exit 3' TERM; touch {started}; sleep 120 & wait")
    ok(ex.submit(la))
    wait_file(started, 60)
    ok(ex.cancel(la.request_id, grace_s=15.0))
    done = wait_done(ex, la.request_id, 60)
    assert done.phase is ExecPhase.CANCELLED
    assert mark.read_text().strip() == "cleaned"

    stubborn_started = tmp_path / "stubborn"
    lb = make_launch(f"trap '' TERM; touch {stubborn_started}; sleep 120")
    ok(ex.submit(lb))
    wait_file(stubborn_started, 60)
    t0 = time.monotonic()
    ok(ex.cancel(lb.request_id, grace_s=2.0))
    done = wait_done(ex, lb.request_id, 60)  # polling observes, and the observer sends the hard stop
    assert done.phase is ExecPhase.CANCELLED
    assert time.monotonic() - t0 < 60


def test_job_cancelled_behind_our_back_fails_and_stays_failed(make_executor: MakeExecutor,
                                                              slurm: SlurmCluster) -> None:
    """An operator's scancel is not our cancel: the job failed, and it stays failed once Slurm forgets it."""
    ex = make_executor()
    la = make_launch("sleep 120")
    first = ok(ex.submit(la))
    wait_until(ex, la.request_id, lambda s: s.phase is ExecPhase.RUNNING, 30)
    subprocess.run(["scancel", first.native_id], env=slurm.env, check=True)
    st = wait_done(ex, la.request_id, 30)
    assert st.phase is ExecPhase.FAILED, st
    _wait_until_slurm_forgets(slurm, first.native_id)
    assert make_executor().status(la.request_id) == st


def test_job_whose_outcome_slurm_lost_is_reported_lost(make_executor: MakeExecutor, slurm: SlurmCluster) -> None:
    """The batch wrapper dies before writing its exit code and nobody looked before Slurm forgot."""
    ex = make_executor()
    la = make_launch("kill -9 $PPID")
    first = ok(ex.submit(la))
    _wait_until_slurm_forgets(slurm, first.native_id)
    st = ok(ex.status(la.request_id))
    assert st.phase is ExecPhase.LOST and "no longer knows" in st.reason


def test_unreachable_controller_is_a_retryable_error(tmp_path: Path, slurm: SlurmCluster) -> None:
    dead = tmp_path / "dead.conf"
    text = slurm.conf.read_text()
    port_line = next(ln for ln in text.splitlines() if ln.startswith("SlurmctldPort="))
    dead.write_text(text.replace(port_line, "SlurmctldPort=1").replace("MessageTimeout=10", "MessageTimeout=2"))
    ex = SlurmExecutor("down", SlurmConfig(workdir=tmp_path / "w", slurm_conf=dead, command_timeout_s=3))
    t0 = time.monotonic()
    result = ex.submit(make_launch("echo hi"))
    assert isinstance(result, ExecError) and result.code is ExecErrorCode.UNREACHABLE, result
    assert result.retryable
    listed = ex.list_active()
    assert isinstance(listed, ExecError) and listed.code is ExecErrorCode.UNREACHABLE
    assert ex.check()["reachable"] is False
    assert time.monotonic() - t0 < 20


def test_bad_launch_is_rejected_before_sbatch(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    for bad in (make_launch("true", request_id="has space.1"), make_launch("true", replicas=0), make_launch("true", cpus_per_replica=0)):
        r = ex.submit(bad)
        assert isinstance(r, ExecError) and r.code is ExecErrorCode.REJECTED, r


def test_squeue_rows_parse() -> None:
    text = ("17|yungu-a.1|RUNNING|1795357776|1795361376|None|n1|yungu:a.1\n"
            "18|yungu-b.1|PENDING|N/A|N/A|Resources||yungu:b|with|pipes\n"
            "19|yungu-c.1|FAILED|1795357776|1795357780|NonZeroExitCode|n[1-2]|\n")
    rows = parse_squeue(text)
    assert [(r.job_id, r.state) for r in rows] == [("17", "RUNNING"), ("18", "PENDING"), ("19", "FAILED")]
    assert rows[0].start is not None and rows[0].end is None  # a running job's %e is its limit, not an end
    assert rows[1].start is None and rows[1].reason == "Resources"
    assert rows[2].end is not None and rows[2].nodes == "n[1-2]"


def test_sacct_rows_parse_exit_codes_and_signals() -> None:
    text = ("21|yungu-a.1|COMPLETED|0:0|1795357776|1795357780|None\n"
            "22|yungu-b.1|FAILED|3:0|1795357776|1795357780|None\n"
            "23|yungu-c.1|CANCELLED by 0|0:15|1795357776|1795357780|None\n")
    rows = {r.job_id: r for r in parse_sacct(text)}
    assert (rows["21"].state, rows["21"].exit_code) == ("COMPLETED", 0)
    assert (rows["22"].state, rows["22"].exit_code) == ("FAILED", 3)
    assert (rows["23"].state, rows["23"].exit_code) == ("CANCELLED", 128 + 15)


def test_scontrol_and_wrapper_times_parse(tmp_path: Path) -> None:
    text = ("JobId=31 JobName=yungu-a.1 JobState=COMPLETED Reason=None StartTime=1795357776 "
            "EndTime=1795357780 Deadline=N/A\n")
    start, end = parse_scontrol_times(text)
    assert start is not None and end is not None and (end - start).total_seconds() == 4
    assert parse_scontrol_times("JobId=32 StartTime=Unknown EndTime=Unknown") == (None, None)
    f = tmp_path / "started_at"
    f.write_text("1795357776.123456789\n")
    got = _read_epoch(f)
    assert got is not None and got.timestamp() == 1795357776.123456
    f.write_text("1795357776.N\n")  # a date(1) without %N
    assert _read_epoch(f) is not None and _read_epoch(f).microsecond == 0  # type: ignore[union-attr]
    f.write_text("")
    assert _read_epoch(f) is None


def test_more_gpus_than_any_node_is_rejected_with_slurms_reason(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    la = make_launch("echo never", accelerators_per_replica=4)
    result = ex.submit(la)
    assert isinstance(result, ExecError) and result.code is ExecErrorCode.REJECTED, result
    assert "gres" in result.message.lower()  # Slurm's own words reach the operator
    assert not result.retryable
    active = ex.list_active()
    assert not isinstance(active, ExecError)
    assert la.request_id not in {s.request_id for s in active}


def test_check_reports_the_capacity_slurm_sees(make_executor: MakeExecutor) -> None:
    report = make_executor().check()
    assert report["reachable"] is True, report
    assert (report["nodes"], report["nodes_usable"], report["cpus"], report["gpus"]) == (2, 2, 8, 0)
    caps = make_executor().capabilities()
    assert caps.gangs and caps.logs and not caps.devices and not caps.energy_accounting
    assert "GRES" in caps.unsupported["devices"]

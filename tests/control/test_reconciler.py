"""The control loop, round by round on a mock clock: every transition it makes, and why.

First a table of what each executor answer does to each job state (``_transition_for``),
then deterministic ``run_once`` sequences: a job's whole life, preemption with the victim's
grace period, an unreachable site, unsupported features, the orphan sweep, fencing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.control.conftest import Rig, two_sites
from yungu.domain.job import Event, JobState
from yungu.ports.executor import ExecError, ExecErrorCode, ExecPhase, ExecStatus, Launch, ReplicaLaunch
from yungu.ports.store import Fence, Fenced, Transition
from yungu.testing import Script
from yungu.testing.world import T0, job, running

S = JobState
RUN = ExecStatus("r", ExecPhase.RUNNING)
OK = ExecStatus("r", ExecPhase.SUCCEEDED, 0)
BAD = ExecStatus("r", ExecPhase.FAILED, 3, "exit code 3")
STOPPED = ExecStatus("r", ExecPhase.CANCELLED, 143)
LOST = ExecStatus("r", ExecPhase.LOST, reason="node rebooted")
GONE = ExecError(ExecErrorCode.NOT_FOUND, "unknown request")
DOWN = ExecError(ExecErrorCode.UNREACHABLE, "no route to host")

# (state, cancel asked, the executor says) -> (event recorded or None, state after, attempt after)
TABLE = [
    (S.DISPATCHED, False, RUN, Event.START, S.RUNNING, 0),
    (S.RUNNING, False, RUN, None, S.RUNNING, 0),
    (S.DISPATCHED, False, OK, Event.SUCCEED, S.SUCCEEDED, 0),
    (S.RUNNING, False, OK, Event.SUCCEED, S.SUCCEEDED, 0),
    (S.RUNNING, False, BAD, Event.FAIL, S.FAILED, 0),
    (S.RUNNING, False, STOPPED, Event.CANCEL, S.CANCELLED, 0),
    (S.RUNNING, False, LOST, Event.REQUEUE, S.QUEUED, 1),
    (S.RUNNING, True, LOST, Event.CANCEL, S.CANCELLED, 0),
    (S.RUNNING, False, GONE, Event.REQUEUE, S.QUEUED, 1),
    (S.RUNNING, False, DOWN, None, S.RUNNING, 0),
    (S.RUNNING, False, None, None, S.RUNNING, 0),
    # a preempted attempt: requeued once the executor no longer runs it
    (S.PREEMPTED, False, RUN, None, S.PREEMPTED, 0),
    (S.PREEMPTED, False, STOPPED, Event.REQUEUE, S.QUEUED, 1),
    (S.PREEMPTED, False, BAD, Event.REQUEUE, S.QUEUED, 1),
    (S.PREEMPTED, False, LOST, Event.REQUEUE, S.QUEUED, 1),
    (S.PREEMPTED, False, GONE, Event.REQUEUE, S.QUEUED, 1),
    (S.PREEMPTED, False, OK, Event.SUCCEED, S.SUCCEEDED, 0),  # finished first: never run twice
    (S.PREEMPTED, True, STOPPED, Event.CANCEL, S.CANCELLED, 0),
    (S.PREEMPTED, False, DOWN, None, S.PREEMPTED, 0),
]


@pytest.mark.parametrize(("state", "cancel", "says", "event", "after", "attempt"), TABLE)
def test_what_each_executor_answer_does(make_rig: Callable[..., Rig], state: JobState, cancel: bool,
                                        says: object, event: Event | None, after: JobState, attempt: int) -> None:
    rig = make_rig()
    j = running(job("j", devices=2), rig.world, "gpu", state=state)
    if cancel:
        j = replace(j, cancel_requested=True)
    tr = rig.rec._transition_for(j, says, T0)  # type: ignore[arg-type]
    if event is None:
        assert tr is None
        return
    assert tr is not None and tr.event is event
    assert (tr.after.state, tr.after.attempt) == (after, attempt)
    if after is S.QUEUED:
        assert tr.after.allocation is None and tr.after.request_id != j.request_id


def test_a_job_from_submission_to_success(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    jid = rig.submit("hello", devices=2, script=Script(run_s=30, stdout=b"hi"))
    rig.round()
    assert rig.state(jid) is S.RUNNING  # admitted, placed, dispatched and started in one round
    rig.round(jump=29)
    assert rig.state(jid) is S.RUNNING
    rig.round(jump=1)
    done = rig.job(jid)
    assert (done.state, done.exit_code) == (S.SUCCEEDED, 0)
    assert [e[0] for e in rig.events(jid)] == ["admit", "place", "dispatch", "start", "succeed"]


def preemption_rig(make_rig: Callable[..., Rig], *, stop_s: float, run_s: float = 3600, **kw: object) -> tuple[Rig, str, str]:
    rig = make_rig(preempt_grace_s=10.0, **kw)
    low = rig.submit("low", devices=8, priority=0, script=Script(run_s=run_s, stop_s=stop_s))
    rig.round()
    assert rig.state(low) is S.RUNNING
    high = rig.submit("high", devices=8, priority=10, script=Script(run_s=60))
    rig.round(jump=1)
    return rig, low, high


def test_a_high_priority_job_preempts_and_the_victim_gets_its_grace(make_rig: Callable[..., Rig]) -> None:
    rig, low, high = preemption_rig(make_rig, stop_s=3)
    cluster = rig.clusters["fake"]
    assert rig.state(low) is S.PREEMPTED
    assert rig.job(low).reason.startswith(f"preempted for {high}:")
    assert rig.state(high) is S.QUEUED and "preempting to make room" in rig.job(high).reason
    assert cluster.cancels == [(f"{low}.0", 10.0)]  # SIGTERM now, SIGKILL after the grace
    rig.round(3, jump=0.5)  # the victim is still saving its state: nothing else is preempted
    assert rig.state(low) is S.PREEMPTED and rig.state(high) is S.QUEUED
    assert len(cluster.cancels) == 1
    rig.round(jump=2)  # it has stopped: requeued as a new attempt, the high job placed at once
    lj, hj = rig.job(low), rig.job(high)
    assert (lj.state, lj.attempt, lj.allocation) == (S.QUEUED, 1, None)
    assert hj.state is S.RUNNING and hj.allocation is not None and hj.allocation.devices == 8
    assert rig.events(low)[-2:] == [("preempt", "preempted", 0), ("requeue", "queued", 0)]
    assert cluster.submits == [f"{low}.0", f"{high}.0"]
    rig.round(jump=60)  # the high job ends; the victim runs again as attempt 1
    assert rig.state(high) is S.SUCCEEDED
    assert rig.state(low) is S.RUNNING and cluster.submits[-1] == f"{low}.1"


def test_a_victim_that_ignores_sigterm_is_killed_after_the_grace(make_rig: Callable[..., Rig]) -> None:
    rig, low, high = preemption_rig(make_rig, stop_s=600)
    rig.round(jump=9.9)
    assert rig.state(low) is S.PREEMPTED
    rig.round(jump=0.1)
    assert rig.state(low) is S.QUEUED and rig.state(high) is S.RUNNING


def test_a_victim_that_finishes_during_its_grace_succeeds_once(make_rig: Callable[..., Rig]) -> None:
    rig, low, high = preemption_rig(make_rig, stop_s=600, run_s=5)
    rig.round(jump=4)
    done = rig.job(low)
    assert (done.state, done.attempt) == (S.SUCCEEDED, 0)
    assert rig.state(high) is S.RUNNING


def test_a_job_can_ask_for_a_longer_grace_but_not_forever(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(preempt_grace_s=10.0, max_preempt_grace_s=60.0)
    for label, want in (("30", 30.0), ("86400", 60.0), ("soon", 10.0), ("-5", 10.0)):
        j = job("j", labels={"yungu.grace_s": label})
        assert rig.rec.grace_for(j) == want


def test_the_victim_keeps_its_checkpoint_dir_across_the_requeue(make_rig: Callable[..., Rig]) -> None:
    rig, low, high = preemption_rig(make_rig, stop_s=1, checkpoint_root="/ckpt")
    rig.round(jump=1)
    rig.round(jump=60)  # the high job is done; the victim runs again
    runs = rig.clusters["fake"].runs
    first, again = runs[f"{low}.0"].launch, runs[f"{low}.1"].launch
    assert first.checkpoint_dir == again.checkpoint_dir == f"/ckpt/{low}"
    assert runs[f"{high}.0"].launch.checkpoint_dir == f"/ckpt/{high}"


def test_an_unreachable_site_receives_no_new_placements(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(two_sites())
    a = rig.clusters["exec-a"]
    rig.round()  # the first round's probe finds both sites up
    a.unreachable = "controller down"
    first = rig.submit("first", devices=4)
    second = rig.submit("second", devices=4)
    rig.round()  # both placed on the cheap site; the first launch fails: the site is marked down
    assert rig.state(first) is S.SCHEDULED and "dispatch retrying" in rig.job(first).reason
    assert rig.state(second) is S.SCHEDULED  # never sent: it may go elsewhere
    rig.round(jump=0.1)
    rig.round(jump=0.1)
    s = rig.job(second)
    assert s.state is S.RUNNING and s.allocation and s.allocation.pool_id == "gpu-b" and s.attempt == 1
    assert [e[0] for e in rig.events(second)] == ["admit", "place", "unplace", "place", "dispatch", "start"]
    # The first launch may have got through ("unreachable" does not say): it waits for its
    # site and is sent again with the same request id, never placed a second time.
    f = rig.job(first)
    assert f.state is S.SCHEDULED and f.attempt == 0 and f.allocation and f.allocation.pool_id == "gpu-a"
    third = rig.submit("third", devices=4)
    rig.round(jump=0.1)
    t = rig.job(third)
    assert t.state is S.RUNNING and t.allocation and t.allocation.pool_id == "gpu-b"
    assert a.submits == [] and rig.rec.last_snapshot and not rig.rec.last_snapshot.pools["gpu-a"].available
    a.unreachable = None
    rig.round(jump=5)  # the probe finds it back; the first is launched as attempt 0
    rig.round(jump=0.1)
    assert rig.state(first) is S.RUNNING and a.submits == [f"{first}.0"]


def test_a_job_placed_by_an_earlier_leader_waits_for_its_site(make_rig: Callable[..., Rig]) -> None:
    """A paused or dead leader may have been launching it: placing it again could run it twice."""
    rig = make_rig(two_sites())
    jid = rig.submit("inherited", devices=4)
    j = rig.job(jid)
    placed = running(j.apply(Event.ADMIT, T0), rig.world, "gpu-a", state=S.QUEUED)
    rig.store.record([Transition(j, j.apply(Event.ADMIT, T0), Event.ADMIT),
                      Transition(j.apply(Event.ADMIT, T0), placed.apply(Event.PLACE, T0, allocation=placed.allocation),
                                 Event.PLACE)])
    rig.clusters["exec-a"].unreachable = "its lock is held by the old leader"
    rig.round(3, jump=1)
    got = rig.job(jid)
    assert got.state is S.SCHEDULED and got.attempt == 0 and got.allocation and got.allocation.pool_id == "gpu-a"


def test_a_site_found_down_by_the_probe_gets_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(two_sites())
    rig.clusters["exec-a"].unreachable = "controller down"
    jid = rig.submit("j", devices=4)
    rig.round()
    j = rig.job(jid)
    assert j.state is S.RUNNING and j.allocation and j.allocation.pool_id == "gpu-b" and j.attempt == 0


def test_a_job_pinned_to_an_unreachable_site_waits_with_the_reason(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(two_sites())
    rig.clusters["exec-a"].unreachable = "controller down"
    rig.rec.health.down("exec-a", "controller down")
    jid = rig.submit("pinned", devices=1, pool_id="gpu-a")
    rig.round(2, jump=0.5)
    j = rig.job(jid)
    assert j.state is S.QUEUED and "site site-a unreachable" in j.reason
    rig.clusters["exec-a"].unreachable = None
    rig.round(jump=5)  # the probe finds it back; the next round places the job
    rig.round(jump=0.1)
    assert rig.state(jid) is S.RUNNING


def test_an_orphan_left_on_a_site_that_comes_back_is_stopped(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(two_sites())
    a = rig.clusters["exec-a"]
    jid = rig.submit("ghost", devices=1, pool_id="gpu-a")
    rig.round()
    assert rig.state(jid) is S.RUNNING
    rig.rec.health.down("exec-a", "partition")  # the loop lost sight of the site ...
    j = rig.job(jid)  # ... and the store moved on to a new attempt; the engine still runs the old one
    rig.store.record([Transition(j, j.apply(Event.REQUEUE, rig.clock.now(), reason="test"), Event.REQUEUE)])
    a.unreachable = None
    rig.round(jump=5)  # probe: back up -> sweep: the old attempt is no one's: cancelled
    assert (f"{jid}.0", rig.rec.cancel_grace_s) in a.cancels


def test_jobs_needing_an_unsupported_feature_go_elsewhere(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(two_sites())
    rig.clusters["exec-a"].unsupported = {"devices": "no node declares GRES gpu"}
    rig.round()  # the first round probes capabilities
    gpu = rig.submit("gpu-job", devices=2)
    cpu = rig.submit("cpu-job", devices=0, pool_id="gpu-a")
    rig.round(jump=0.1)
    g = rig.job(gpu)
    assert g.allocation is not None and g.allocation.pool_id == "gpu-b"
    assert rig.state(cpu) is S.RUNNING


def test_a_plan_entry_for_a_job_that_moved_is_ignored(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    jid = rig.submit("x", devices=1)
    rig.round()
    assert rig.state(jid) is S.RUNNING
    # a round that decided on a stale view of the job changes nothing (compare-and-set)
    stale = rig.job(jid)
    before = replace(stale, state=S.QUEUED, allocation=None)
    tr = Transition(before, before.apply(Event.REJECT, T0, reason="x"), Event.REJECT)
    assert rig.store.record([tr]) == []
    assert rig.state(jid) is S.RUNNING


def test_a_write_under_a_stale_fencing_token_is_refused(make_rig: Callable[..., Rig]) -> None:
    from yungu.adapters.store.lease_store import SqlLeaseStore

    rig = make_rig()
    leases = SqlLeaseStore(rig.store.engine)
    old = leases.acquire("loop", "old-leader", ttl_s=-1.0)  # already ran out (julianday has ms resolution: 0 s may still be "now")
    assert old is not None and old.token == 1
    new = leases.acquire("loop", "new-leader", ttl_s=30.0)  # the old one ran out: taken over
    assert new is not None and new.token == 2
    jid = rig.submit("x", devices=1)
    rig.rec.store = rig.store.fenced(old.fence)  # the paused old leader wakes up and writes
    with pytest.raises(Fenced):
        rig.rec.run_once()
    assert rig.state(jid) is S.PENDING  # nothing it wanted was written
    rig.rec.store = rig.store.fenced(new.fence)
    rig.rec.wake()
    rig.rec.run_once()
    assert rig.state(jid) is S.RUNNING
    assert rig.store.fenced(Fence("loop", 2)).record([]) == []


def test_launches_carry_the_allocation(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    jid = rig.submit("l", devices=2, env={"A": "1"})
    rig.round()
    la: Launch = rig.rec.launch_for(rig.job(jid))
    assert la.request_id == f"{jid}.0" and la.env == {"A": "1"}
    assert la.replicas == (ReplicaLaunch(0, (0, 1)),) and la.accelerators_per_replica == 2


def test_a_job_resting_for_capacity_is_placed_as_soon_as_the_capacity_frees(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    first = rig.submit("first", devices=8, script=Script(run_s=10))  # estimated 1 h, really 10 s
    rig.round()
    second = rig.submit("second", devices=8)
    rig.round(jump=1)
    assert rig.state(second) is S.QUEUED and "reserved from" in rig.job(second).reason
    rig.round(jump=9)  # the first ends 50 min before its estimate: the second need not wait for it
    assert rig.state(first) is S.SUCCEEDED and rig.state(second) is S.RUNNING

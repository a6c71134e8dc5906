"""``apply_plan``: every field of a Plan has one handler, and each entry means one thing."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from yungu.domain.job import Event, JobState
from yungu.domain.status import Code, Status
from yungu.engines import apply as apply_mod
from yungu.engines.apply import HANDLERS, apply_plan, preempting, stopped
from yungu.engines.scheduler.green import GreenScheduler
from yungu.engines.scheduler.types import Defer, Infeasible, Plan, Preempt, Start
from yungu.testing.world import T0, catalogue, job, pool, running, snapshot, world

W = world(pool("gpu", devices=8))


def test_every_plan_field_has_exactly_one_handler() -> None:
    assert set(HANDLERS) == {f.name for f in fields(Plan)}


def test_a_plan_field_without_a_handler_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_mod, "HANDLERS", {k: v for k, v in HANDLERS.items() if k != "preempts"})
    with pytest.raises(TypeError, match="missing \\['preempts'\\]"):
        apply_plan(Plan(), {}, {}, T0)


def test_each_kind_of_entry() -> None:
    q = {j.id: j for j in (job("a", devices=2), job("b"), job("c"), job("d"))}
    victim = running(job("v", devices=8), W, "gpu")
    placed = running(job("a", devices=2), W, "gpu").allocation
    assert placed is not None
    plan = Plan(
        starts=(Start("a", placed, "cheapest"),),
        defers=(Defer("b", T0 + timedelta(hours=2), Status(Code.WAIT, ("greener later",))),
                Defer("c", None, Status(Code.UNSCHEDULABLE, ("no room",)))),
        preempts=(Preempt("v", "d", "priority job d needs gpu"),),
        infeasible=(Infeasible("d", Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ("too big",))),),
    )
    fx = apply_plan(plan, q, {"v": victim}, T0, grace=7.5, revisit_s=600)
    got = {(t.before.id, t.event, t.after.state) for t in fx.transitions}
    assert got == {("a", Event.PLACE, JobState.SCHEDULED), ("d", Event.REJECT, JobState.FAILED),
                   ("v", Event.PREEMPT, JobState.PREEMPTED)}
    assert [(s.job.id, s.grace_s, s.for_job_id) for s in fx.stops] == [("v", 7.5, "d")]
    assert fx.rest == {"b": T0 + timedelta(seconds=600)}  # capped: forecasts change
    assert fx.reasons == {"b": "waiting: greener later", "c": "waiting: no room"}
    assert fx.unknown == ()
    assert preempting([s.job for s in fx.stops]) == {"d": ["v"]}


def test_entries_for_unknown_jobs_are_reported_not_applied() -> None:
    plan = Plan(preempts=(Preempt("ghost", "x", "r"),), infeasible=(Infeasible("nope", Status(Code.ERROR)),))
    fx = apply_plan(plan, {}, {}, T0)
    assert fx.transitions == () and set(fx.unknown) == {"ghost", "nope"}


def test_a_victim_is_stopped_once_even_if_named_twice() -> None:
    victim = running(job("v", devices=8), W, "gpu")
    plan = Plan(preempts=(Preempt("v", "h1", "r"), Preempt("v", "h2", "r")))
    assert len(apply_plan(plan, {}, {"v": victim}, T0).stops) == 1
    already = apply_plan(plan, {}, {"v": victim.apply(Event.PREEMPT, T0)}, T0)
    assert already.stops == () and already.transitions == ()


def test_a_stopped_victim_is_requeued_as_a_new_attempt_unless_it_finished() -> None:
    v = running(job("v", devices=8), W, "gpu").apply(Event.PREEMPT, T0, reason="preempted for h: x")
    again = stopped(v, T0, exit_code=143, why="cancelled")
    assert (again.event, again.after.state, again.after.attempt, again.after.allocation) == (
        Event.REQUEUE, JobState.QUEUED, 1, None)
    done = stopped(v, T0, finished=True, exit_code=0)
    assert (done.event, done.after.state) == (Event.SUCCEED, JobState.SUCCEEDED)
    with pytest.raises(ValueError):
        stopped(running(job("r"), W, "gpu"), T0)


def test_the_real_scheduler_preempts_and_apply_plan_stops_the_victim() -> None:
    low = running(job("low", devices=8, priority=0), W, "gpu", started=T0 - timedelta(hours=1))
    high = job("high", devices=8, priority=10)
    snap = snapshot(W, pending=[high], running=[low])
    plan = GreenScheduler(catalogue()).schedule(snap)
    assert [p.job_id for p in plan.preempts] == ["low"]
    fx = apply_plan(plan, {"high": high}, {"low": low}, T0)
    assert [s.job.id for s in fx.stops] == ["low"] and fx.reasons["high"] == "waiting: preempting to make room"
    assert not any(t.before.id == "high" for t in fx.transitions)  # placed only once the devices are free

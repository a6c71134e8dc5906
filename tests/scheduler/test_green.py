"""Behaviour of the Yungu scheduler on small, hand-checkable worlds."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from tests.scheduler.helpers import (
    CAT,
    NOW,
    carbon_signal,
    empty_state,
    job,
    pool,
    running,
    site,
    snapshot,
    world,
)
from yungu.domain.errors import NotFound
from yungu.domain.job import Objective
from yungu.domain.status import Code
from yungu.engines.energy.signals import ForecastErrorModel
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig, TenantPolicy, explain
from yungu.engines.scheduler.types import PoolState

DIRTY, CLEAN = site("dirty"), site("clean")
PD, PC = pool("pd", "dirty", price="8"), pool("pc", "clean", price="12")
W = world([DIRTY, CLEAN], [PD, PC])
TRUTH = {"dirty": carbon_signal("dirty", [600.0] * 72), "clean": carbon_signal("clean", [20.0] * 72)}


def sched(**kw):
    return GreenScheduler(CAT, PolicyConfig(**kw))


def pools_of(plan):
    return {s.job_id: s.allocation.pool_id for s in plan.starts}


@pytest.mark.parametrize(
    ("objective", "expected"),
    [(Objective.GREEN, "pc"), (Objective.COST, "pd"), (Objective.BALANCED, "pc")],
)
def test_objective_picks_pool(objective, expected):
    plan = sched().schedule(snapshot(W, [job("j", 4, objective=objective)], truth=TRUTH))
    assert pools_of(plan) == {"j": expected}


def test_explicit_weights_override_preset():
    j = job("j", 4, objective=Objective.GREEN)
    j = j.__class__(**{**j.__dict__, "spec": j.spec.__class__(**{**j.spec.__dict__, "objective_weights": {"cost": 1.0}})})
    assert pools_of(sched().schedule(snapshot(W, [j], truth=TRUTH))) == {"j": "pd"}


def test_operator_weight_limits_clamp_tenant_choice():
    # The tenant asks for cost only; the operator insists carbon weighs at least 5.
    plan = sched(weight_limits={"carbon": (5.0, 10.0)}).schedule(snapshot(W, [job("j", 4, objective=Objective.COST)], truth=TRUTH))
    assert pools_of(plan) == {"j": "pc"}


def test_full_green_pool_falls_back_to_next_now():
    states = {"pc": PoolState("pc", ())}  # no free node
    plan = sched(max_wait_frac=0).schedule(snapshot(W, [job("j", 4, objective=Objective.GREEN)], truth=TRUTH, states=states))
    assert pools_of(plan) == {"j": "pd"}


def test_gang_all_or_nothing_and_best_fit():
    # 2 nodes x 8 devices; a gang of 3 x 8 cannot fit in one pool of 2 nodes -> infeasible with reasons.
    plan = sched().schedule(snapshot(W, [job("big", 8, replicas=3)], truth=TRUTH))
    assert [i.job_id for i in plan.infeasible] == ["big"]
    assert plan.infeasible[0].status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert any("gang of 3" in r for r in plan.infeasible[0].status.reasons)
    plan = sched().schedule(snapshot(W, [job("g", 8, replicas=2, objective=Objective.GREEN)], truth=TRUTH))
    (s,) = plan.starts
    assert sorted(r.node for r in s.allocation.replicas) == [0, 1]
    assert all(len(r.devices) == 8 for r in s.allocation.replicas)


def test_time_shift_defers_to_greener_forecast_hour_within_deadline():
    # No finish budget here: this is the mechanism itself (the budget is tested below).
    # Clean site only; carbon high now, low from hour 5.
    w = world([CLEAN], [PC])
    truth = {"clean": carbon_signal("clean", [500.0] * 5 + [50.0] * 40)}
    j = job("j", 1, dur=3600, deadline_h=20, objective=Objective.GREEN)
    plan = sched(finish_budget_frac=math.inf).schedule(snapshot(w, [j], truth=truth))
    assert not plan.starts
    (d,) = plan.defers
    assert d.status.code is Code.WAIT
    assert d.until == NOW + timedelta(hours=5)
    # Without a deadline the job is not shifted.
    plan = sched(finish_budget_frac=math.inf).schedule(snapshot(w, [job("k", 1, objective=Objective.GREEN)], truth=truth))
    assert pools_of(plan) == {"k": "pc"}


def test_urgent_deadline_job_starts_now_even_if_later_is_greener():
    w = world([CLEAN], [PC])
    truth = {"clean": carbon_signal("clean", [500.0] * 5 + [50.0] * 40)}
    j = job("j", 1, dur=3 * 3600, deadline_h=4.5, objective=Objective.GREEN)
    plan = sched().schedule(snapshot(w, [j], truth=truth))
    assert pools_of(plan) == {"j": "pc"}


def test_forecast_error_does_not_leak_truth():
    # With a large forecast error the decision may differ, but the defer is never past the last safe start.
    w = world([CLEAN], [PC])
    truth = {"clean": carbon_signal("clean", [float(100 + 50 * (h % 7)) for h in range(72)])}
    j = job("j", 1, dur=3600, deadline_h=12)
    for seed in range(5):
        plan = sched().schedule(snapshot(w, [j], truth=truth, error=ForecastErrorModel(seed=seed, sigma_1h=0.3)))
        for d in plan.defers:
            assert d.until is not None and d.until <= j.spec.deadline - timedelta(seconds=3600)


def test_easy_backfill_reservation_protects_big_job():
    w = world([CLEAN], [PC])
    # Node 0 busy for 1 h, node 1 busy for 10 h. A 2-node gang must wait; a 10-h 1-GPU job on
    # node 0 would delay it and must not start; a 30-min job may backfill.
    r0 = running("r0", PC, 0, tuple(range(8)), dur=3600, started=NOW)
    r1 = running("r1", PC, 1, tuple(range(8)), dur=36000, started=NOW)
    big = job("big", 8, replicas=1, dur=7200, submitted=NOW - timedelta(minutes=2))
    long = job("long", 4, dur=36000, submitted=NOW - timedelta(minutes=1))
    short = job("short", 4, dur=1800, submitted=NOW)
    # Free 4 devices on node 0 so that something could start there.
    r0 = running("r0", PC, 0, (0, 1, 2, 3), dur=3600, started=NOW)
    plan = sched(time_shift=False, max_wait_frac=0).schedule(
        snapshot(w, [big, long, short], running_jobs=[r0, r1], truth={"clean": carbon_signal("clean", [20.0] * 48)})
    )
    started = pools_of(plan)
    assert "big" not in started and "long" not in started and "short" in started
    reserved = {d.job_id: d for d in plan.defers}
    assert reserved["big"].until == NOW + timedelta(hours=1)


def test_preemption_prefers_least_lost_work():
    w = world([CLEAN], [pool("pc", "clean", nodes=1)])
    p = w.pools[0]
    old = running("old", p, 0, (0, 1, 2, 3), dur=36000, started=NOW - timedelta(hours=5))
    new = running("new", p, 0, (4, 5, 6, 7), dur=36000, started=NOW - timedelta(minutes=10))
    vip = job("vip", 4, priority=10)
    plan = sched().schedule(snapshot(w, [vip], running_jobs=[old, new]))
    assert [(x.job_id, x.for_job_id) for x in plan.preempts] == [("new", "vip")]
    # No preemption of equal priority work.
    plan = sched().schedule(snapshot(w, [job("peer", 4)], running_jobs=[old, new]))
    assert not plan.preempts


def test_quota_with_borrowing_limit():
    w = world([CLEAN], [PC])
    pol = {"tenants": {"t1": TenantPolicy(quota_units=8.0, borrow_units=0.0)}}
    busy = running("r", PC, 0, tuple(range(8)), tenant="t1", started=NOW)
    plan = sched(**pol).schedule(snapshot(w, [job("j", 1, tenant="t1")], running_jobs=[busy]))
    assert not plan.starts and "quota" in plan.defers[0].status.reasons[0]
    pol = {"tenants": {"t1": TenantPolicy(quota_units=8.0, borrow_units=4.0)}}
    plan = sched(**pol).schedule(snapshot(w, [job("j", 1, tenant="t1")], running_jobs=[busy]))
    assert pools_of(plan) == {"j": "pc"}


def test_weighted_fair_share_orders_light_tenant_first():
    w = world([CLEAN], [pool("pc", "clean", nodes=2)])
    p = w.pools[0]
    heavy = running("h", p, 0, tuple(range(8)), tenant="heavy", started=NOW)
    a = job("a", 8, tenant="heavy", submitted=NOW - timedelta(hours=1))
    b = job("b", 8, tenant="light", submitted=NOW)
    plan = sched(max_wait_frac=0).schedule(snapshot(w, [a, b], running_jobs=[heavy]))
    assert pools_of(plan) == {"b": "pc"}


def test_heterogeneous_throughput_shortens_runs():
    s = site("x")
    slow, fast = pool("slow", "x", acc="A100", price="10"), pool("fast", "x", acc="H100", price="10")
    w = world([s], [slow, fast])
    plan = sched().schedule(snapshot(w, [job("j", 1, objective=Objective.TIME)]))
    assert pools_of(plan) == {"j": "fast"}  # same price, 2.5x the throughput
    ex = explain(sched(), snapshot(w, [job("j", 1)]), "j")
    runs = {a.pool_id: a.run_s for a in ex.alternatives}
    assert runs["fast"] == pytest.approx(3600 / CAT.get("H100").relative_throughput)


def test_unreachable_site_waits_not_fails():
    w = world([CLEAN], [PC])
    st = empty_state(PC)
    plan = sched().schedule(snapshot(w, [job("j")], states={"pc": PoolState(st.pool_id, st.nodes, available=False)}))
    assert not plan.infeasible and plan.defers[0].status.code is Code.UNSCHEDULABLE


def test_explanation_lists_alternatives_with_reasons():
    ex = explain(sched(), snapshot(W, [job("j", 4, objective=Objective.GREEN)], truth=TRUTH), "j")
    assert ex.decision == "start"
    chosen = [a for a in ex.alternatives if a.chosen]
    assert [a.pool_id for a in chosen] == ["pc"]
    lost = next(a for a in ex.alternatives if a.pool_id == "pd")
    assert lost.carbon_kg > chosen[0].carbon_kg and any("carbon" in r for r in lost.why_lost)
    with pytest.raises(NotFound):
        explain(sched(), snapshot(W, []), "nope")


def test_flexible_job_without_deadline_shifts_within_its_implicit_window():
    # No finish budget here: this is the mechanism itself (the budget is tested below).
    # A 20-h green job: carbon 500 for 5 h, then 50. It may shift up to half its run after
    # submission (10 h) and does; a time-objective job starts now.
    w = world([CLEAN], [PC])
    truth = {"clean": carbon_signal("clean", [500.0] * 5 + [50.0] * 60)}
    plan = sched(finish_budget_frac=math.inf, flex_shift_frac=0.5).schedule(snapshot(w, [job("g", 1, dur=20 * 3600, objective=Objective.GREEN)], truth=truth))
    (d,) = plan.defers
    assert d.until == NOW + timedelta(hours=5)
    plan = sched(finish_budget_frac=math.inf, flex_shift_frac=0.5).schedule(snapshot(w, [job("t", 1, dur=20 * 3600, objective=Objective.TIME)], truth=truth))
    assert pools_of(plan) == {"t": "pc"}
    # The window counts from submission: a job submitted 8 h ago may only shift 2 h more,
    # one submitted 10 h ago not at all.
    old = job("o", 1, dur=20 * 3600, objective=Objective.GREEN, submitted=NOW - timedelta(hours=8))
    (d,) = sched(finish_budget_frac=math.inf, flex_shift_frac=0.5).schedule(snapshot(w, [old], truth=truth)).defers
    assert d.until == NOW + timedelta(hours=2)
    older = job("o", 1, dur=20 * 3600, objective=Objective.GREEN, submitted=NOW - timedelta(hours=10))
    assert pools_of(sched(finish_budget_frac=math.inf, flex_shift_frac=0.5).schedule(snapshot(w, [older], truth=truth))) == {"o": "pc"}
    # Off switch.
    plan = sched(finish_budget_frac=math.inf, flex_shift_frac=0).schedule(snapshot(w, [job("g", 1, dur=20 * 3600, objective=Objective.GREEN)], truth=truth))
    assert pools_of(plan) == {"g": "pc"}


def test_flexible_job_waits_longer_for_a_much_greener_full_pool():
    # No finish budget here: this is the mechanism itself (the budget is tested below).
    # The clean pool frees in 2 h (both nodes busy until then); the run is 4 h. A green job waits for it
    # (2 h <= flexible_wait_frac 0.5 x run), a balanced job (max_wait_frac 0.25 -> 1 h) starts
    # on the dirty pool.
    busy = [running(f"r{n}", PC, n, tuple(range(8)), dur=7200, started=NOW) for n in range(2)]
    for objective, waits in ((Objective.GREEN, True), (Objective.BALANCED, False)):
        j = job("j", 8, dur=4 * 3600, objective=objective)
        plan = sched(finish_budget_frac=math.inf, flex_shift_frac=0).schedule(snapshot(W, [j], running_jobs=busy, truth=TRUTH))
        if waits:
            (d,) = plan.defers
            assert d.until == NOW + timedelta(hours=2) and "waiting" in d.status.reasons[0]
        else:
            assert pools_of(plan) == {"j": "pd"}


def test_several_jobs_may_wait_for_one_greener_pool_in_turn():
    # No finish budget here: this is the mechanism itself (the budget is tested below).
    # The clean pool's node 0 frees in 2 h, node 1 in 3 h. Three 8-GPU green jobs of 4 h:
    # the first waits until 2 h, the second until 3 h (it also needs the devices promised to
    # the first), the third cannot fit there even then and starts on the dirty pool now.
    busy = [running("r0", PC, 0, tuple(range(8)), dur=7200, started=NOW),
            running("r1", PC, 1, tuple(range(8)), dur=3 * 3600, started=NOW)]
    jobs = [job(f"j{i}", 8, dur=4 * 3600, objective=Objective.GREEN, submitted=NOW - timedelta(minutes=3 - i))
            for i in range(3)]
    plan = sched(finish_budget_frac=math.inf, flex_shift_frac=0, flexible_wait_frac=1.0).schedule(snapshot(W, jobs, running_jobs=busy, truth=TRUTH))
    until = {d.job_id: d.until for d in plan.defers}
    assert until == {"j0": NOW + timedelta(hours=2), "j1": NOW + timedelta(hours=3)}
    assert pools_of(plan) == {"j2": "pd"}


def test_a_jobs_decision_does_not_depend_on_the_size_of_the_job_ranked_before_it():
    """Waits and time shifts are scored per unit (one device), like the shared rankings: a
    1-GPU job decides the same whether an 8-GPU job or a 1-GPU job built the ranking first."""
    s = site("a")
    p = pool("p", "a", nodes=4)
    w = world([s], [p])
    truth = {"a": carbon_signal("a", [500.0] * 2 + [420.0] * 60)}  # a small gain from 02:00

    def decisions(first_gpus: int) -> dict[str, str]:
        jobs = [job("first", first_gpus, dur=4 * 3600, objective=Objective.GREEN),
                job("x", 1, dur=4 * 3600, objective=Objective.GREEN)]
        plan = sched().schedule(snapshot(w, jobs, truth=truth))
        return {**{st.job_id: "start" for st in plan.starts}, **{d.job_id: "defer" for d in plan.defers}}

    alone = sched().schedule(snapshot(w, [job("x", 1, dur=4 * 3600, objective=Objective.GREEN)], truth=truth))
    expect = "start" if alone.starts else "defer"
    assert decisions(8)["x"] == decisions(1)["x"] == expect


def test_finish_budget_bounds_how_much_later_a_green_job_may_finish():
    """Carbon high now, low from hour 5: a 1-hour job with a 20-hour deadline shifts there
    without a budget, but a 10 % finish budget (about 6 minutes here) keeps it starting now,
    and a budget of 5x its run lets it go."""
    w = world([CLEAN], [PC])
    truth = {"clean": carbon_signal("clean", [500.0] * 5 + [50.0] * 40)}
    j = job("j", 1, dur=3600, deadline_h=20, objective=Objective.GREEN)
    assert pools_of(sched(finish_budget_frac=0.1).schedule(snapshot(w, [j], truth=truth))) == {"j": "pc"}
    (d,) = sched(finish_budget_frac=5.0).schedule(snapshot(w, [j], truth=truth)).defers
    assert d.until == NOW + timedelta(hours=5)
    # The budget counts from submission: a job that already waited 10 hours may shift.
    late = job("late", 1, dur=3600, deadline_h=30, objective=Objective.GREEN, submitted=NOW - timedelta(hours=10))
    (d,) = sched(finish_budget_frac=0.5).schedule(snapshot(w, [late], truth=truth)).defers
    assert d.until == NOW + timedelta(hours=5)


def test_finish_budget_lets_a_green_job_take_a_slower_greener_pool_only_within_it():
    """An H100 on a dirty grid (2.5x faster) and an A100 on a clean one, one node each: the
    A100 run takes 2.5x the H100 run, so a budget of 200 % allows it and 10 % does not."""
    fast = pool("fast", "dirty", nodes=1, acc="H100", price="20")
    slow = pool("slow", "clean", nodes=1, acc="A100", price="10")
    w = world([DIRTY, CLEAN], [fast, slow])
    j = job("j", 8, dur=4 * 3600, objective=Objective.GREEN)
    assert pools_of(sched(finish_budget_frac=2.0).schedule(snapshot(w, [j], truth=TRUTH))) == {"j": "slow"}
    assert pools_of(sched(finish_budget_frac=0.1).schedule(snapshot(w, [j], truth=TRUTH))) == {"j": "fast"}


def test_urgent_job_reserves_instead_of_preempting_when_a_pool_frees_in_time():
    """A deadline job is urgent but the running job ends in 15 minutes, before it must start:
    it reserves the pool rather than killing an hour of someone's work; if nothing frees in
    time it preempts (and with preempt_only_if_late off it preempts at once, as before)."""
    p = pool("p", "clean", nodes=1)
    w = world([CLEAN], [p])
    victim = running("v", p, 0, tuple(range(8)), dur=75 * 60, started=NOW - timedelta(hours=1))
    j = job("d", 8, dur=3600, deadline_h=2.5, objective=Objective.TIME)  # last safe start in 54 min: urgent
    plan = sched().schedule(snapshot(w, [j], running_jobs=[victim], truth=TRUTH))
    assert not plan.preempts and plan.defers[0].status.reasons[0].startswith("reserved from")
    long_victim = running("v", p, 0, tuple(range(8)), dur=10 * 3600, started=NOW - timedelta(hours=1))
    plan = sched().schedule(snapshot(w, [j], running_jobs=[long_victim], truth=TRUTH))
    assert [x.job_id for x in plan.preempts] == ["v"]
    plan = sched(preempt_only_if_late=False).schedule(snapshot(w, [j], running_jobs=[victim], truth=TRUTH))
    assert [x.job_id for x in plan.preempts] == ["v"]

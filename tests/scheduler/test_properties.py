"""Property tests: no plan over-commits a pool, splits a gang, or defers past a feasible deadline."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scheduler.helpers import CAT, NOW, carbon_signal, job, pool, running, site, snapshot, world
from yungu.domain.job import Objective
from yungu.engines.scheduler import estimate
from yungu.engines.scheduler.baselines import BASELINES
from yungu.engines.scheduler.capacity import Free, devices, earliest_fit, running_by_pool, throughput
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig
from yungu.engines.scheduler.outlook import Curve
from yungu.engines.scheduler.round import Round
from yungu.engines.scheduler.steps import filter_pools, rank_now

SITES = [site("a"), site("b"), site("c")]
ACCS = ["A100", "H100", "A800"]


@st.composite
def scenarios(draw):
    pools = []
    for i in range(draw(st.integers(1, 4))):
        pools.append(pool(f"p{i}", SITES[i % 3].id, nodes=draw(st.integers(1, 3)), per=draw(st.sampled_from([4, 8])),
                          acc=draw(st.sampled_from(ACCS)), price=str(draw(st.integers(5, 30)))))
    w = world(SITES, pools)
    run = []
    for i, p in enumerate(pools):
        if draw(st.booleans()):
            k = draw(st.integers(1, p.accelerators_per_node))
            run.append(running(f"r{i}", p, 0, tuple(range(k)), dur=draw(st.integers(600, 20000)),
                               started=NOW - timedelta(seconds=draw(st.integers(0, 5000))),
                               priority=draw(st.integers(-1, 1))))
    pending = []
    for i in range(draw(st.integers(1, 12))):
        dl = draw(st.one_of(st.none(), st.floats(1.5, 30)))
        pending.append(job(
            f"j{i}", draw(st.sampled_from([1, 2, 4, 8])), draw(st.integers(1, 3)),
            dur=draw(st.integers(600, 4 * 3600)), deadline_h=dl,
            objective=draw(st.sampled_from(list(Objective))), priority=draw(st.integers(-1, 2)),
            tenant=draw(st.sampled_from(["t1", "t2"])), submitted=NOW - timedelta(seconds=draw(st.integers(0, 3000))),
        ))
    curves = {s.id: carbon_signal(s.id, [draw(st.floats(10, 800)) for _ in range(8)] * 9) for s in SITES}
    return w, pending, run, curves


def check_plan(snap, plan):
    # 1. no device handed out twice or beyond what is free; no node over CPUs/memory
    used: dict[tuple[str, int], list[int]] = {}
    cpu: dict[tuple[str, int], int] = {}
    for s in plan.starts:
        for rp in s.allocation.replicas:
            used.setdefault((s.allocation.pool_id, rp.node), []).extend(rp.devices)
            cpu[(s.allocation.pool_id, rp.node)] = cpu.get((s.allocation.pool_id, rp.node), 0) + s.allocation.cpus_per_replica
    for (pid, node), devs in used.items():
        free = snap.pools[pid].nodes[node]
        assert len(devs) == len(set(devs)), "device given twice"
        assert set(devs) <= set(free.devices), "device not free"
        assert cpu[(pid, node)] <= free.cpus
    # 2. gangs whole: every replica placed, each with the requested devices
    by = {j.id: j for j in snap.pending}
    for s in plan.starts:
        j = by[s.job_id]
        assert len(s.allocation.replicas) == j.spec.replicas
        assert all(len(r.devices) == j.spec.resources.accelerators for r in s.allocation.replicas)
    # 3. each job appears in at most one decision
    ids = [s.job_id for s in plan.starts] + [d.job_id for d in plan.defers] + [i.job_id for i in plan.infeasible]
    assert len(ids) == len(set(ids))
    # 4. never deferred past the last start that still meets a deadline feasible now
    fastest = max(throughput(CAT, p) for p in snap.world.pools)
    for d in plan.defers:
        j = by[d.job_id]
        if j.spec.deadline is None or d.until is None:
            continue
        run = j.spec.estimated_duration_s / fastest
        if snap.now + timedelta(seconds=run) <= j.spec.deadline and d.until > snap.now:
            assert d.until + timedelta(seconds=run) <= j.spec.deadline or d.status.reasons[0].startswith("reserved")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_green_plans_are_sound(sc):
    w, pending, run, curves = sc
    snap = snapshot(w, pending, running_jobs=run, truth=curves)
    check_plan(snap, GreenScheduler(CAT, PolicyConfig()).schedule(snap))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_baseline_plans_are_sound(sc):
    w, pending, run, curves = sc
    snap = snapshot(w, pending, running_jobs=run, truth=curves)
    for cls in BASELINES.values():
        check_plan(snap, cls(CAT).schedule(snap))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_time_shift_never_targets_past_latest_safe_start(sc):
    w, pending, run, curves = sc
    snap = snapshot(w, pending, running_jobs=run, truth=curves)
    plan = GreenScheduler(CAT, PolicyConfig()).schedule(snap)
    by = {j.id: j for j in pending}
    for d in plan.defers:
        if d.status.reasons and d.status.reasons[0].startswith("forecast better"):
            j = by[d.job_id]
            slowest = min(throughput(CAT, p) for p in w.pools)
            if j.spec.deadline is None:
                # an implicit window: flexible objective, a long enough run, half the run after submission
                pol = PolicyConfig()
                assert j.spec.objective in (Objective.GREEN, Objective.COST)
                run = j.spec.estimated_duration_s / slowest
                assert run >= pol.flex_min_run_s
                assert d.until <= j.submitted_at + timedelta(seconds=pol.flex_shift_frac * run)
                continue
            # the target start leaves the run (on the pool chosen) plus the safety margin
            assert d.until <= j.spec.deadline - timedelta(seconds=j.spec.estimated_duration_s / max(slowest, 2.5) + 1800)


def _earliest_by_replacing(job, free, running, now):
    """Reference: release running jobs one by one and re-place the whole gang each time."""
    if free.find(job) is not None:
        return now, free.free_devices - devices(job)
    trial = free.copy()
    trial.available = True
    for r in running:
        trial.release(r.job.allocation)
        if trial.find(job) is not None:
            return r.expected_end, trial.free_devices - devices(job)
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([1, 2, 4, 8]), st.integers(1, 3))
def test_earliest_fit_matches_re_placing_the_gang(sc, gpus, replicas):
    """The slot-counting EASY shadow time equals re-placing the gang after every release."""
    w, _, run, _ = sc
    snap = snapshot(w, [], running_jobs=run)
    pools = {p.id: p for p in w.pools}
    by_pool = running_by_pool(run, pools, CAT, NOW)
    j = job("g", gpus, replicas)
    for pid, state in snap.pools.items():
        free = Free(state)
        rs = by_pool.get(pid, [])
        assert earliest_fit(j, free, rs, NOW) == _earliest_by_replacing(j, free, rs, NOW)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 900), min_size=0, max_size=30),
    st.integers(-5, 40),
    st.integers(1, 30),
    st.floats(60, 40 * 3600),
)
def test_vectorised_curve_means_match_scalar_means(values, offset_h, count, run_s):
    """``Curve.means_from`` (used by best_start) agrees with the scalar ``mean`` everywhere,
    including before the curve, past its end (persistence) and for an empty curve."""
    curve = Curve(NOW, tuple(values), 123.0)
    t0 = NOW + timedelta(hours=offset_h, minutes=7)
    got = curve.means_from(t0, count, run_s)
    want = [curve.mean(t0 + timedelta(hours=k), run_s) for k in range(count)]
    assert np.allclose(got, want, rtol=1e-9, atol=1e-6)
    assert np.allclose(curve.means_list(t0, count, run_s), want, rtol=1e-9, atol=1e-6)


@st.composite
def priced_scenarios(draw):
    """Scenarios whose sites also have price curves, negative hours included (as day-ahead
    markets do), so the score floor's energy-cost bound is exercised."""
    w, pending, run, _ = draw(scenarios())
    curves = {
        s.id: carbon_signal(
            s.id,
            [draw(st.floats(10, 800)) for _ in range(8)] * 9,
            price=[draw(st.floats(-0.3, 2.0)) for _ in range(6)] * 12,
        )
        for s in SITES
    }
    return w, pending, run, curves


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_scenarios(), st.integers(0, 30 * 3600))
def test_score_floor_never_exceeds_a_real_score(sc, wait_s):
    """The floor used to skip waits and time shifts unestimated is a true lower bound: no option
    on that pool starting ``wait_s`` or later scores below it."""
    w, pending, run, curves = sc
    snap = snapshot(w, pending, running_jobs=run, truth=curves)
    sched = GreenScheduler(CAT, PolicyConfig())
    rd = Round(sched, snap)
    for j in pending:
        pools, _ = filter_pools(rd, j)
        if not pools:
            continue
        ref_s = float(j.spec.estimated_duration_s or 3600)
        ranking = rank_now(rd, j, pools, ref_s)
        wts = rd.weights(j)
        for sc_ in ranking:
            p = rd.pools[sc_.option.pool_id]
            run_s = ref_s / rd.tput[p.id]
            floor = estimate.wait_floor(rd, j, sc_, float(wait_s), run_s, wts, ranking.ref)
            for extra in (0, 1800, 5400, 20000):
                opt = estimate.option(rd, j, p, NOW + timedelta(seconds=wait_s + extra), ref_s, False)
                assert estimate.score(rd, j, opt, ranking.ref, wts).score >= floor - 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_scenarios())
def test_skipping_hopeless_options_never_changes_the_plan(sc):
    """With the floor switched off (every wait and shift estimated) the plan is the same."""
    from unittest.mock import patch

    w, pending, run, curves = sc
    snap = snapshot(w, pending, running_jobs=run, truth=curves)
    with_floor = GreenScheduler(CAT, PolicyConfig()).schedule(snap)
    with patch.object(estimate, "wait_floor", lambda *a, **k: float("-inf")):
        without = GreenScheduler(CAT, PolicyConfig()).schedule(snap)
    assert with_floor == without


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([1, 2, 4, 8]), st.integers(1, 3), st.integers(0, 16))
def test_lazy_timeline_answers_as_the_full_timeline(sc, gpus, replicas, claimed):
    """The timeline the round builds as far as it reads gives the same shadow times."""
    from yungu.engines.scheduler.capacity import Timeline, first_fit_time, fit_timeline

    w, _, run, _ = sc
    snap = snapshot(w, [], running_jobs=run)
    by_pool = running_by_pool(run, {p.id: p for p in w.pools}, CAT, NOW)
    j = job("g", gpus, replicas)
    for pid, state in snap.pools.items():
        rs = by_pool.get(pid, [])
        lazy = Timeline(j, Free(state), rs)
        for c in (claimed, 0, claimed // 2):  # several questions of one timeline, in any order
            assert lazy.first_fit(j, NOW, c) == first_fit_time(j, fit_timeline(j, Free(state), rs, NOW), c)

"""An incremental round (with a carry) makes exactly the plan of a round from scratch.

Sequences of rounds as the control loop sees them: the plan applied (starts run, victims
requeue), time passing (within a ranking slot, across slots and forecast hours), jobs ending
and arriving, sites becoming unreachable and reachable again, forecasts re-issued. At every
round the scheduler with a carry and a fresh scheduler without one must agree; the carry is
also exercised across a change of world and of scheduler.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_data
from tests.scheduler.helpers import CAT, NOW, carbon_signal, job, pool, running, site, state_with, world
from yungu.domain.job import Job, JobState, Objective
from yungu.engines.energy.signals import ForecastErrorModel, floor_hour
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig, TenantPolicy
from yungu.engines.scheduler.outlook import build_signals
from yungu.engines.scheduler.types import Plan, PoolState, Snapshot

SITES = [site("a", price="0.4"), site("b", price="0.9", green=0.3), site("c", price="0.6")]
ACCS = ["A100", "H100", "A800"]


class Live:
    """A small federation that lives on from round to round (the control loop's view)."""

    def __init__(self, seed: int, n_pools: int, policy: PolicyConfig) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.pools = [pool(f"p{i}", SITES[i % 3].id, nodes=rng.randint(1, 4), per=rng.choice([4, 8]),
                           acc=rng.choice(ACCS), price=str(rng.randint(3, 30))) for i in range(n_pools)]
        self.world = world(SITES, self.pools)
        self.now = NOW + timedelta(minutes=rng.randint(0, 59))
        self.pending: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self.down: set[str] = set()
        self.truth = {s.id: carbon_signal(s.id, [rng.uniform(10, 800) for _ in range(24 * 4)],
                                          price=[rng.uniform(-0.2, 2.0) for _ in range(24 * 4)]) for s in SITES}
        self.noise = 0
        self.signals: dict[str, object] = {}
        self.signals_hour = None
        self.n = 0
        self.states: dict[str, PoolState] = {}
        for p in self.pools:  # some work already running
            for node in range(p.nodes):
                if rng.random() < 0.5:
                    k = rng.randint(1, p.accelerators_per_node)
                    started = None if rng.random() < 0.1 else self.now - timedelta(seconds=rng.randint(0, 5000))
                    j = running(f"r{self.n}", p, node, tuple(range(k)), dur=rng.randint(600, 30000), started=started,
                                priority=rng.choice([-1, 0, 0, 1]), tenant=rng.choice(["t1", "t2"]),
                                deadline_h=rng.choice([None, None, 12.0]))
                    self.running[j.id] = j
                    self.n += 1
            self.restate(p.id)
        self.arrive(rng.randint(3, 25))

    def restate(self, pid: str) -> None:
        p = next(x for x in self.pools if x.id == pid)
        st = state_with(p, [j for j in self.running.values() if j.allocation.pool_id == pid])
        self.states[pid] = replace(st, available=pid not in self.down)

    def arrive(self, k: int) -> None:
        rng = self.rng
        for _ in range(k):
            j = job(f"j{self.n}", rng.choice([0, 1, 1, 2, 4, 8]), rng.choice([1, 1, 1, 2, 3]),
                    dur=rng.randint(300, 12 * 3600), deadline_h=rng.choice([None, None, rng.uniform(0.5, 30)]),
                    objective=rng.choice(list(Objective)), priority=rng.choice([-1, 0, 0, 0, 1, 2]),
                    tenant=rng.choice(["t1", "t2", "t3"]), submitted=self.now,
                    home=rng.choice([None, None, "a", "b"]), types=rng.choice([(), (), ("H100", "A100")]))
            self.pending[j.id] = j
            self.n += 1

    def snapshot(self) -> Snapshot:
        hour = floor_hour(self.now)
        if hour != self.signals_hour:  # re-issued every hour, as the live loop does
            self.signals_hour = hour
            self.signals = build_signals(self.truth, hour, ForecastErrorModel(seed=self.noise))
        return Snapshot(self.now, self.world, CAT, dict(self.states), tuple(self.pending.values()),
                        tuple(self.running.values()), self.signals)

    def step(self, plan: Plan, dt_s: float, draw: random.Random) -> None:
        touched: set[str] = set()
        for pre in plan.preempts:
            v = self.running.pop(pre.job_id)
            touched.add(v.allocation.pool_id)
            self.pending[v.id] = replace(v, state=JobState.QUEUED, attempt=v.attempt + 1, allocation=None, started_at=None)
        for s in plan.starts:
            j = self.pending.pop(s.job_id)
            self.running[j.id] = replace(j, state=JobState.RUNNING, allocation=s.allocation, started_at=self.now)
            touched.add(s.allocation.pool_id)
        for i in plan.infeasible:
            self.pending.pop(i.job_id)
        self.now += timedelta(seconds=dt_s)
        for j in list(self.running.values()):
            # most end at their estimate; some earlier, some overrun (estimates are not exact)
            est = (j.started_at or self.now) + timedelta(seconds=j.spec.estimated_duration_s)
            if (est <= self.now and draw.random() < 0.8) or draw.random() < 0.05:
                del self.running[j.id]
                touched.add(j.allocation.pool_id)
        if draw.random() < 0.15:  # a site's executor goes away or comes back
            pid = draw.choice(self.pools).id
            self.down ^= {pid}
            touched.add(pid)
        if draw.random() < 0.1:  # a forecast revision within the hour
            self.noise += 1
            self.signals = build_signals(self.truth, floor_hour(self.now), ForecastErrorModel(seed=self.noise))
        for pid in touched:
            self.restate(pid)
        self.arrive(draw.randint(0, 6))


def check_sequence(seed: int, n_pools: int, steps: list[float], policy: PolicyConfig) -> int:
    live = Live(seed, n_pools, policy)
    inc = GreenScheduler(CAT, policy)
    carry = inc.new_carry()
    draw = random.Random(seed + 1)
    started = 0
    for r, dt in enumerate([*steps, 0.0]):
        snap = live.snapshot()
        got = inc.schedule(snap, carry=carry)
        want = GreenScheduler(CAT, policy).schedule(snap)
        assert got == want, f"round {r} at {snap.now}: incremental plan differs from scratch"
        started += len(got.starts)
        live.step(got, dt, draw)
    return started


POLICIES = [
    PolicyConfig(),
    PolicyConfig(rank_slot_s=0),
    PolicyConfig(tenants={"t1": TenantPolicy(2.0, 30.0, 10.0), "t2": TenantPolicy(0.5)}),
    PolicyConfig(latency_ms={("a", "b"): 20.0}, flex_shift_frac=0.5, max_wait_frac=0.5),
    PolicyConfig(time_shift=False, preemption=False),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 10_000),
    st.integers(1, 6),
    st.lists(st.sampled_from([0.0, 30.0, 60.0, 299.0, 600.0, 901.0, 1800.0, 3600.0, 7300.0]), min_size=3, max_size=12),
    st.sampled_from(range(len(POLICIES))),
)
def test_incremental_rounds_plan_exactly_as_rounds_from_scratch(seed, n_pools, steps, which):
    check_sequence(seed, n_pools, steps, POLICIES[which])


def test_a_carry_survives_a_new_world_and_another_scheduler():
    a, b = Live(1, 3, PolicyConfig()), Live(2, 4, PolicyConfig())
    s1, s2 = GreenScheduler(CAT, PolicyConfig()), GreenScheduler(CAT, PolicyConfig(shift_gain=0.2))
    carry = s1.new_carry()
    for sched, live in ((s1, a), (s1, b), (s2, b), (s1, a)):
        snap = live.snapshot()
        assert sched.schedule(snap, carry=carry) == GreenScheduler(CAT, sched.policy).schedule(snap)


def test_carry_skips_work():
    """Not vacuous: the second of two identical rounds reuses the first one's rankings."""
    live = Live(3, 4, PolicyConfig())
    s = GreenScheduler(CAT, PolicyConfig())
    carry = s.new_carry()
    snap = live.snapshot()
    s.schedule(snap, carry=carry)
    ranks = carry.ranks
    assert ranks is not None and ranks.rank
    s.schedule(replace(snap, now=snap.now + timedelta(seconds=1)), carry=carry)
    if (snap.now + timedelta(seconds=1)).minute // 15 == snap.now.minute // 15:
        assert carry.ranks is ranks


class Twin:
    """Both schedulers on every round of a replay; they must agree."""

    name = "twin"

    def __init__(self, policy: PolicyConfig) -> None:
        self.inc, self.scratch = GreenScheduler(CAT, policy), GreenScheduler(CAT, policy)
        self.carry = self.inc.new_carry()
        self.rounds = 0

    def schedule(self, snap: Snapshot) -> Plan:
        got = self.inc.schedule(snap, carry=self.carry)
        assert got == self.scratch.schedule(snap), f"plans differ at {snap.now}"
        self.rounds += 1
        return got


@pytest.mark.slow
def test_incremental_rounds_plan_as_from_scratch_on_an_itp_slice(tmp_path):
    from tests.scheduler.test_kernel_equivalence import ITP_SLICE
    from yungu.adapters.traces.scenario import load_scenario
    from yungu.engines.sim.core import simulate

    itp = shared_data("traces", "microsoft-itp-2021")
    energy = shared_data("energy")
    p = tmp_path / "slice.toml"
    p.write_text(ITP_SLICE.format(itp=itp, energy=energy))
    sc = load_scenario(p).scenario
    objs = list(Objective)
    jobs = []
    for j in sc.jobs:
        h = hashlib.sha256(j.id.encode()).digest()
        jobs.append(replace(j, objective=objs[h[0] % 4], priority=1 if h[1] < 20 else 0))
    twin = Twin(PolicyConfig())
    res = simulate(replace(sc, jobs=tuple(jobs)), twin)
    assert twin.rounds > 100 and res.preemptions > 0

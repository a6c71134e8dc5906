"""The split kernel makes exactly the plans of the kernel before the split.

``tests/scheduler/legacy/green_v3.py`` is a frozen copy of ``green.py`` as it was before it was
split into named steps (issue 11, item 7). These tests run both on the same snapshots, random
ones (hypothesis) and every round of a replay of a slice of the ITP trace, and require equal
plans: same starts on the same devices, same defers with the same reasons, same preemptions.

Intentional changes made after the split are applied to the frozen kernel here, each as a
small documented patch (:class:`PatchedRound`), so the comparison keeps checking that the
restructured code computes what the old code computed:

1. *Unit options*: every scored option is estimated for one unit of the job (one device),
   like the rankings' normalisers; the old kernel estimated a job's own waits and shifts at
   its full size against the normaliser of whichever job built the ranking first, so a
   1-GPU job after an 8-GPU one saw its cost and carbon terms divided by 8.

Later changes that are policy choices have a knob, set to the old behaviour here (``OLD``):
``rank_slot_s`` (rankings read the forecast from a 15-min slot), ``finish_budget_frac`` (a
job's finish budget), ``preempt_only_if_late`` (urgency preempts only when nothing frees in
time; deadline jobs reserve where they finish first).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_data
from tests.scheduler.helpers import CAT, NOW, carbon_signal, job, pool, running, site, snapshot, world
from tests.scheduler.legacy import green_v3 as legacy
from yungu.domain.job import Job, Objective
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig, TenantPolicy
from yungu.engines.scheduler.types import Plan, Snapshot

SITES = [site("a", price="0.4"), site("b", price="0.9", green=0.3), site("c", price="0.6")]
ACCS = ["A100", "H100", "A800", "L40S"]


def _unit(job: Job) -> Job:
    """The job as one unit: one device (or one CPU of one replica for a CPU-only job)."""
    r = job.spec.resources
    return replace(job, spec=replace(job.spec, resources=replace(r, accelerators=min(r.accelerators, 1), cpus=1), replicas=1))


_OPTION, _FLOOR = legacy._Round.option, legacy._Round.wait_floor


class PatchedRound(legacy._Round):
    """The frozen kernel with the changes listed in the module docstring."""

    def option(self, job, *a, **kw):  # type: ignore[no-untyped-def]
        return _OPTION(self, _unit(job), *a, **kw)  # 1: scored options are per unit

    def wait_floor(self, job, *a, **kw):  # type: ignore[no-untyped-def]
        return _FLOOR(self, _unit(job), *a, **kw)  # 1: so is their floor

    def start_note(self, job, pool, ref_s, chosen, among):  # type: ignore[no-untyped-def]
        # 1: the note still reports the whole job's estimate
        o = _OPTION(self, job, pool, self.now, ref_s, True, with_deadline=False,
                    means=self.bucket_means(pool, legacy._bucket(ref_s)))
        return (
            f"{pool.id}: score {chosen.score:.3f} (best of {among}), est. {o.cost_cny:.2f} CNY, "
            f"{o.carbon_g / 1000:.2f} kgCO2e, green {o.green_share:.0%}"
        )


@pytest.fixture(autouse=True)
def _patched_legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacy, "_Round", PatchedRound)


OLD: dict[str, object] = {"rank_slot_s": 0, "finish_budget_frac": math.inf, "preempt_only_if_late": False}


def both(**policy: object) -> tuple[GreenScheduler, legacy.GreenScheduler]:
    tenants = policy.pop("tenants", {})
    new = GreenScheduler(CAT, PolicyConfig(tenants=tenants, **OLD, **policy))  # type: ignore[arg-type]
    old_tenants = {k: legacy.TenantPolicy(v.weight, v.quota_units, v.borrow_units) for k, v in tenants.items()}  # type: ignore[attr-defined]
    old = legacy.GreenScheduler(CAT, legacy.PolicyConfig(tenants=old_tenants, **policy))  # type: ignore[arg-type]
    return new, old


@st.composite
def worlds_and_queues(draw):
    pools = []
    for i in range(draw(st.integers(1, 6))):
        pools.append(pool(f"p{i}", SITES[i % 3].id, nodes=draw(st.integers(1, 4)), per=draw(st.sampled_from([4, 8])),
                          acc=draw(st.sampled_from(ACCS)), price=str(draw(st.integers(3, 30)))))
    w = world(SITES, pools)
    run = []
    for i, p in enumerate(pools):
        for n in range(p.nodes):
            if draw(st.booleans()):
                k = draw(st.integers(1, p.accelerators_per_node))
                run.append(running(f"r{i}-{n}", p, n, tuple(range(k)), dur=draw(st.integers(600, 30000)),
                                   started=NOW - timedelta(seconds=draw(st.integers(0, 5000))),
                                   priority=draw(st.integers(-1, 1)), tenant=draw(st.sampled_from(["t1", "t2", "t3"])),
                                   deadline_h=draw(st.one_of(st.none(), st.floats(2, 20)))))
    pending = []
    for i in range(draw(st.integers(1, 25))):
        extra = draw(st.sampled_from(["", "", "", "home", "types", "price", "window", "pin", "weights"]))
        j = job(
            f"j{i}", draw(st.sampled_from([0, 1, 2, 4, 8])), draw(st.integers(1, 3)),
            dur=draw(st.integers(300, 12 * 3600)), deadline_h=draw(st.one_of(st.none(), st.floats(0.5, 40))),
            objective=draw(st.sampled_from(list(Objective))), priority=draw(st.integers(-1, 2)),
            tenant=draw(st.sampled_from(["t1", "t2", "t3"])),
            submitted=NOW - timedelta(seconds=draw(st.integers(0, 20000))),
            home=draw(st.sampled_from(["a", "b", "c"])) if extra == "home" else None,
            types=("H100", "A100") if extra == "types" else (),
            max_price=str(draw(st.integers(5, 60))) if extra == "price" else None,
        )
        if extra == "window":
            j = replace(j, spec=replace(j.spec, earliest_start=NOW + timedelta(minutes=draw(st.integers(-60, 120)))))
        if extra == "pin":
            j = replace(j, spec=replace(j.spec, pool=draw(st.sampled_from([p.id for p in pools]))))
        if extra == "weights":
            j = replace(j, spec=replace(j.spec, objective_weights={"carbon": draw(st.floats(0, 2)), "wait": draw(st.floats(0, 1))}))
        pending.append(j)
    curves = {
        s.id: carbon_signal(s.id, [draw(st.floats(10, 800)) for _ in range(8)] * 9,
                            price=[draw(st.floats(-0.3, 2.0)) for _ in range(6)] * 12 if draw(st.booleans()) else None)
        for s in SITES
    }
    policy: dict[str, object] = {}
    if draw(st.booleans()):
        policy["tenants"] = {"t1": TenantPolicy(2.0, float(draw(st.integers(0, 40))), float(draw(st.integers(0, 20)))),
                             "t2": TenantPolicy(0.5)}
    if draw(st.booleans()):
        policy["latency_ms"] = {("a", "b"): 20.0, ("b", "c"): 200.0}
    policy.update(draw(st.sampled_from([{}, {}, {"time_shift": False}, {"backfill": False}, {"preemption": False},
                                        {"max_wait_frac": 0.0, "flexible_wait_frac": 0.0}, {"flex_shift_frac": 0.5}])))
    return snapshot(w, pending, running_jobs=run, truth=curves), policy


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds_and_queues())
def test_split_kernel_plans_equal_the_frozen_kernel_on_random_snapshots(case: tuple[Snapshot, dict[str, object]]) -> None:
    snap, policy = case
    new, old = both(**dict(policy))
    assert new.schedule(snap) == old.schedule(snap)


def test_the_comparison_can_fail() -> None:
    """A changed knob changes the plan: the equality above is not vacuous."""
    p = pool("p0", "a", nodes=1)
    snap = snapshot(world(SITES, [p]), [job("x", 8)], running_jobs=[running("r", p, 0, tuple(range(8)))])
    new, old = both()
    assert new.schedule(snap) == old.schedule(snap)
    pol = PolicyConfig(backfill=False, **OLD)
    assert GreenScheduler(CAT, pol).schedule(snap) != old.schedule(snap)


class Twin:
    """Runs both kernels on every snapshot of a replay and insists on equal plans."""

    name = "twin"

    def __init__(self, new: GreenScheduler, old: legacy.GreenScheduler) -> None:
        self.new, self.old, self.rounds, self.starts = new, old, 0, 0

    def schedule(self, snap: Snapshot) -> Plan:
        a, b = self.new.schedule(snap), self.old.schedule(snap)
        assert a == b, f"plans differ at {snap.now}"
        self.rounds += 1
        self.starts += len(a.starts)
        return a


ITP_SLICE = """
[scenario]
name = "equivalence"
start = "2023-05-03T00:00:00Z"
round_interval_s = 300
[forecast]
seed = 5
[fx]
EUR = 7.8
USD = 7.2
[trace]
format = "itp"
path = "{itp}"
from_s = 172800
to_s = 216000
[trace.clusters]
cluster04 = "de"
cluster09 = "de"
cluster08 = "no"
cluster07 = "cal"
[trace.deadlines]
fraction = 0.3
slack_factor = 3.0
min_slack_s = 21600
max_duration_s = 86400
seed = 2
[[site]]
id = "de"
electricity_price_cny_per_kwh = "0.9"
carbon = {{ file = "{energy}/DE-LU_2023_hourly.csv" }}
price = {{ file = "{energy}/DE-LU_electricity_prices_2023.csv", tz = "Europe/Berlin" }}
[[site]]
id = "no"
electricity_price_cny_per_kwh = "0.4"
carbon = {{ file = "{energy}/NO_2023_hourly.csv" }}
[[site]]
id = "cal"
electricity_price_cny_per_kwh = "0.7"
carbon = {{ file = "{energy}/US-CAL-CISO_2023_hourly.csv" }}
[[pool]]
id = "de-a100"
site = "de"
accelerator = "A100"
nodes = 4
price_cny_per_device_hour = "10"
[[pool]]
id = "no-a100"
site = "no"
accelerator = "A100"
nodes = 2
price_cny_per_device_hour = "12"
[[pool]]
id = "cal-h100"
site = "cal"
accelerator = "H100"
nodes = 2
price_cny_per_device_hour = "24"
"""


def _mixed(sc):  # type: ignore[no-untyped-def]
    """Every objective and some priority work, chosen by a hash of the job id (seeded, stable)."""
    objs = list(Objective)
    out = []
    for j in sc.jobs:
        h = hashlib.sha256(j.id.encode()).digest()
        out.append(replace(j, objective=objs[h[0] % 4], priority=1 if h[1] < 20 else 0))
    return replace(sc, jobs=tuple(out))


@pytest.mark.slow
def test_split_kernel_plans_equal_the_frozen_kernel_on_an_itp_slice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from yungu.adapters.traces.scenario import load_scenario
    from yungu.engines.sim.core import simulate

    itp = shared_data("traces", "microsoft-itp-2021")
    energy = shared_data("energy")
    p = tmp_path / "slice.toml"
    p.write_text(ITP_SLICE.format(itp=itp, energy=energy))
    ls = load_scenario(p)
    sc = _mixed(ls.scenario)
    assert 150 < len(sc.jobs) < 1500
    twin = Twin(*both())
    res = simulate(sc, twin)
    assert twin.rounds > 100 and twin.starts > 100
    assert res.preemptions > 0  # the slice exercises preemption, waits, shifts and reservations
    assert sum(r.cost_cny for r in res.records) > Decimal(0)

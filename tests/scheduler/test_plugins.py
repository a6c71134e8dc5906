"""Table-driven tests of each filter and score plugin, and of the registry."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.scheduler.helpers import NOW, job, pool, site
from yungu.domain.errors import Conflict
from yungu.domain.status import Code
from yungu.engines.scheduler.plugins import (
    CarbonScore,
    CostScore,
    DeadlineRiskScore,
    DeclaredFit,
    FinishScore,
    GreenScore,
    HomeOnly,
    LatencyScore,
    MaxPrice,
    Option,
    OptionArrays,
    PoolView,
    Reachable,
    Reference,
    Registry,
    WaitScore,
    default_registry,
)

S = site("a")
P = pool("a-a100", "a", nodes=2, per=8)
H = pool("a-h100", "a", nodes=1, per=8, acc="H100")


def view(p=P, available=True, price="10"):
    return PoolView(p, S, available, Decimal(price))


@pytest.mark.parametrize(
    ("j", "p", "code"),
    [
        (job("fits", 8), P, Code.SUCCESS),
        (job("too-wide", 9), P, Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        (job("gang-fits", 8, replicas=2), P, Code.SUCCESS),
        (job("gang-too-big", 8, replicas=3), P, Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        (job("wants-h100", 1, types=("H100",)), P, Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        (job("wants-h100", 1, types=("H100",)), H, Code.SUCCESS),
    ],
)
def test_declared_fit(j, p, code):
    assert DeclaredFit().filter(j, view(p)).code is code


@pytest.mark.parametrize(("available", "code"), [(True, Code.SUCCESS), (False, Code.UNSCHEDULABLE)])
def test_reachable(available, code):
    st = Reachable().filter(job("j"), view(available=available))
    assert st.code is code
    if not available:
        assert "unreachable" in st.reasons[0]


@pytest.mark.parametrize(
    ("cap", "price", "ok"),
    [(None, "999", True), ("10", "10", True), ("9.99", "10", False), ("0", "0", True)],
)
def test_max_price(cap, price, ok):
    assert MaxPrice().filter(job("j", max_price=cap), view(price=price)).ok is ok


@pytest.mark.parametrize(("home", "ok"), [(None, True), ("a", True), ("b", False)])
def test_home_only(home, ok):
    assert HomeOnly().filter(job("j", home=home), view()).ok is ok


def opt(**kw):
    base = Option("p", "s", "r", NOW, 3600.0, 0.0, 10.0, 1000.0, 1.0, 0.5, 50.0, None)
    return base._replace(**kw)


REF = Reference(cost=20.0, carbon=4000.0, latency=100.0, finish=7200.0)


@pytest.mark.parametrize(
    ("plugin", "o", "expected"),
    [
        (CostScore(), opt(cost_cny=10.0), 0.5),
        (CostScore(), opt(cost_cny=20.0), 1.0),
        (CarbonScore(), opt(carbon_g=1000.0), 0.25),
        (CarbonScore(), opt(carbon_g=0.0), 0.0),
        (GreenScore(), opt(green_share=0.8), 0.2),
        (GreenScore(), opt(green_share=1.0), 0.0),
        (LatencyScore(), opt(latency_ms=50.0), 0.5),
        (LatencyScore(), opt(latency_ms=0.0), 0.0),
        (WaitScore(), opt(wait_s=0.0), 0.0),
        (WaitScore(), opt(wait_s=1800.0), 0.5),  # half the run time
        (WaitScore(), opt(wait_s=1800.0, slack_s=5400.0), 0.25),  # relative to the slack it had
        (FinishScore(), opt(), 0.5),  # runs 1 h of the slowest option's 2 h
        (FinishScore(), opt(wait_s=1800.0, run_s=1800.0), 0.5),  # waiting counts toward the finish
        (FinishScore(), opt(wait_s=3600.0, run_s=3600.0), 1.0),
        (DeadlineRiskScore(), opt(slack_s=None), 0.0),
        (DeadlineRiskScore(), opt(slack_s=-1.0), 1.0),
        (DeadlineRiskScore(), opt(slack_s=1800.0), 0.5),
        (DeadlineRiskScore(), opt(slack_s=7200.0), 0.0),
    ],
)
def test_scores(plugin, o, expected):
    assert plugin.score(job("j"), o, REF) == pytest.approx(expected)


def test_zero_reference_scores_zero():
    zero = Reference(0.0, 0.0, 0.0)
    assert CostScore().score(job("j"), opt(), zero) == 0.0
    assert CarbonScore().score(job("j"), opt(), zero) == 0.0
    assert FinishScore().score(job("j"), opt(), zero) == 0.0


def test_registry_rejects_duplicates_across_kinds():
    reg = Registry()
    reg.add_filter("x", Reachable())
    with pytest.raises(Conflict):
        reg.add_filter("x", MaxPrice())
    with pytest.raises(Conflict):
        reg.add_score("x", CostScore())
    reg.add_score("y", CostScore())
    with pytest.raises(Conflict):
        reg.add_filter("y", Reachable())


def test_default_registry_names():
    reg = default_registry(home_only=True)
    assert [n for n, _ in reg.filters()] == ["declared-fit", "reachable", "max-price", "home-only"]
    assert set(reg.scores()) == {"cost", "carbon", "green", "latency", "wait", "finish", "deadline_risk"}


@given(
    st.lists(
        st.tuples(st.floats(0, 1e5), st.floats(0, 1e7), st.floats(0, 1), st.floats(0, 300), st.floats(1, 1e6)),
        min_size=1,
        max_size=20,
    )
)
def test_batch_scores_agree_with_per_option_scores(rows):
    """The vectorised ranking must score exactly as the per-option plugins do."""
    opts = [Option("p", "s", "r", NOW, run, 0.0, c, g, 1.0, gr, lat, None) for c, g, gr, lat, run in rows]
    ref = Reference(
        max(o.cost_cny for o in opts),
        max(o.carbon_g for o in opts),
        max(o.latency_ms for o in opts),
        max(o.run_s for o in opts),
    )
    arrays = OptionArrays(*(np.array(col, dtype=float) for col in zip(*rows, strict=True)))
    j = job("j")
    for name, plugin in default_registry().scores().items():
        got = plugin.score_batch(arrays, ref)
        want = [plugin.score(j, o, ref) for o in opts]
        assert np.allclose(got, want), name


def test_a_filter_that_reads_more_of_the_job_declares_it_and_is_not_memoised_across_tenants():
    """A tenant-dependent filter (as the federation's pin/forbid of remote platforms will be)
    declares ``key(job)``; two jobs of one shape from different tenants then get their own
    answers, in one round and in the next round with a carry."""
    from tests.scheduler.helpers import CAT, job, pool, site, snapshot, world
    from yungu.domain.status import Code, Status
    from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig
    from yungu.engines.scheduler.plugins import default_registry

    class ForbidPool:
        def filter(self, job, pool):  # type: ignore[no-untyped-def]
            if job.tenant_id == "strict" and pool.pool.id == "p1":
                return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, ("tenant forbids p1",), "forbid")
            return Status.success("forbid")

        def key(self, job):  # type: ignore[no-untyped-def]
            return job.tenant_id

    reg = default_registry()
    reg.add_filter("forbid", ForbidPool())
    w = world([site("a")], [pool("p1", "a", nodes=1)])
    sched = GreenScheduler(CAT, PolicyConfig(), registry=reg)
    carry = sched.new_carry()
    for _ in range(2):
        plan = sched.schedule(snapshot(w, [job("x", 1, tenant="easy"), job("y", 1, tenant="strict")]), carry=carry)
        assert [s.job_id for s in plan.starts] == ["x"]
        assert [i.job_id for i in plan.infeasible] == ["y"]

"""Energy integration against analytic power curves; attribution conserves the node's energy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.attribution import attribute
from yungu.engines.energy.integrate import counter_joules, trapezoid_joules
from yungu.engines.energy.power import PowerModel
from yungu.engines.energy.samples import GpuReading, JobUsage, NodeSample
from yungu.engines.energy.signals import Provenance


def test_trapezoid_is_exact_for_linear_power() -> None:
    # P(t) = 100 + 2t W over 0..60 s -> 100*60 + 60^2 = 9600 J
    pts = [(float(t), 100.0 + 2.0 * t) for t in range(0, 61, 5)]
    assert trapezoid_joules(pts) == pytest.approx(9600.0)
    # window edges interpolate: 10..20 s -> 100*10 + (400-100) = 1300 J
    assert trapezoid_joules(pts, 10.0, 20.0) == pytest.approx(1300.0)


@pytest.mark.parametrize(("hz", "tol"), [(1, 2e-3), (10, 2e-5)])
def test_trapezoid_converges_on_a_sine_curve(hz: int, tol: float) -> None:
    # P(t) = 300 + 100 sin(2πt/60): ∫0..60 = 18000 J exactly
    pts = [(i / hz, 300 + 100 * math.sin(2 * math.pi * (i / hz) / 60)) for i in range(60 * hz + 1)]
    assert trapezoid_joules(pts) == pytest.approx(18000.0, rel=tol)


def test_sampling_misses_fast_swings_but_the_counter_does_not() -> None:
    # A 700 W / 100 W square wave with a 1.5 s period, read at 1 Hz: samples alias.
    def p(t: float) -> float:
        return 700.0 if (t % 1.5) < 0.75 else 100.0

    truth = 400.0 * 60
    counter = [(float(t), sum(p(k / 1000) for k in range(t * 1000)) / 1000) for t in range(61)]
    sampled = [(float(t), p(float(t))) for t in range(61)]
    assert counter_joules(counter) == pytest.approx(truth, rel=1e-3)
    assert abs(trapezoid_joules(sampled) - truth) / truth > 0.01


def test_counter_reset_is_not_negative_energy() -> None:
    assert counter_joules([(0.0, 1000.0), (1.0, 1100.0), (2.0, 50.0), (3.0, 150.0)]) == pytest.approx(250.0)


def test_bad_points_are_refused() -> None:
    with pytest.raises(InvalidInput):
        trapezoid_joules([(0.0, 1.0), (0.0, 2.0)])
    with pytest.raises(InvalidInput):
        trapezoid_joules([(0.0, float("nan")), (1.0, 2.0)])


def test_power_model_is_linear_between_idle_and_tdp() -> None:
    m = PowerModel(70.0, 700.0)
    assert (m.power(0), m.power(0.5), m.power(1), m.power(2), m.power(float("nan"))) == (
        70,
        385,
        700,
        700,
        70,
    )
    with pytest.raises(InvalidInput):
        PowerModel(800.0, 700.0)


def sample(
    seq: int,
    ts: float,
    cpu_w: float,
    busy: float,
    jobs: tuple[JobUsage, ...],
    gpus: tuple[GpuReading, ...] = (),
) -> NodeSample:
    return NodeSample(
        "n",
        seq,
        ts,
        0.5,
        0.3,
        cpu_w,
        Provenance.MEASURED,
        busy,
        8,
        cpu_idle_w=40.0,
        gpu_idle_w=60.0,
        gpus=gpus,
        jobs=jobs,
    )


def test_gpu_goes_to_its_job_and_cpu_by_cpu_time_share() -> None:
    g = lambda i, w, e: GpuReading(i, 1.0, 0, w, e)  # noqa: E731
    s0 = sample(
        0,
        0.0,
        140.0,
        0.0,
        (JobUsage("a", 0.0, (0,), 4), JobUsage("b", 0.0, (), 2)),
        (g(0, 400, 0.0), g(1, 60, 0.0)),
    )
    s1 = sample(
        1,
        10.0,
        140.0,
        40.0,
        (JobUsage("a", 30.0, (0,), 4), JobUsage("b", 10.0, (), 2)),
        (g(0, 400, 4000.0), g(1, 60, 600.0)),
    )
    ne = attribute([s0, s1])
    a, b = ne.jobs["a"], ne.jobs["b"]
    assert a.gpu_dynamic_j + a.gpu_idle_j == pytest.approx(4000.0)  # counter delta, whole device
    assert a.gpu_idle_j == pytest.approx(600.0)
    assert ne.unassigned_gpu_j == pytest.approx(600.0)
    assert a.cpu_dynamic_j == pytest.approx(1000.0 * 30 / 40) and b.cpu_dynamic_j == pytest.approx(250.0)
    assert a.cpu_idle_j == pytest.approx(400.0 * 4 / 8) and b.cpu_idle_j == pytest.approx(100.0)
    assert ne.unallocated_idle_j == pytest.approx(100.0)
    assert ne.attributed_j == pytest.approx(ne.total_j)
    assert a.provenance is Provenance.MEASURED


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.1, 30), st.floats(0, 500), st.floats(0, 5),
            st.lists(st.tuples(st.floats(0, 3), st.integers(0, 4)), min_size=0, max_size=3),
            st.floats(0, 700), st.integers(-1, 2),
        ),
        min_size=2, max_size=30,
    )
)  # fmt: skip
def test_attribution_conserves_energy(
    steps: list[tuple[float, float, float, list[tuple[float, int]], float, int]],
) -> None:
    """Jobs + system + unallocated idle + unassigned GPUs == node energy, whatever the usage."""
    t = busy = 0.0
    cum: dict[str, float] = {}
    samples = []
    for i, (dt, cpu_w, extra_busy, jobs, gpu_w, gpu_owner) in enumerate(steps):
        t += dt
        usage = []
        for k, (cpu_s, cores) in enumerate(jobs):
            cum[f"j{k}"] = cum.get(f"j{k}", 0.0) + cpu_s
            usage.append(JobUsage(f"j{k}", cum[f"j{k}"], (0,) if gpu_owner == k else (), cores))
        busy += extra_busy + sum(c for c, _ in jobs)
        samples.append(sample(i, t, cpu_w, busy, tuple(usage), (GpuReading(0, 0.5, 0, gpu_w),)))
    ne = attribute(samples)
    assert ne.attributed_j == pytest.approx(ne.total_j, rel=1e-9, abs=1e-6)
    for j in ne.jobs.values():
        assert j.total_j >= -1e-9
        assert sum(j.hourly_j.values()) == pytest.approx(j.total_j, rel=1e-9, abs=1e-6)

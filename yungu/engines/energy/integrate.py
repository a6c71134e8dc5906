"""Energy from power samples or from energy counters.

Two ways to get joules over ``[start, end]``:

* ``trapezoid_joules``: integrate sampled power with the trapezoid rule, interpolating
  linearly at the window edges. Its error is sampling error: a 1 Hz power reading of a GPU
  whose power swings within the second reads a few percent off.
* ``counter_joules``: the difference of a cumulative energy counter (NVML
  ``nvmlDeviceGetTotalEnergyConsumption``, RAPL ``energy_uj``), interpolated at the edges and
  robust to wrap-around/reset (a decrease starts a new segment). Preferred whenever the
  device has a counter, because the hardware integrates at its own, much higher, rate.

Times are float seconds (any epoch); callers convert datetimes at the boundary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from yungu.domain.errors import InvalidInput

Point = tuple[float, float]  # (t seconds, value)


def _check(points: Sequence[Point], what: str) -> None:
    for i, (t, v) in enumerate(points):
        if not (math.isfinite(t) and math.isfinite(v)):
            raise InvalidInput(f"{what}: point {i} is not finite ({t}, {v})")
        if i and t <= points[i - 1][0]:
            raise InvalidInput(f"{what}: timestamps must strictly increase (index {i})")


def _interp(p0: Point, p1: Point, t: float) -> float:
    (t0, v0), (t1, v1) = p0, p1
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def trapezoid_joules(points: Sequence[Point], start: float | None = None, end: float | None = None) -> float:
    """Joules of a power curve (watts) sampled at ``points``, over ``[start, end]``.

    The window is clipped to the sampled span: energy outside it is unknown, not assumed.
    """
    _check(points, "power samples")
    if len(points) < 2:
        return 0.0
    lo = points[0][0] if start is None else max(start, points[0][0])
    hi = points[-1][0] if end is None else min(end, points[-1][0])
    if hi <= lo:
        return 0.0
    total = 0.0
    for p0, p1 in itertools.pairwise(points):
        a, b = max(p0[0], lo), min(p1[0], hi)
        if b <= a:
            continue
        total += 0.5 * (_interp(p0, p1, a) + _interp(p0, p1, b)) * (b - a)
    return total


def counter_joules(readings: Sequence[Point], start: float | None = None, end: float | None = None) -> float:
    """Joules from a cumulative counter (joules) read at ``readings``, over ``[start, end]``.

    A counter that goes down (reset, wrap, driver reload) ends a segment; the energy of the
    interval across the reset is taken as the post-reset value (the counter restarted at 0).
    """
    _check(readings, "energy counter")
    if len(readings) < 2:
        return 0.0
    lo = readings[0][0] if start is None else max(start, readings[0][0])
    hi = readings[-1][0] if end is None else min(end, readings[-1][0])
    if hi <= lo:
        return 0.0
    total = 0.0
    for p0, p1 in itertools.pairwise(readings):
        a, b = max(p0[0], lo), min(p1[0], hi)
        if b <= a:
            continue
        delta = p1[1] - p0[1]
        if delta < 0:  # reset: the counter restarted from zero during this interval
            delta = p1[1]
        total += delta * (b - a) / (p1[0] - p0[0])
    return total


def mean_power_w(joules: float, seconds: float) -> float:
    return joules / seconds if seconds > 0 else 0.0


def joules_to_kwh(joules: float) -> float:
    return joules / 3.6e6

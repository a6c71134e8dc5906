"""What the scheduler may know about a site's energy: forecasts turned into fast lookups.

The scheduler scores thousands of (pool, start hour) options per round, so every per-site
signal is turned once per round into prefix sums: the mean carbon intensity, renewable share
or price over any interval ``[a, a + d)`` is then O(1). Inputs are *forecasts*
(:class:`yungu.engines.energy.signals.SiteForecast`), never the truth series: the simulator
and the live loop both build them with :func:`build_signals` and an error model.

Beyond the forecast horizon the outlook assumes persistence of the horizon mean, the usual
conservative choice: the scheduler never believes an unforecast hour is unusually green.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from yungu.engines.energy.signals import (
    Forecast,
    ForecastErrorModel,
    SignalSeries,
    SignalType,
    SiteForecast,
    SiteSignal,
    floor_hour,
)

HOUR_S = 3600.0


def _prefix(values: Sequence[float]) -> tuple[float, ...]:
    acc = [0.0]
    s = 0.0
    for v in values:
        s += v
        acc.append(s)
    return tuple(acc)


@dataclass(frozen=True)
class Curve:
    """An hourly curve starting at ``start`` with O(1) interval means (persistence beyond)."""

    start: datetime
    values: tuple[float, ...]
    fallback: float
    prefix: tuple[float, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", _prefix(self.values))

    @property
    def tail(self) -> float:
        return self.prefix[-1] / len(self.values) if self.values else self.fallback

    def _integral(self, x: float) -> float:
        """Integral of the curve over hours ``[0, x)`` from ``start`` (x in hours, may be < 0)."""
        n = len(self.values)
        if n == 0:
            return x * self.fallback
        if x <= 0:
            return x * self.values[0]
        if x >= n:
            return self.prefix[n] + (x - n) * self.tail
        i = int(x)
        return self.prefix[i] + (x - i) * self.values[i]

    def means_from(self, t0: datetime, count: int, seconds: float) -> NDArray[np.float64]:
        """Means over ``[t0 + k h, t0 + k h + seconds)`` for ``k = 0 .. count-1``, vectorised."""
        a = (t0 - self.start).total_seconds() / HOUR_S + np.arange(count, dtype=np.float64)
        d = max(seconds, 1.0) / HOUR_S
        return (self._integrals(a + d) - self._integrals(a)) / d

    def means_list(self, t0: datetime, count: int, seconds: float) -> list[float]:
        """The same means as :meth:`means_from` by a scalar loop (cheaper for a few hours)."""
        a0 = (t0 - self.start).total_seconds() / HOUR_S
        d = max(seconds, 1.0) / HOUR_S
        f = self._integral
        return [(f(a0 + k + d) - f(a0 + k)) / d for k in range(count)]

    def _arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        got: tuple[NDArray[np.float64], NDArray[np.float64]] | None = self.__dict__.get("_np")
        if got is None:
            got = (np.asarray(self.values, dtype=np.float64), np.asarray(self.prefix, dtype=np.float64))
            object.__setattr__(self, "_np", got)  # a cache of the frozen curve's own data
        return got

    def _integrals(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        n = len(self.values)
        if n == 0:
            return x * self.fallback
        vals, pre = self._arrays()
        i = np.clip(np.floor(x).astype(np.int64), 0, n - 1)
        inside = pre[i] + (x - i) * vals[i]
        out = np.where(x <= 0, x * vals[0], inside)
        return np.where(x >= n, pre[n] + (x - n) * self.tail, out)

    def mean(self, t0: datetime, seconds: float) -> float:
        """Mean value over ``[t0, t0 + seconds)``."""
        a = (t0 - self.start).total_seconds() / HOUR_S
        d = max(seconds, 1.0) / HOUR_S
        return (self._integral(a + d) - self._integral(a)) / d

    def at(self, t: datetime) -> float:
        return self.mean(t, 1.0)


@dataclass(frozen=True)
class SiteOutlook:
    """Carbon (gCO2e/kWh), renewable share (0..1) and price (CNY/kWh) curves of one site."""

    site_id: str
    issued_at: datetime
    carbon: Curve
    renewable: Curve
    price: Curve
    known: frozenset[str] = frozenset()  # which signals came from a forecast (the rest are defaults)

    def best_start(
        self, now: datetime, latest: datetime, run_s: float, kind: str = "carbon", *, first: datetime | None = None
    ) -> datetime:
        """The hour-aligned start in ``[now, latest]`` minimising the mean of ``kind`` over the run.

        ``now`` itself is always a candidate; later candidates are hour boundaries (``first``:
        the next one after ``now``, when the caller already knows it).
        """
        curve: Curve = getattr(self, kind)
        if first is None:
            first = floor_hour(now) + timedelta(hours=1)
        count = int((latest - first).total_seconds() // HOUR_S) + 1 if latest >= first else 0
        now_v = curve.mean(now, run_s)
        if count <= 0:
            return now
        if count > 24:
            later = curve.means_from(first, count, run_s)
            k = int(np.argmin(later))  # the first of equal minima, as the scan below keeps
            return first + timedelta(hours=k) if later[k] < now_v - 1e-9 else now
        # Short windows: a plain scan is cheaper than numpy's per-call overhead.
        best_k, best_v = -1, now_v
        for k, v in enumerate(curve.means_list(first, count, run_s)):
            if v < best_v - 1e-9:
                best_k, best_v = k, v
        return first + timedelta(hours=best_k) if best_k >= 0 else now


def _curve(src: Forecast | SignalSeries | None, now: datetime, fallback: float) -> Curve:
    if src is None or not src.values:
        return Curve(floor_hour(now), (), fallback)
    return Curve(src.start, tuple(src.values), fallback)


def outlook_from_signal(
    site_id: str,
    signal: object,
    now: datetime,
    *,
    default_carbon: float,
    default_price: float,
    default_renewable: float = 0.0,
) -> SiteOutlook:
    """Turn whatever sits in ``Snapshot.signals[site]`` into an outlook.

    Accepts a :class:`SiteForecast` (what the live loop and the simulator pass), a
    :class:`SiteOutlook` (already built) or nothing (defaults: the site's tariff and the
    policy's default intensity, flagged as not known).
    """
    if isinstance(signal, SiteOutlook):
        return signal
    series: Mapping[SignalType, Forecast | SignalSeries] = {}
    issued = now
    if isinstance(signal, SiteForecast):
        series, issued = signal.forecasts, signal.issued_at
    elif isinstance(signal, SiteSignal):
        series = signal.series  # truth: only for tests and what-if tools, never the simulator
    known = frozenset(k.value for k in series)
    return SiteOutlook(
        site_id,
        issued,
        _curve(series.get(SignalType.CARBON_INTENSITY), now, default_carbon),
        _curve(series.get(SignalType.RENEWABLE_SHARE), now, default_renewable),
        _curve(series.get(SignalType.PRICE), now, default_price),
        known,
    )


def build_signals(
    truth: Mapping[str, SiteSignal],
    now: datetime,
    error_model: ForecastErrorModel,
    horizon_hours: int = 48,
) -> dict[str, SiteForecast]:
    """The ``Snapshot.signals`` mapping for a round at ``now``: one forecast per site.

    Pure helper for the live control loop and the simulator: give it the truth series the
    energy feeds hold and the operator's error model; the scheduler only ever sees the
    forecasts issued at ``now`` (hours already started are observations).
    """
    return {site: SiteForecast.issue(sig, now, horizon_hours, error_model) for site, sig in truth.items()}


def hours_between(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / HOUR_S


def finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default

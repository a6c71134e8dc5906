"""Per-site grid signals and day-ahead forecasts, as the scheduler sees them.

A *signal* is one quantity on an hourly UTC grid at one site: carbon intensity
(gCO2e/kWh), renewable share (0..1) or electricity price (CNY/kWh). Every hour carries a
provenance flag, ``measured`` (from a published series) or ``modelled`` (our own model,
e.g. clear-sky solar for an embedded Chinese site), because a report must never present a
modelled number as a measurement.

A :class:`Forecast` is what a decision made at time ``t`` is allowed to know. It holds only
the forecast values, never the truth series it was derived from, so a scheduler that is
handed a forecast cannot peek at the future. The error model is the usual synthetic one for
scheduling studies: ``forecast(h) = truth(h) * (1 + e)``, with ``e`` Gaussian, its standard
deviation growing with lead time, and drawn from a seeded generator keyed by (seed, site,
signal, issue hour): the error of lead ``k`` is the ``k``-th draw of that generator, so the
same forecast is reproduced exactly whatever the horizon or the order in which hours are
asked for, and one forecast costs one generator, not one per hour. Hours that have already started at issue time are
observations: they carry the truth with no error.

Pure: no I/O, no clock reads. ``now`` and the truth series are passed in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import numpy as np

from yungu.domain.errors import InvalidInput

HOUR = timedelta(hours=1)


class SignalType(StrEnum):
    CARBON_INTENSITY = "carbon_intensity"  # gCO2e/kWh, location-based
    RENEWABLE_SHARE = "renewable_share"  # 0..1 of the grid mix
    PRICE = "price"  # CNY/kWh (indicative signal; bills use Decimal tariffs)

    @property
    def unit(self) -> str:
        return {"carbon_intensity": "gCO2e/kWh", "renewable_share": "1", "price": "CNY/kWh"}[self.value]


class Provenance(StrEnum):
    MEASURED = "measured"
    MODELLED = "modelled"


def floor_hour(t: datetime) -> datetime:
    """The start of the UTC hour containing ``t`` (aware datetimes only)."""
    if t.tzinfo is None:
        raise InvalidInput(f"naive datetime {t.isoformat()} given where an aware UTC time is required")
    t = t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _check_hour(t: datetime) -> datetime:
    h = floor_hour(t)
    if h != t.astimezone(UTC):
        raise InvalidInput(f"{t.isoformat()} is not on the hour; signals are hourly")
    return h


@dataclass(frozen=True)
class SignalSeries:
    """One signal type at one site on a contiguous hourly UTC grid.

    ``values[i]`` is the mean over ``[start + i h, start + (i+1) h)``; ``provenance[i]``
    says whether it was measured or modelled. Missing hours are not allowed inside a
    series: feed adapters report gaps and split the series instead of filling them.
    """

    site_id: str
    signal: SignalType
    start: datetime
    values: tuple[float, ...]
    provenance: tuple[Provenance, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _check_hour(self.start))
        if len(self.values) != len(self.provenance):
            raise InvalidInput("a signal series needs one provenance flag per value")
        for i, v in enumerate(self.values):
            if not math.isfinite(v):
                raise InvalidInput(f"{self.site_id}/{self.signal}: value {i} is not finite")
            if self.signal is SignalType.RENEWABLE_SHARE and not 0.0 <= v <= 1.0:
                raise InvalidInput(f"{self.site_id}: renewable share {v} outside 0..1 at index {i}")
            if self.signal is SignalType.CARBON_INTENSITY and v < 0.0:
                raise InvalidInput(f"{self.site_id}: negative carbon intensity {v} at index {i}")

    @classmethod
    def uniform(
        cls,
        site_id: str,
        signal: SignalType,
        start: datetime,
        values: Sequence[float],
        provenance: Provenance,
        source: str = "",
    ) -> SignalSeries:
        """A series whose hours all share one provenance flag."""
        return cls(
            site_id, signal, start, tuple(float(v) for v in values), (provenance,) * len(values), source
        )

    @property
    def unit(self) -> str:
        return self.signal.unit

    @property
    def end(self) -> datetime:
        """Exclusive end: the first hour not covered."""
        return self.start + HOUR * len(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def index(self, hour: datetime) -> int:
        h = floor_hour(hour)
        i = int((h - self.start) // HOUR)
        if not 0 <= i < len(self.values):
            raise InvalidInput(
                f"{self.site_id}/{self.signal}: {h.isoformat()} outside "
                f"[{self.start.isoformat()}, {self.end.isoformat()})"
            )
        return i

    def covers(self, hour: datetime) -> bool:
        return self.start <= floor_hour(hour) < self.end

    def at(self, hour: datetime) -> float:
        """The value of the hour containing ``hour``."""
        return self.values[self.index(hour)]

    def provenance_at(self, hour: datetime) -> Provenance:
        return self.provenance[self.index(hour)]

    def hours(self) -> Iterator[datetime]:
        for i in range(len(self.values)):
            yield self.start + HOUR * i

    def items(self) -> Iterator[tuple[datetime, float, Provenance]]:
        for i, v in enumerate(self.values):
            yield self.start + HOUR * i, v, self.provenance[i]

    def window(self, start: datetime, end: datetime) -> SignalSeries:
        """The sub-series for hours in ``[start, end)`` (clipped to what the series covers)."""
        lo = max(0, int((floor_hour(start) - self.start) // HOUR))
        hi = min(len(self.values), math.ceil((end - self.start) / HOUR))
        hi = max(hi, lo)
        return SignalSeries(
            self.site_id,
            self.signal,
            self.start + HOUR * lo,
            self.values[lo:hi],
            self.provenance[lo:hi],
            self.source,
        )

    @property
    def any_modelled(self) -> bool:
        return Provenance.MODELLED in self.provenance


@dataclass(frozen=True)
class SignalPoint:
    """All signals of one site for one hour (what a scheduler scores a placement with)."""

    site_id: str
    hour: datetime
    carbon_intensity_g_per_kwh: float | None
    renewable_share: float | None
    price_cny_per_kwh: float | None
    provenance: Mapping[SignalType, Provenance]


@dataclass(frozen=True)
class SiteSignal:
    """The signals known for one site: any of carbon intensity, renewable share, price."""

    site_id: str
    series: Mapping[SignalType, SignalSeries] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, s in self.series.items():
            if s.site_id != self.site_id or s.signal is not kind:
                raise InvalidInput(f"series {s.site_id}/{s.signal} filed under {self.site_id}/{kind}")

    def get(self, kind: SignalType) -> SignalSeries | None:
        return self.series.get(kind)

    def at(self, hour: datetime) -> SignalPoint:
        vals: dict[SignalType, float | None] = {}
        prov: dict[SignalType, Provenance] = {}
        for kind in SignalType:
            s = self.series.get(kind)
            if s is not None and s.covers(hour):
                vals[kind] = s.at(hour)
                prov[kind] = s.provenance_at(hour)
            else:
                vals[kind] = None
        return SignalPoint(
            self.site_id,
            floor_hour(hour),
            vals[SignalType.CARBON_INTENSITY],
            vals[SignalType.RENEWABLE_SHARE],
            vals[SignalType.PRICE],
            prov,
        )

    def price_decimal(self, hour: datetime) -> Decimal | None:
        """The price as a Decimal (6 places) for anything that becomes money."""
        s = self.series.get(SignalType.PRICE)
        if s is None or not s.covers(hour):
            return None
        return Decimal(repr(s.at(hour))).quantize(Decimal("0.000001"))


@dataclass(frozen=True)
class ForecastErrorModel:
    """Relative Gaussian error whose spread grows with lead time.

    ``sigma(lead) = min(sigma_max, sigma_1h + sigma_per_hour * (lead - 1))`` for a lead of
    ``lead >= 1`` hours, plus a constant relative ``bias``. Defaults give about 5 % one hour
    ahead and about 16 % a day ahead, in the range reported for day-ahead carbon-intensity
    forecasts (e.g. Maji et al., "CarbonCast", 2022, MAPE 5-20 %).
    """

    seed: int = 0
    sigma_1h: float = 0.05
    sigma_per_hour: float = 0.005
    sigma_max: float = 0.5
    bias: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sigma_1h", "sigma_per_hour", "sigma_max"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise InvalidInput(f"forecast error model: {name} must be a finite number >= 0, got {v}")
        if not math.isfinite(self.bias):
            raise InvalidInput("forecast error model: bias must be finite")

    def sigma(self, lead_hours: int) -> float:
        if lead_hours <= 0:
            return 0.0
        return min(self.sigma_max, self.sigma_1h + self.sigma_per_hour * (lead_hours - 1))

    def relative_error(
        self, site_id: str, signal: SignalType, issued_hour: datetime, target: datetime
    ) -> float:
        """The seeded error for one (issue hour, target hour); 0 for hours already started."""
        lead = int((target - issued_hour) // HOUR)
        if lead <= 0:
            return 0.0
        return self.relative_errors(site_id, signal, issued_hour, lead)[lead - 1]

    def relative_errors(self, site_id: str, signal: SignalType, issued_hour: datetime, leads: int) -> list[float]:
        """The seeded errors of leads ``1..leads`` hours for one issue hour (one generator,
        keyed by seed, site, signal and issue hour; lead ``k`` is its ``k``-th draw)."""
        if leads <= 0:
            return []
        key = f"{self.seed}|{site_id}|{signal.value}|{issued_hour.isoformat()}"
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        z = np.random.Generator(np.random.PCG64(seed)).standard_normal(leads).tolist()
        return [self.bias + self.sigma(k + 1) * z[k] for k in range(leads)]

    def perfect(self) -> bool:
        return self.sigma_1h == 0 and self.sigma_per_hour == 0 and self.bias == 0


@dataclass(frozen=True)
class Forecast:
    """A forecast of one signal at one site, issued at ``issued_at``.

    Holds forecast values only. ``values[i]`` is for hour ``start + i h``; hours that had
    started by ``issued_at`` carry the observed value (``lead 0``).
    """

    site_id: str
    signal: SignalType
    issued_at: datetime
    start: datetime
    values: tuple[float, ...]
    provenance: tuple[Provenance, ...]
    error_model: ForecastErrorModel

    @classmethod
    def issue(
        cls,
        truth: SignalSeries,
        issued_at: datetime,
        horizon_hours: int,
        error_model: ForecastErrorModel,
        *,
        history_hours: int = 0,
    ) -> Forecast:
        """Forecast hours ``[floor(issued_at) - history, floor(issued_at) + horizon)``.

        Hours outside the truth series are left out (the forecast is shorter), never
        invented.
        """
        if horizon_hours < 0 or history_hours < 0:
            raise InvalidInput("forecast horizon and history must be >= 0 hours")
        issued_hour = floor_hour(issued_at)
        first = max(truth.start, issued_hour - HOUR * history_hours)
        last = min(truth.end, issued_hour + HOUR * horizon_hours)
        vals: list[float] = []
        prov: list[Provenance] = []
        if first < last:
            i0, i1 = truth.index(first), truth.index(last - HOUR) + 1
            lead0 = int((first - issued_hour) // HOUR)  # lead of the first hour (<= 0: observed)
            leads = lead0 + (i1 - i0) - 1
            errs = error_model.relative_errors(truth.site_id, truth.signal, issued_hour, leads)
            for k, v in enumerate(truth.values[i0:i1]):
                lead = lead0 + k
                f = v * (1.0 + errs[lead - 1]) if lead > 0 else v
                if truth.signal is SignalType.RENEWABLE_SHARE:
                    f = min(1.0, max(0.0, f))
                elif truth.signal is SignalType.CARBON_INTENSITY:
                    f = max(0.0, f)
                vals.append(f)
                # A forecast of a future hour is modelled by construction; observed hours keep
                # the flag of the underlying series.
                prov.append(truth.provenance[i0 + k] if lead <= 0 else Provenance.MODELLED)
        if not vals:
            first = issued_hour
        return cls(truth.site_id, truth.signal, issued_at, first, tuple(vals), tuple(prov), error_model)

    @property
    def end(self) -> datetime:
        return self.start + HOUR * len(self.values)

    def covers(self, hour: datetime) -> bool:
        return self.start <= floor_hour(hour) < self.end

    def at(self, hour: datetime) -> float:
        h = floor_hour(hour)
        i = int((h - self.start) // HOUR)
        if not 0 <= i < len(self.values):
            raise InvalidInput(
                f"forecast {self.site_id}/{self.signal} issued {self.issued_at.isoformat()} "
                f"does not cover {h.isoformat()}"
            )
        return self.values[i]

    def lead_hours(self, hour: datetime) -> int:
        return int((floor_hour(hour) - floor_hour(self.issued_at)) // HOUR)

    def as_series(self) -> SignalSeries:
        """The forecast as a series (flagged modelled where it is a prediction)."""
        return SignalSeries(self.site_id, self.signal, self.start, self.values, self.provenance, "forecast")

    def best_window(self, hours: int, *, lowest: bool = True) -> datetime | None:
        """Start of the contiguous ``hours``-long window with the lowest (or highest) mean."""
        if hours <= 0 or hours > len(self.values):
            return None
        window = sum(self.values[:hours])
        best, best_i = window, 0
        for i in range(1, len(self.values) - hours + 1):
            window += self.values[i + hours - 1] - self.values[i - 1]
            if (window < best) if lowest else (window > best):
                best, best_i = window, i
        return self.start + HOUR * best_i


@dataclass(frozen=True)
class SiteForecast:
    """The forecasts of all signals at one site issued at one time (scheduler input)."""

    site_id: str
    issued_at: datetime
    forecasts: Mapping[SignalType, Forecast]

    @classmethod
    def issue(
        cls, site: SiteSignal, issued_at: datetime, horizon_hours: int, error_model: ForecastErrorModel
    ) -> SiteForecast:
        return cls(
            site.site_id,
            issued_at,
            {k: Forecast.issue(s, issued_at, horizon_hours, error_model) for k, s in site.series.items()},
        )

    def get(self, kind: SignalType) -> Forecast | None:
        return self.forecasts.get(kind)

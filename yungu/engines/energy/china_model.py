"""The modelled hourly grid feed for embedded Chinese sites (no public hourly series exists).

Everything this module produces is flagged ``modelled``. The model, per hour ``h``:

* **solar** availability ``s_h = GHI_clear(h) / mean(GHI_clear)`` from pvlib's clear-sky
  irradiance at the site's coordinates (computed by the feed adapter and passed in; the
  shape is clear-sky, the level is calibrated to the province's annual solar share, so
  cloudiness averages out but day-to-day variation is not modelled).
* **wind** capacity-factor shape ``w_h = (1 + a_s cos(2π(doy - d_peak)/365)) x
  (1 + a_d cos(2π(hour_local - h_peak)/24)) x (1 + n_h)``, with ``n_h`` a seeded AR(1)
  process (φ = 0.9, σ = 0.25) standing for weather fronts, normalised to mean 1. Northern
  Chinese wind peaks in spring (d_peak ≈ day 100) and at night (h_peak ≈ 2 h local).
* **renewable share** ``RE_h = clip(hydro + solar_share x s_h + wind_share x w_h, 0, 0.95)``.
* **carbon intensity** ``CI_h = EF_year x (1 - RE_h) / (1 - mean RE)``: fossil output
  fills what renewables leave, and the annual mean equals the official MEE/NBS factor.
* **contracted green share** (market basis) ``G_h = clip(c x a_h / mean(a), 0, 1)`` with
  ``a_h`` the wind+solar availability shape and ``c`` the site's contracted share.
* **price** a time-of-use tariff around the site's tariff: valley x0.5 (23-07 local),
  peak x1.5 (08-11, 18-23 local), flat otherwise (the common provincial TOU structure).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.signals import HOUR, Provenance, SignalSeries, SignalType, SiteSignal


@dataclass(frozen=True)
class ProvinceMix:
    """Annual generation shares (0..1) and grid emission factor of a province."""

    iso: str
    emission_factor_kg_per_kwh: float
    hydro_share: float
    solar_share: float
    wind_share: float
    utc_offset_h: int = 8
    wind_peak_doy: int = 100
    wind_peak_hour_local: int = 2
    wind_seasonal_amp: float = 0.3
    wind_diurnal_amp: float = 0.2


@dataclass(frozen=True)
class SiteParams:
    site_id: str
    tariff_cny_per_kwh: float
    contracted_green_share: float


def _wind_shape(hours: Sequence[datetime], mix: ProvinceMix, seed: int) -> list[float]:
    rng = random.Random(f"wind|{mix.iso}|{seed}")
    n = 0.0
    raw: list[float] = []
    for h in hours:
        n = 0.9 * n + rng.gauss(0.0, 0.25 * math.sqrt(1 - 0.81))
        local = h + timedelta(hours=mix.utc_offset_h)
        doy = local.timetuple().tm_yday
        season = 1 + mix.wind_seasonal_amp * math.cos(2 * math.pi * (doy - mix.wind_peak_doy) / 365.0)
        diurnal = 1 + mix.wind_diurnal_amp * math.cos(
            2 * math.pi * (local.hour - mix.wind_peak_hour_local) / 24.0
        )
        raw.append(max(0.0, season * diurnal * (1 + n)))
    mean = sum(raw) / len(raw) if raw else 1.0
    return [r / mean if mean > 0 else 0.0 for r in raw]


def _tou(local_hour: int) -> float:
    if local_hour >= 23 or local_hour < 7:
        return 0.5
    if 8 <= local_hour < 11 or 18 <= local_hour < 23:
        return 1.5
    return 1.0


def model_site(
    site: SiteParams,
    mix: ProvinceMix,
    start: datetime,
    ghi_clear_w_m2: Sequence[float],
    *,
    seed: int = 0,
    source: str = "",
) -> SiteSignal:
    """The modelled hourly signals of a site, one value per entry of ``ghi_clear_w_m2``."""
    if not ghi_clear_w_m2:
        raise InvalidInput("the modelled feed needs at least one hour of irradiance")
    if any(not math.isfinite(g) or g < 0 for g in ghi_clear_w_m2):
        raise InvalidInput("clear-sky irradiance must be finite and >= 0")
    hours = [start + HOUR * i for i in range(len(ghi_clear_w_m2))]
    mean_ghi = sum(ghi_clear_w_m2) / len(ghi_clear_w_m2)
    solar = [g / mean_ghi if mean_ghi > 0 else 0.0 for g in ghi_clear_w_m2]
    wind = _wind_shape(hours, mix, seed)
    re = [
        min(0.95, max(0.0, mix.hydro_share + mix.solar_share * s + mix.wind_share * w))
        for s, w in zip(solar, wind, strict=True)
    ]
    mean_re = sum(re) / len(re)
    ef_g = mix.emission_factor_kg_per_kwh * 1000.0
    ci = [ef_g * (1 - r) / (1 - mean_re) for r in re]
    price = [site.tariff_cny_per_kwh * _tou((h + timedelta(hours=mix.utc_offset_h)).hour) for h in hours]
    src = (
        source
        or f"modelled: pvlib clear-sky + wind model, {mix.iso} EF {mix.emission_factor_kg_per_kwh} kg/kWh"
    )
    m = Provenance.MODELLED
    return SiteSignal(
        site.site_id,
        {
            SignalType.CARBON_INTENSITY: SignalSeries.uniform(
                site.site_id, SignalType.CARBON_INTENSITY, start, ci, m, src
            ),
            SignalType.RENEWABLE_SHARE: SignalSeries.uniform(
                site.site_id, SignalType.RENEWABLE_SHARE, start, re, m, src
            ),
            SignalType.PRICE: SignalSeries.uniform(site.site_id, SignalType.PRICE, start, price, m, src),
        },
    )


def contracted_green_series(
    site: SiteParams, mix: ProvinceMix, start: datetime, ghi_clear_w_m2: Sequence[float], *, seed: int = 0
) -> SignalSeries:
    """The market-basis contracted green share ``G_h`` (see module docstring)."""
    hours = [start + HOUR * i for i in range(len(ghi_clear_w_m2))]
    mean_ghi = sum(ghi_clear_w_m2) / len(ghi_clear_w_m2)
    solar = [g / mean_ghi if mean_ghi > 0 else 0.0 for g in ghi_clear_w_m2]
    wind = _wind_shape(hours, mix, seed)
    vre = mix.solar_share + mix.wind_share
    avail = [
        (mix.solar_share * s + mix.wind_share * w) / vre if vre > 0 else 1.0
        for s, w in zip(solar, wind, strict=True)
    ]
    mean_a = sum(avail) / len(avail)
    vals = [min(1.0, max(0.0, site.contracted_green_share * a / mean_a)) for a in avail]
    return SignalSeries.uniform(
        site.site_id,
        SignalType.RENEWABLE_SHARE,
        start,
        vals,
        Provenance.MODELLED,
        "modelled: contracted green share",
    )


def constant_green_series(
    site_id: str, share: float, start: datetime, hours: int, provenance: Provenance
) -> SignalSeries:
    """A flat contracted share (for sites whose contract has no hourly profile)."""
    return SignalSeries.uniform(
        site_id, SignalType.RENEWABLE_SHARE, start, [share] * hours, provenance, "contract"
    )

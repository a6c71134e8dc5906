"""The modelled hourly feed for the embedded Chinese sites (flagged ``modelled`` everywhere).

pvlib computes clear-sky global horizontal irradiance (Ineichen with default Linke
turbidity) at the site's latitude/longitude; the pure model in
``yungu.engines.energy.china_model`` turns it, a wind model and the province's annual mix
and official emission factor into hourly carbon intensity, renewable share, price and the
contracted green share. The annual mixes below are *illustrative calibrations* (rounded
2023 shares of wind, solar and hydro generation by province, from the China Electricity
Council annual statistics as reported in the press); they set levels, not hour-to-hour truth.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pvlib

from yungu.adapters.feeds.parsers import parse_cn_emission_factors
from yungu.domain.errors import InvalidInput
from yungu.domain.world import Site
from yungu.engines.energy.china_model import ProvinceMix, SiteParams, contracted_green_series, model_site
from yungu.engines.energy.signals import SignalSeries, SiteSignal

# iso: (hydro, solar, wind) annual generation shares — illustrative, see module docstring.
PROVINCE_SHARES: dict[str, tuple[float, float, float]] = {
    "CN-NM": (0.01, 0.06, 0.20),
    "CN-BJ": (0.01, 0.03, 0.02),
    "CN-AH": (0.01, 0.08, 0.03),
    "CN-GZ": (0.30, 0.05, 0.04),
    "CN-CQ": (0.25, 0.01, 0.02),
    "CN-JS": (0.00, 0.05, 0.07),
}
# Used when the factors file is not available (MEE 2023 values, same as the compiled CSV).
FALLBACK_EF_2023 = {
    "CN-NM": 0.6479,
    "CN-BJ": 0.5580,
    "CN-AH": 0.6564,
    "CN-GZ": 0.4942,
    "CN-CQ": 0.4840,
    "CN-JS": 0.5978,
}


def feed_iso(energy_feed: str) -> str:
    """``modelled:cn-nm`` -> ``CN-NM``."""
    if not energy_feed.startswith("modelled:"):
        raise InvalidInput(f"{energy_feed!r} is not a modelled feed key (modelled:<province>)")
    return energy_feed.split(":", 1)[1].upper()


def clear_sky_ghi(lat: float, lon: float, start: datetime, hours: int) -> list[float]:
    """Hourly-mean clear-sky GHI (W/m²) at the site, evaluated at each hour's midpoint."""
    times = pd.date_range(pd.Timestamp(start) + pd.Timedelta(minutes=30), periods=hours, freq="1h", tz="UTC")
    loc = pvlib.location.Location(lat, lon, tz="UTC")
    cs = loc.get_clearsky(times, model="ineichen")
    return [max(0.0, float(v)) for v in cs["ghi"].to_numpy()]


def province_mix(iso: str, factors_csv: Path | None = None, year: int | None = None) -> ProvinceMix:
    if iso not in PROVINCE_SHARES:
        raise InvalidInput(f"no modelled mix for {iso}; known: {', '.join(sorted(PROVINCE_SHARES))}")
    ef = FALLBACK_EF_2023[iso]
    if factors_csv is not None and factors_csv.exists():
        f = parse_cn_emission_factors(factors_csv)[iso]
        ef = f.by_year[year] if year in f.by_year else f.latest()[1]
    hydro, solar, wind = PROVINCE_SHARES[iso]
    return ProvinceMix(iso, ef, hydro, solar, wind)


def modelled_site_feed(
    site: Site, start: datetime, hours: int, *, factors_csv: Path | None = None, seed: int = 0
) -> tuple[SiteSignal, SignalSeries]:
    """(location-basis signals, market-basis contracted green share) for ``hours`` from ``start``."""
    if site.energy_feed is None:
        raise InvalidInput(f"site {site.id} has no energy_feed")
    mix = province_mix(feed_iso(site.energy_feed), factors_csv, start.year)
    ghi = clear_sky_ghi(site.lat, site.lon, start, hours)
    params = SiteParams(site.id, float(site.electricity_price_cny_per_kwh), site.green_contract_share)
    return model_site(params, mix, start, ghi, seed=seed), contracted_green_series(
        params, mix, start, ghi, seed=seed
    )

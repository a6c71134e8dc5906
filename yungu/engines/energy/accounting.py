"""Carbon and green-power accounting of hourly energy, location- and market-based.

Inputs are a job's IT energy per UTC hour (from attribution), the site's PUE and its
hourly signals. For every hour ``h`` with facility energy ``E_h = IT_h x PUE``:

* **location-based** (GHG Protocol Scope 2): ``carbon = E_h x CI_h`` with the grid's hourly
  average intensity; ``green = E_h x RE_h`` with the grid's hourly renewable share.
* **market-based**: the site's contracted green supply covers ``E_h x G_h`` (``G_h`` the
  contracted green share available that hour; hourly matching, no annual netting); green
  kWh count zero carbon, the rest is charged at the grid intensity ``CI_h`` (a conservative
  stand-in for the residual mix, which Chinese grids do not publish).

The two are reported side by side and never mixed. An hour without a signal is a *gap*:
it is listed and its energy is left out of the intensity-weighted figures rather than
filled with a guess. Each figure carries ``modelled`` if any input hour was modelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from yungu.engines.energy.signals import Provenance, SignalSeries

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class HourLine:
    hour: datetime
    it_kwh: float
    facility_kwh: float
    carbon_intensity: float | None
    renewable_share: float | None
    contracted_green_share: float | None
    location_g: float | None
    location_green_kwh: float | None
    market_green_kwh: float | None
    market_g: float | None


@dataclass(frozen=True)
class Basis:
    """One accounting basis (location or market): its totals and provenance."""

    carbon_g: float
    green_kwh: float
    green_share: float
    provenance: Provenance
    covered_kwh: float  # facility kWh in hours that had a signal


@dataclass(frozen=True)
class CarbonReport:
    it_kwh: float
    facility_kwh: float
    pue: float
    location: Basis
    market: Basis
    hours: tuple[HourLine, ...]
    gaps: tuple[datetime, ...]  # hours with energy but no signal

    @property
    def complete(self) -> bool:
        return not self.gaps


def _val(s: SignalSeries | None, h: datetime) -> tuple[float | None, Provenance | None]:
    if s is None or not s.covers(h):
        return None, None
    return s.at(h), s.provenance_at(h)


def _basis(carbon: float, green: float, covered: float, modelled: bool) -> Basis:
    return Basis(
        carbon_g=carbon,
        green_kwh=green,
        green_share=green / covered if covered > 0 else 0.0,
        provenance=Provenance.MODELLED if modelled else Provenance.MEASURED,
        covered_kwh=covered,
    )


def account(
    hourly_it_j: Mapping[int, float],
    *,
    pue: float,
    carbon_intensity: SignalSeries | None,
    renewable_share: SignalSeries | None,
    contracted_green: SignalSeries | None,
) -> CarbonReport:
    """Account hourly IT energy (hour epoch seconds -> joules) at a site with ``pue``."""
    lines: list[HourLine] = []
    gaps: list[datetime] = []
    loc_c = loc_g = loc_cov = mkt_c = mkt_g = mkt_cov = 0.0
    loc_mod = mkt_mod = False
    it_total = 0.0
    for epoch in sorted(hourly_it_j):
        it = hourly_it_j[epoch] / J_PER_KWH
        if it <= 0:
            continue
        h = datetime.fromtimestamp(epoch, UTC)
        fac = it * pue
        it_total += it
        ci, ci_p = _val(carbon_intensity, h)
        re, re_p = _val(renewable_share, h)
        gs, gs_p = _val(contracted_green, h)
        lc = lg = mg = mc = None
        if ci is None or re is None:
            gaps.append(h)
        else:
            lc, lg = fac * ci, fac * re
            loc_c += lc
            loc_g += lg
            loc_cov += fac
            loc_mod |= Provenance.MODELLED in (ci_p, re_p)
        if ci is not None and gs is not None:
            mg = fac * gs
            mc = (fac - mg) * ci
            mkt_c += mc
            mkt_g += mg
            mkt_cov += fac
            mkt_mod |= Provenance.MODELLED in (ci_p, gs_p)
        elif ci is not None and h not in gaps:
            gaps.append(h)
        lines.append(HourLine(h, it, fac, ci, re, gs, lc, lg, mg, mc))
    return CarbonReport(
        it_kwh=it_total,
        facility_kwh=it_total * pue,
        pue=pue,
        location=_basis(loc_c, loc_g, loc_cov, loc_mod),
        market=_basis(mkt_c, mkt_g, mkt_cov, mkt_mod),
        hours=tuple(lines),
        gaps=tuple(gaps),
    )


@dataclass(frozen=True)
class MatchLine:
    hour: datetime
    consumption_kwh: float
    green_supply_kwh: float
    matched_kwh: float


def hourly_match(
    consumption_kwh: Mapping[datetime, float], green_supply_kwh: Mapping[datetime, float]
) -> tuple[MatchLine, ...]:
    """Match consumption to green supply hour by hour: ``matched = min(consumption, supply)``.

    Surplus green in one hour never covers a deficit in another (24/7 matching, the
    stricter reading of green-power traceability).
    """
    return tuple(
        MatchLine(h, c, green_supply_kwh.get(h, 0.0), min(c, green_supply_kwh.get(h, 0.0)))
        for h, c in sorted(consumption_kwh.items())
    )

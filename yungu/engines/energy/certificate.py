"""Green-power traceability certificates: the content, canonical form, and hourly matching.

A certificate states, for one job or one tenant-month, hour by hour: the facility energy
consumed, the green supply available to it (market basis: the site's contracted green
share that hour; location basis: the grid's renewable share), the matched green kWh
(``min(consumption, supply)`` per hour, no annual netting), the method, the data sources
and whether each input was measured or modelled.

The signed form is canonical JSON (sorted keys, no whitespace, UTF-8, floats rounded to
fixed decimals and written as strings so every platform serialises them identically);
signing itself happens in the adapter (``yungu.adapters.certs``), since it needs a key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yungu.engines.energy.accounting import CarbonReport

SCHEMA = "yungu.green-certificate/1"


def _r(x: float | None, places: int = 6) -> str | None:
    return None if x is None else f"{x:.{places}f}"


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


@dataclass(frozen=True)
class Consumption:
    """One job's contribution: its accounting report and where it ran."""

    job_id: str
    site_id: str
    report: CarbonReport
    energy_provenance: str  # measured | modelled
    sources: tuple[str, ...]


def certificate_body(
    *,
    cert_id: str,
    kind: str,
    subject: str,
    tenant_id: str,
    platform_id: str,
    issued_at: datetime,
    items: Sequence[Consumption],
) -> dict[str, Any]:
    """The certificate document (unsigned). Hours are merged across items of the same site."""
    per_site: dict[str, dict[datetime, list[float]]] = {}
    for it in items:
        hours = per_site.setdefault(it.site_id, {})
        for h in it.report.hours:
            cur = hours.setdefault(h.hour, [0.0, 0.0, 0.0])
            cur[0] += h.facility_kwh
            cur[1] += h.market_green_kwh or 0.0
            cur[2] += h.location_green_kwh or 0.0
    lines = []
    tot = [0.0, 0.0, 0.0, 0.0]
    for site, hours in sorted(per_site.items()):
        for hour, (kwh, mkt, loc) in sorted(hours.items()):
            matched = min(kwh, mkt)
            tot[0] += kwh
            tot[1] += matched
            tot[2] += loc
            lines.append({"site_id": site, "hour": hour.isoformat(), "facility_kwh": _r(kwh),
                          "contracted_green_kwh": _r(mkt), "matched_kwh": _r(matched), "grid_green_kwh": _r(loc)})  # fmt: skip
    loc_c = sum(i.report.location.carbon_g for i in items)
    mkt_c = sum(i.report.market.carbon_g for i in items)
    modelled_signals = any(
        i.report.location.provenance.value == "modelled" or i.report.market.provenance.value == "modelled"
        for i in items
    )
    return {
        "schema": SCHEMA,
        "id": cert_id,
        "kind": kind,
        "subject": subject,
        "tenant_id": tenant_id,
        "platform_id": platform_id,
        "issued_at": issued_at.isoformat(),
        "method": {
            "matching": "hourly (24/7): matched = min(consumption, contracted green supply) per hour, no netting across hours",
            "energy": "IT energy by device assignment (GPU) and CPU-time share (CPU), idle shared by allocated cores; facility = IT x PUE",
            "carbon_location": "facility kWh x hourly grid average intensity",
            "carbon_market": "(facility kWh - contracted green kWh) x hourly grid intensity",
        },
        "jobs": [
            {
                "job_id": i.job_id,
                "site_id": i.site_id,
                "it_kwh": _r(i.report.it_kwh),
                "facility_kwh": _r(i.report.facility_kwh),
                "pue": _r(i.report.pue, 3),
                "energy": i.energy_provenance,
                "location": {
                    "carbon_g": _r(i.report.location.carbon_g, 3),
                    "green_kwh": _r(i.report.location.green_kwh),
                    "signals": i.report.location.provenance.value,
                },
                "market": {
                    "carbon_g": _r(i.report.market.carbon_g, 3),
                    "green_kwh": _r(i.report.market.green_kwh),
                    "signals": i.report.market.provenance.value,
                },
                "gap_hours": [g.isoformat() for g in i.report.gaps],
                "sources": list(i.sources),
            }
            for i in items
        ],
        "hours": lines,
        "totals": {
            "facility_kwh": _r(tot[0]),
            "matched_green_kwh": _r(tot[1]),
            "matched_share": _r(tot[1] / tot[0] if tot[0] > 0 else 0.0, 4),
            "grid_green_kwh": _r(tot[2]),
            "location_carbon_g": _r(loc_c, 3),
            "market_carbon_g": _r(mkt_c, 3),
        },
        "flags": {
            "energy": "modelled" if any(i.energy_provenance == "modelled" for i in items) else "measured",
            "signals": "modelled" if modelled_signals else "measured",
        },
    }

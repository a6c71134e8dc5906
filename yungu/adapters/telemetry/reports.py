"""Per-job energy and carbon reports, and certificates, from stored telemetry and feeds.

Orchestration only: stored samples -> ``attribute`` (per node) -> ``account`` with the
site's hourly signals -> JSON. The site's signals come from its ``energy_feed``: the
modelled Chinese feed (``modelled:cn-xx``); a site with no feed yields gap hours, listed,
never guessed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from yungu.adapters.feeds.modelled import modelled_site_feed
from yungu.adapters.telemetry.store import TelemetryStore
from yungu.domain.errors import NotFound
from yungu.domain.world import Site, World
from yungu.engines.energy.accounting import CarbonReport, account
from yungu.engines.energy.attribution import JobEnergy, attribute
from yungu.engines.energy.certificate import Consumption
from yungu.engines.energy.signals import SignalSeries, SignalType

DEFAULT_FACTORS = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "data"
    / "energy"
    / "cn_grid_emission_factors_2021_2023.csv"
)


@lru_cache(maxsize=64)
def _site_day(
    site: Site, day: datetime, factors: Path | None
) -> tuple[dict[SignalType, SignalSeries], SignalSeries]:
    sig, green = modelled_site_feed(site, day, 24 * 3, factors_csv=factors)
    return dict(sig.series), green


def site_signals(
    site: Site, start: datetime, end: datetime, factors: Path | None = DEFAULT_FACTORS
) -> tuple[SignalSeries | None, SignalSeries | None, SignalSeries | None, str]:
    """(carbon intensity, renewable share, contracted green share, source) covering [start, end)."""
    if not site.energy_feed or not site.energy_feed.startswith("modelled:"):
        return None, None, None, "no feed configured"
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if end - day > timedelta(days=3):  # long jobs: model the whole span at once
        sig, green = modelled_site_feed(
            site, day, int((end - day).total_seconds() // 3600) + 2, factors_csv=factors
        )
        series = dict(sig.series)
    else:
        series, green = _site_day(site, day, factors if factors and factors.exists() else None)
    ci = series[SignalType.CARBON_INTENSITY]
    return ci, series[SignalType.RENEWABLE_SHARE], green, ci.source


def job_energy(store: TelemetryStore, job_id: str) -> tuple[dict[str, JobEnergy], dict[str, str]]:
    """Per node: the job's attributed energy; and the node -> site map."""
    nodes = store.job_nodes(job_id)
    if not nodes:
        raise NotFound(f"no telemetry for job {job_id!r} / 没有该作业的遥测数据")
    out: dict[str, JobEnergy] = {}
    sites: dict[str, str] = {}
    for node, (lo, hi) in nodes.items():
        info = store.node(node)
        if info is None:
            continue
        # one sample of context either side so the first and last intervals are attributed
        samples = store.node_samples(node, lo - 600_000, hi + 600_000)
        ne = attribute(samples)
        if job_id in ne.jobs:
            out[node] = ne.jobs[job_id]
            sites[node] = info.site_id
    return out, sites


def job_report(
    store: TelemetryStore, world: World, job_id: str, factors: Path | None = DEFAULT_FACTORS
) -> tuple[dict[str, Any], list[Consumption]]:
    per_node, sites = job_energy(store, job_id)
    by_site: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    parts = {
        "cpu_dynamic_j": 0.0,
        "cpu_idle_j": 0.0,
        "gpu_dynamic_j": 0.0,
        "gpu_idle_j": 0.0,
        "modelled_j": 0.0,
    }
    for node, je in per_node.items():
        for h, j in je.hourly_j.items():
            by_site[sites[node]][h] += j
        for k in parts:
            parts[k] += getattr(je, k)
    total = sum(parts[k] for k in ("cpu_dynamic_j", "cpu_idle_j", "gpu_dynamic_j", "gpu_idle_j"))
    energy_prov = "modelled" if parts["modelled_j"] > 1e-9 * max(1.0, total) else "measured"
    items: list[Consumption] = []
    site_reports = []
    for site_id, hourly in sorted(by_site.items()):
        try:
            site = world.site(site_id)
        except KeyError:
            site = None
        hours = sorted(hourly)
        start = datetime.fromtimestamp(hours[0], UTC)
        end = datetime.fromtimestamp(hours[-1] + 3600, UTC)
        ci = re = green = None
        source = "unknown site"
        pue = 1.0
        if site is not None:
            ci, re, green, source = site_signals(site, start, end, factors)
            pue = site.pue
        rep = account(hourly, pue=pue, carbon_intensity=ci, renewable_share=re, contracted_green=green)
        items.append(Consumption(job_id, site_id, rep, energy_prov, (source,)))
        site_reports.append(_site_json(site_id, rep, source))
    doc = {
        "job_id": job_id,
        "energy": {
            "it_kwh": total / 3.6e6,
            "facility_kwh": sum(i.report.facility_kwh for i in items),
            "method": energy_prov,
            "modelled_share": parts["modelled_j"] / total if total > 0 else 0.0,
            "breakdown_j": {k: v for k, v in parts.items() if k != "modelled_j"},
        },
        "location_based": {
            "carbon_g": sum(i.report.location.carbon_g for i in items),
            "green_kwh": sum(i.report.location.green_kwh for i in items),
        },
        "market_based": {
            "carbon_g": sum(i.report.market.carbon_g for i in items),
            "green_kwh": sum(i.report.market.green_kwh for i in items),
        },
        "sites": site_reports,
        "nodes": sorted(per_node),
    }
    return doc, items


def _site_json(site_id: str, rep: CarbonReport, source: str) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "pue": rep.pue,
        "it_kwh": rep.it_kwh,
        "facility_kwh": rep.facility_kwh,
        "location_based": {"carbon_g": rep.location.carbon_g, "green_kwh": rep.location.green_kwh,
                           "green_share": rep.location.green_share, "signals": rep.location.provenance.value},
        "market_based": {"carbon_g": rep.market.carbon_g, "green_kwh": rep.market.green_kwh,
                         "green_share": rep.market.green_share, "signals": rep.market.provenance.value},
        "gap_hours": [g.isoformat() for g in rep.gaps],
        "source": source,
    }  # fmt: skip

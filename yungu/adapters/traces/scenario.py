"""Load a simulator scenario (one TOML file) into a :class:`Scenario` and a policy.

Paths in the file are relative to the file itself. Every error names the file and the
entry (or, for traces and series, the file and line); nothing is half-loaded.
See ``scenarios/README.md`` for the format.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from yungu.adapters.config import load_catalogue
from yungu.adapters.traces import energy as E
from yungu.adapters.traces.jobs import TraceRead, read_alibaba, read_canonical, read_itp, select
from yungu.domain.catalogue import Catalogue, parse_catalogue
from yungu.domain.errors import InvalidInput
from yungu.domain.job import Objective
from yungu.domain.world import ComputeClass, Pool, Region, Site, World
from yungu.engines.energy.signals import ForecastErrorModel, SignalSeries, SignalType, SiteSignal
from yungu.engines.scheduler.green import PolicyConfig, TenantPolicy
from yungu.engines.sim.model import Scenario, TraceJob


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    policy: PolicyConfig
    policies: tuple[str, ...]  # which policies to run (names)
    skipped_rows: int
    path: Path
    lp: Mapping[str, Any]


def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise InvalidInput(f"{where}: missing '{key}'")
    return d[key]


def _dec(v: Any, where: str) -> Decimal:
    if isinstance(v, float):
        raise InvalidInput(f"{where}: give money as a string (e.g. \"12.5\"), not a float")
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise InvalidInput(f"{where}: not a decimal: {v!r}") from None


def _frac(key: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_deadlines(jobs: tuple[TraceJob, ...], spec: Mapping[str, Any]) -> tuple[TraceJob, ...]:
    """Give a seeded fraction of jobs a deadline: ``slack_factor x duration`` (at least ``min_slack_s``)."""
    frac = float(spec.get("fraction", 0.0))
    if not 0 <= frac <= 1:
        raise InvalidInput("trace.deadlines.fraction must be within 0..1")
    factor = float(spec.get("slack_factor", 2.0))
    min_slack = float(spec.get("min_slack_s", 0.0))
    max_dur = float(spec.get("max_duration_s", float("inf")))
    seed = int(spec.get("seed", 0))
    out = []
    for j in jobs:
        if j.deadline_s is None and j.duration_s <= max_dur and _frac(j.id, seed) < frac:
            j = replace(j, deadline_s=max(j.duration_s * factor, j.duration_s + min_slack))
        out.append(j)
    return tuple(out)


_COMMON_TRACE_KEYS = frozenset(
    {"format", "path", "from_s", "to_s", "objective", "max_jobs", "max_duration_s", "deadlines"}
)
_TRACE_KEYS: Mapping[str, frozenset[str]] = {
    "itp": _COMMON_TRACE_KEYS | {"clusters"},
    "canonical": _COMMON_TRACE_KEYS | {"clusters"},
    "alibaba": _COMMON_TRACE_KEYS | {"home", "gpu_type_map"},  # one cluster: no [trace.clusters]
}


def _catalogue(doc: Mapping[str, Any], where: str) -> Catalogue:
    """The packaged catalogue plus the scenario's own ``[accelerator.MODEL]`` entries (same
    format as ``yungu/data/accelerators.toml``, sources required), e.g. a trace's GPU types."""
    base = load_catalogue()
    extra = doc.get("accelerator", {})
    if not extra:
        return base
    clash = sorted(set(extra) & set(base.entries))
    if clash:
        raise InvalidInput(f"{where} [accelerator]: {', '.join(clash)} already in the catalogue; use another name")
    return Catalogue({**base.entries, **parse_catalogue({"accelerator": extra}).entries})


def load_scenario(path: Path, *, skip_bad_rows: bool = False) -> LoadedScenario:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read scenario {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
    base = path.parent
    w = str(path)
    sc = _need(doc, "scenario", w)
    name = str(_need(sc, "name", f"{w} [scenario]"))
    try:
        start = datetime.fromisoformat(str(_need(sc, "start", f"{w} [scenario]")).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{w} [scenario]: start is not an ISO-8601 time") from None
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    catalogue = _catalogue(doc, w)
    fx = {k: float(v) for k, v in doc.get("fx", {}).items()}
    regions: list[Region] = []
    sites: list[Site] = []
    truth: dict[str, SiteSignal] = {}
    for i, s in enumerate(doc.get("site", [])):
        sw = f"{w} [[site]] #{i + 1}"
        sid = str(_need(s, "id", sw))
        region = str(s.get("region", sid))
        if any(x.id == sid for x in sites):
            raise InvalidInput(f"{sw}: duplicate site id {sid!r}")
        if not any(r.id == region for r in regions):
            regions.append(Region(region, str(s.get("name", region)), str(s.get("name_zh", region))))
        tariff = _dec(_need(s, "electricity_price_cny_per_kwh", sw), sw)
        sites.append(
            Site(
                sid, region, str(s.get("name", sid)), str(s.get("name_zh", sid)), str(s.get("provider", "sim")),
                float(s.get("lat", 0.0)), float(s.get("lon", 0.0)), float(s.get("pue", 1.2)), tariff,
                green_contract_share=float(s.get("green_contract_share", 0.0)),
            )
        )
        series: dict[SignalType, SignalSeries] = {}
        ci = s.get("carbon")
        if ci:
            fmt = str(ci.get("format", "electricitymaps"))
            f = base / str(_need(ci, "file", sw + ".carbon"))
            if fmt == "electricitymaps":
                series.update(E.read_electricitymaps(f, sid, lca=bool(ci.get("lca", False))))
            elif fmt == "eia930":
                series.update(E.read_eia930(f, sid))
            elif fmt == "lwa":
                series[SignalType.CARBON_INTENSITY] = E.read_lwa(f, sid)
            else:
                raise InvalidInput(f"{sw}: unknown carbon format {fmt!r} (electricitymaps, eia930, lwa)")
        pr = s.get("price")
        if pr:
            f = base / str(_need(pr, "file", sw + ".price"))
            series[SignalType.PRICE] = E.read_price(
                f, sid, tz=str(pr.get("tz", "UTC")), fx_cny=fx, adder_cny_per_kwh=float(pr.get("adder_cny_per_kwh", 0.0))
            )
        elif series:
            first = next(iter(series.values()))
            series[SignalType.PRICE] = E.constant(sid, SignalType.PRICE, first.start, len(first), float(tariff))
        truth[sid] = SiteSignal(sid, series)
    if not sites:
        raise InvalidInput(f"{w}: no [[site]] entries")
    pools: list[Pool] = []
    for i, p in enumerate(doc.get("pool", [])):
        pw = f"{w} [[pool]] #{i + 1}"
        pid = str(_need(p, "id", pw))
        site = str(_need(p, "site", pw))
        if not any(s.id == site for s in sites):
            raise InvalidInput(f"{pw}: unknown site {site!r}; known: {', '.join(s.id for s in sites)}")
        acc = str(_need(p, "accelerator", pw))
        if acc not in catalogue:
            raise InvalidInput(f"{pw}: unknown accelerator {acc!r}; known: {', '.join(sorted(catalogue.entries))}")
        nodes = int(_need(p, "nodes", pw))
        per = int(p.get("gpus_per_node", 8))
        if nodes <= 0 or per <= 0:
            raise InvalidInput(f"{pw}: nodes and gpus_per_node must be > 0")
        pools.append(
            Pool(
                pid, site, str(p.get("name", pid)), ComputeClass.INTELLIGENT, nodes, int(p.get("cpus_per_node", 64)),
                int(p.get("memory_gb_per_node", 1024)), acc, per,
                _dec(_need(p, "price_cny_per_device_hour", pw), pw),
            )
        )
    if not pools:
        raise InvalidInput(f"{w}: no [[pool]] entries")
    world = World(f"sim-{name}", name, tuple(regions), tuple(sites), tuple(pools))

    tr = _need(doc, "trace", w)
    fmt = str(tr.get("format", "itp"))
    tpath = base / str(_need(tr, "path", f"{w} [trace]"))
    region_ids = {r.id for r in regions}
    known = _TRACE_KEYS.get(fmt)
    if known is None:
        raise InvalidInput(f"{w} [trace]: unknown format {fmt!r} (itp, canonical, alibaba)")
    unknown = sorted(set(tr) - known)
    if unknown:
        raise InvalidInput(
            f"{w} [trace]: {', '.join(unknown)} not understood for format {fmt!r}; known: {', '.join(sorted(known))}"
        )
    clusters = {str(k): str(v) for k, v in tr.get("clusters", {}).items()}
    for k, v in clusters.items():
        if v not in region_ids:
            raise InvalidInput(f"{w} [trace.clusters]: {k} maps to unknown region {v!r}")
    from_s = float(tr.get("from_s", 0))
    to_s = None if tr.get("to_s") is None else float(tr["to_s"])
    if from_s < 0 or (to_s is not None and to_s <= from_s):
        raise InvalidInput(f"{w} [trace]: need 0 <= from_s < to_s (got from_s={from_s:g}, to_s={to_s})")
    read: TraceRead
    if fmt == "itp":
        read = read_itp(tpath, clusters or None, skip_bad_rows=skip_bad_rows, from_s=from_s, to_s=to_s)
    elif fmt == "canonical":
        read = select(read_canonical(tpath, skip_bad_rows=skip_bad_rows), from_s, to_s, clusters or None)
    else:
        read = select(
            read_alibaba(tpath, skip_bad_rows=skip_bad_rows, home=tr.get("home"), type_map=tr.get("gpu_type_map")),
            from_s, to_s, None,
        )
    jobs = read.jobs
    if "max_duration_s" in tr:  # e.g. pods still running when the trace was cut carry its end as their end
        longest = float(tr["max_duration_s"])
        jobs = tuple(j for j in jobs if j.duration_s <= longest)
    for j in jobs:
        if j.home is not None and j.home not in region_ids:
            raise InvalidInput(f"{read.source}: job {j.id} submits from unknown region {j.home!r}")
    if "max_jobs" in tr:
        jobs = jobs[: int(tr["max_jobs"])]
    if "deadlines" in tr:
        jobs = assign_deadlines(jobs, tr["deadlines"])
    objective = tr.get("objective")
    if objective:
        try:
            obj = Objective(objective)
        except ValueError:
            raise InvalidInput(f"{w} [trace]: objective must be one of time, cost, green, balanced") from None
        jobs = tuple(replace(j, objective=obj) for j in jobs)

    fc = doc.get("forecast", {})
    em = ForecastErrorModel(
        seed=int(fc.get("seed", 0)), sigma_1h=float(fc.get("sigma_1h", 0.05)),
        sigma_per_hour=float(fc.get("sigma_per_hour", 0.005)), sigma_max=float(fc.get("sigma_max", 0.5)),
        bias=float(fc.get("bias", 0.0)),
    )
    pol = doc.get("policy", {})
    lat: dict[tuple[str, str], float] = {}
    for k, v in doc.get("latency_ms", {}).items():
        a, _, b = str(k).partition("|")
        if a not in region_ids or b not in region_ids:
            raise InvalidInput(f"{w} [latency_ms]: {k!r} names an unknown region (write 'a|b')")
        lat[(a, b)] = float(v)
    tenants = {str(k): TenantPolicy(float(v.get("weight", 1.0)), v.get("quota_units"), float(v.get("borrow_units", float("inf"))))
               for k, v in doc.get("tenant", {}).items()}
    try:
        policy = PolicyConfig(
            tenants=tenants,
            latency_ms=lat,
            weights_override={str(k): float(v) for k, v in pol.get("weights", {}).items()},
            objective_override=Objective(pol["objective"]) if "objective" in pol else None,
            power_load=float(sc.get("power_load", 0.8)),
            time_shift=bool(pol.get("time_shift", True)),
            backfill=bool(pol.get("backfill", True)),
            preemption=bool(pol.get("preemption", True)),
            shift_gain=float(pol.get("shift_gain", 0.05)),
            max_shift_hours=int(pol.get("max_shift_hours", 48)),
        )
    except ValueError as exc:
        raise InvalidInput(f"{w} [policy]: {exc}") from None
    scenario = Scenario(
        name, world, catalogue, start, jobs, truth, em,
        horizon_hours=int(sc.get("horizon_hours", 48)),
        round_interval_s=float(sc.get("round_interval_s", 300)),
        gpus_per_node=int(sc.get("gpus_per_node", 8)),
        power_load=float(sc.get("power_load", 0.8)),
        source=str(path),
    )
    policies = tuple(str(x) for x in doc.get("run", {}).get("policies", ["yungu", "fifo-backfill"]))
    return LoadedScenario(scenario, policy, policies, read.skipped, path, doc.get("lp", {}))

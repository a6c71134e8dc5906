"""Load the platform configuration (one TOML file) into a ``World`` and executor settings.

The embedded default (``yungu/data/default_world.toml``) is used when no file is given.
Errors name the file and the offending entry; nothing is half-loaded.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from yungu.domain.catalogue import Catalogue, Precision, parse_catalogue
from yungu.domain.errors import InvalidInput
from yungu.domain.job import Objective
from yungu.domain.world import PROVIDER_ID, ComputeClass, Pool, Region, Site, World
from yungu.engines.energy.signals import ForecastErrorModel
from yungu.engines.scheduler.green import PolicyConfig, TenantPolicy


@dataclass(frozen=True)
class PlatformConfig:
    world: World
    executors: Mapping[str, Mapping[str, Any]]  # name -> settings (with "type")
    source: str
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    forecast_error: ForecastErrorModel = field(default_factory=ForecastErrorModel)


def _read_packaged(name: str) -> str:
    return resources.files("yungu.data").joinpath(name).read_text(encoding="utf-8")


def load_catalogue(path: Path | None = None) -> Catalogue:
    text = path.read_text(encoding="utf-8") if path else _read_packaged("accelerators.toml")
    return parse_catalogue(tomllib.loads(text))


def load_config(path: Path | None = None, catalogue: Catalogue | None = None) -> PlatformConfig:
    if path is None:
        text, source = _read_packaged("default_world.toml"), "embedded:default_world.toml"
    else:
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise InvalidInput(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from exc
    return parse_config(doc, source, catalogue or load_catalogue())


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise InvalidInput(f"{where}: give money as a string (e.g. \"0.32\"), not a float")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"{where}: not a decimal: {value!r}") from exc


def parse_config(doc: Mapping[str, Any], source: str, catalogue: Catalogue) -> PlatformConfig:
    platform = doc.get("platform", {})
    executors = {str(k): dict(v) for k, v in doc.get("executor", {}).items()}
    for name, ex in executors.items():
        if ex.get("type") not in ("local", "slurm", "ray"):
            raise InvalidInput(f"{source}: executor {name!r} has type {ex.get('type')!r}; use local, slurm or ray")
    regions, sites, pools = [], [], []
    try:
        for r in doc.get("region", []):
            regions.append(Region(r["id"], r["name"], r.get("name_zh", r["name"]), bool(r.get("home", False)),
                                  r.get("province", "")))
        region_ids = {r.id for r in regions}
        for s in doc.get("site", []):
            where = f"{source}: site {s.get('id')!r}"
            if s["region"] not in region_ids:
                raise InvalidInput(f"{where}: unknown region {s['region']!r}")
            executor = s.get("executor", "local")
            if executor not in executors:
                raise InvalidInput(f"{where}: unknown executor {executor!r}; define [executor.{executor}]")
            pue = float(s.get("pue", 1.3))
            if not 1.0 <= pue <= 3.0:
                raise InvalidInput(f"{where}: PUE must be between 1.0 and 3.0, got {pue}")
            provider_id = str(s.get("provider_id", ""))
            if provider_id and not PROVIDER_ID.match(provider_id):
                raise InvalidInput(f"{where}: provider_id {provider_id!r} must be 1..64 of [a-z0-9._-], "
                                   "starting with a letter or digit (it keys the provider's ledger account)")
            sites.append(Site(
                id=s["id"], region_id=s["region"], name=s["name"], name_zh=s.get("name_zh", s["name"]),
                provider=s.get("provider", ""), lat=float(s["lat"]), lon=float(s["lon"]), pue=pue,
                electricity_price_cny_per_kwh=_dec(s.get("electricity_price_cny_per_kwh", "0.5"), where),
                executor=executor, energy_feed=s.get("energy_feed"),
                green_contract_share=float(s.get("green_contract_share", 0.0)), provider_id=provider_id,
            ))
        site_ids = {s.id for s in sites}
        for p in doc.get("pool", []):
            where = f"{source}: pool {p.get('id')!r}"
            if p["site"] not in site_ids:
                raise InvalidInput(f"{where}: unknown site {p['site']!r}")
            acc = p.get("accelerator")
            if acc is not None and acc not in catalogue:
                raise InvalidInput(f"{where}: accelerator {acc!r} is not in the catalogue")
            pool = Pool(
                id=p["id"], site_id=p["site"], name=p.get("name", p["id"]),
                compute_class=ComputeClass(p["compute_class"]), nodes=int(p["nodes"]),
                cpus_per_node=int(p["cpus_per_node"]), memory_gb_per_node=int(p["memory_gb_per_node"]),
                accelerator=acc, accelerators_per_node=int(p.get("accelerators_per_node", 0)),
                price_cny_per_device_hour=_dec(p.get("price_cny_per_device_hour", "0"), where),
                price_cny_per_cpu_hour=_dec(p.get("price_cny_per_cpu_hour", "0"), where),
                declared_precision=Precision(p.get("declared_precision", "fp16")),
            )
            if pool.nodes < 1 or pool.cpus_per_node < 1 or pool.accelerators_per_node < 0:
                raise InvalidInput(f"{where}: nodes and cpus_per_node must be >= 1")
            pools.append(pool)
    except KeyError as exc:
        raise InvalidInput(f"{source}: missing field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{source}: {exc}") from exc
    for kind, items in (("region", regions), ("site", sites), ("pool", pools)):
        ids = [i.id for i in items]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise InvalidInput(f"{source}: duplicate {kind} ids: {sorted(dupes)}")
    if not pools:
        raise InvalidInput(f"{source}: no pools defined")
    names: dict[str, str] = {}
    for site in sites:  # one provider id is one company: it may not carry two display names
        other = names.setdefault(site.provider_id, site.provider)
        if other != site.provider:
            raise InvalidInput(f"{source}: site {site.id!r}: provider_id {site.provider_id!r} is already used by "
                               f"provider {other!r}; give each provider its own provider_id")
    world = World(
        platform_id=str(platform.get("id", "yungu")),
        platform_name=str(platform.get("name", "Yungu")),
        regions=tuple(regions), sites=tuple(sites), pools=tuple(pools),
    )
    policy, error = parse_scheduler(doc.get("scheduler", {}), source, {r.id for r in regions})
    return PlatformConfig(world=world, executors=executors, source=source, policy=policy, forecast_error=error)


POLICY_FLAGS = ("time_shift", "backfill", "preemption")
POLICY_NUMBERS = ("default_latency_ms", "power_load", "default_carbon_g_per_kwh", "deadline_margin_frac",
                  "deadline_margin_s", "urgent_lead_s", "shift_gain", "max_wait_frac")


def parse_scheduler(raw: Mapping[str, Any], source: str, regions: set[str]) -> tuple[PolicyConfig, ForecastErrorModel]:
    """The ``[scheduler]`` table: operator policy (fair share, quotas, latency, objectives)."""
    where = f"{source}: [scheduler]"
    known = {"tenants", "latency_ms", "objective_override", "weights", "forecast_error", "max_shift_hours",
             *POLICY_FLAGS, *POLICY_NUMBERS}
    extra = sorted(set(raw) - known)
    if extra:
        raise InvalidInput(f"{where}: unknown keys {extra}; known: {sorted(known)}")
    try:
        tenants = {str(k): TenantPolicy(weight=float(v.get("weight", 1.0)),
                                        quota_units=float(v["quota_units"]) if "quota_units" in v else None,
                                        borrow_units=float(v.get("borrow_units", float("inf"))))
                   for k, v in raw.get("tenants", {}).items()}
        latency: dict[tuple[str, str], float] = {}
        for pair, ms in raw.get("latency_ms", {}).items():
            a, _, b = str(pair).partition(".")
            if a not in regions or b not in regions:
                raise InvalidInput(f"{where}: latency_ms key {pair!r} must be '<region>.<region>' of known regions")
            latency[(a, b)] = float(ms)
        kwargs: dict[str, Any] = {k: bool(raw[k]) for k in POLICY_FLAGS if k in raw}
        kwargs.update({k: float(raw[k]) for k in POLICY_NUMBERS if k in raw})
        if "max_shift_hours" in raw:
            kwargs["max_shift_hours"] = int(raw["max_shift_hours"])
        if "objective_override" in raw:
            kwargs["objective_override"] = Objective(raw["objective_override"])
        if "weights" in raw:
            kwargs["weights_override"] = {str(k): float(v) for k, v in raw["weights"].items()}
        fe = raw.get("forecast_error", {})
        error = ForecastErrorModel(seed=int(fe.get("seed", 0)), sigma_1h=float(fe.get("sigma_1h", 0.05)),
                                   sigma_per_hour=float(fe.get("sigma_per_hour", 0.005)),
                                   sigma_max=float(fe.get("sigma_max", 0.5)), bias=float(fe.get("bias", 0.0)))
        return PolicyConfig(tenants=tenants, latency_ms=latency, **kwargs), error
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(f"{where}: {exc}") from exc

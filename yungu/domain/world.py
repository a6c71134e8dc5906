"""Regions, sites and pools: where capacity lives.

A pool is a set of homogeneous nodes at one site. Capacity is *declared* (from public
figures or the operator's config); the executor behind the site runs the real processes.
Nothing here assumes a pool is local: a pool's site names the executor that reaches it,
which may later be a peer platform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from yungu.domain.catalogue import Precision


class ComputeClass(StrEnum):
    GENERAL = "general"  # 通用算力 (CPU)
    INTELLIGENT = "intelligent"  # 智能算力 (accelerators)
    SUPERCOMPUTING = "supercomputing"  # 超算算力 (HPC, FP64)

    @property
    def zh(self) -> str:
        return {"general": "通用", "intelligent": "智算", "supercomputing": "超算"}[self.value]


@dataclass(frozen=True)
class Region:
    id: str
    name: str
    name_zh: str
    home: bool = False
    province: str = ""


PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def provider_slug(name: str, fallback: str) -> str:
    """A stable provider id derived from a display name: "Yungu Horinger" -> "yungu-horinger".

    Names with nothing ASCII to keep (e.g. only Chinese) fall back to ``fallback`` (the site id).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].rstrip("-")
    if slug:
        return slug
    fb = re.sub(r"[^a-z0-9._-]+", "-", fallback.lower()).strip("-._")[:64]
    return fb or "provider"


@dataclass(frozen=True)
class Site:
    """A data centre. ``provider`` is the operating company's display name; ``provider_id`` is
    its stable id (ledger accounts, usage records, settlement), declared in the config or
    derived from the name. Renaming a provider never moves its money."""

    id: str
    region_id: str
    name: str
    name_zh: str
    provider: str
    lat: float
    lon: float
    pue: float
    electricity_price_cny_per_kwh: Decimal
    executor: str = "local"
    energy_feed: str | None = None
    green_contract_share: float = 0.0  # market-based: contracted green power share, 0..1
    provider_id: str = ""  # "" = derived from ``provider`` (or the site id)

    def __post_init__(self) -> None:
        if not self.provider_id:
            object.__setattr__(self, "provider_id", provider_slug(self.provider, self.id))


@dataclass(frozen=True)
class Pool:
    id: str
    site_id: str
    name: str
    compute_class: ComputeClass
    nodes: int
    cpus_per_node: int
    memory_gb_per_node: int
    accelerator: str | None = None  # catalogue model
    accelerators_per_node: int = 0
    price_cny_per_device_hour: Decimal = Decimal("0")
    price_cny_per_cpu_hour: Decimal = Decimal("0")
    declared_precision: Precision = Precision.FP16
    labels: tuple[tuple[str, str], ...] = field(default=())

    @property
    def total_devices(self) -> int:
        return self.nodes * self.accelerators_per_node

    @property
    def total_cpus(self) -> int:
        return self.nodes * self.cpus_per_node


@dataclass(frozen=True)
class World:
    """The configured federation: regions, sites and pools, immutable once loaded."""

    platform_id: str
    platform_name: str
    regions: tuple[Region, ...]
    sites: tuple[Site, ...]
    pools: tuple[Pool, ...]

    def site(self, site_id: str) -> Site:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)

    def pool(self, pool_id: str) -> Pool:
        for p in self.pools:
            if p.id == pool_id:
                return p
        raise KeyError(pool_id)

    def has_pool(self, pool_id: str) -> bool:
        return any(p.id == pool_id for p in self.pools)

    def provider_name(self, provider_id: str) -> str:
        """The display name of a provider id (the id itself when no site names it)."""
        for s in self.sites:
            if s.provider_id == provider_id:
                return s.provider or provider_id
        return provider_id

    def provider_id_of(self, name_or_id: str) -> str | None:
        """A provider's stable id from its id or its display name; None if no site has it."""
        for s in self.sites:
            if name_or_id in (s.provider_id, s.provider):
                return s.provider_id
        return None

    def region_of_pool(self, pool_id: str) -> str:
        return self.site(self.pool(pool_id).site_id).region_id

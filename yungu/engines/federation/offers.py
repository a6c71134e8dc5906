"""A peer's offers as pools: remote capacity competes with local capacity on the job's objective.

Each fresh offer from a healthy peer becomes a :class:`RemotePool`: a ``Region`` (if the
origin does not know it), a ``Site`` whose executor is ``peer:<platform>``, a ``Pool`` at our
resale price (offered price x (1 + markup)), its free capacity as a ``PoolState``, and its
48-hour outlook as a ``SiteForecast``. The scheduler needs no special case. Labels on the
pool carry what a filter or ``explain`` needs: the peer, link latency, offer age and expiry.

Ids: remote pools are ``"<platform>/<pool>"``, remote sites ``"<platform>/<site>"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from yungu.domain.world import ComputeClass, Pool, Region, Site, World
from yungu.engines.energy.signals import Forecast, ForecastErrorModel, Provenance, SignalType, SiteForecast
from yungu.engines.federation.messages import PoolOffer
from yungu.engines.federation.policy import PeeringPolicy
from yungu.engines.scheduler.types import NodeFree, PoolState

SEP = "/"
LABEL_PEER = "federation.peer"
LABEL_OFFER = "federation.offer"
LABEL_LATENCY = "federation.latency_ms"
LABEL_AGE = "federation.offer_age_s"
LABEL_EXPIRES = "federation.offer_expires"
LABEL_REMOTE_POOL = "federation.remote_pool"
LABEL_OFFERED_DEVICE_PRICE = "federation.offered_device_price"
LABEL_OFFERED_CPU_PRICE = "federation.offered_cpu_price"
LABEL_TENANTS = "federation.tenants"


def executor_name(platform: str) -> str:
    return f"peer:{platform}"


def remote_id(platform: str, local_id: str) -> str:
    return f"{platform}{SEP}{local_id}"


def split_remote(pool_id: str) -> tuple[str, str] | None:
    """``"<platform>/<pool>"`` -> (platform, pool); None for a local pool."""
    platform, sep, pool = pool_id.partition(SEP)
    return (platform, pool) if sep and platform and pool else None


@dataclass(frozen=True)
class RemotePool:
    platform: str
    offer: PoolOffer
    region: Region
    site: Site
    pool: Pool
    state: PoolState
    forecast: SiteForecast | None


def resale_price(offered: Decimal, markup: Decimal) -> Decimal:
    return (offered * (1 + markup)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)


def to_remote_pool(offer: PoolOffer, platform_name: str, policy: PeeringPolicy, latency_ms: float,
                   now: datetime) -> RemotePool | str:
    """The pool the scheduler sees for ``offer``, or the reason it is not offered to it."""
    if offer.expires_at <= now:
        return f"offer {offer.offer_id} expired at {offer.expires_at.isoformat()}"
    try:
        cc = ComputeClass(offer.compute_class)
    except ValueError:
        return f"unknown compute class {offer.compute_class!r}"
    why = policy.delegate.allows(compute_class=offer.compute_class, accelerator=offer.accelerator, tenant=None,
                                 device_price=offer.price_cny_per_device_hour, cpu_price=offer.price_cny_per_cpu_hour,
                                 accelerators=offer.accelerators_per_node)
    if why:
        return why
    p = offer.platform_id
    region = Region(offer.region_id, offer.region_name, offer.region_name)
    site = Site(id=remote_id(p, offer.site_id), region_id=offer.region_id, name=f"{offer.site_id} @ {platform_name}",
                name_zh=f"{offer.site_id} @ {platform_name}", provider=f"peer:{p}", lat=0.0, lon=0.0,
                pue=offer.pue, electricity_price_cny_per_kwh=Decimal("0"), executor=executor_name(p),
                green_contract_share=offer.green_contract_share)
    age = max(0.0, (now - offer.issued_at).total_seconds())
    labels: tuple[tuple[str, str], ...] = ((LABEL_PEER, p), (LABEL_OFFER, offer.offer_id), (LABEL_LATENCY, f"{latency_ms:.1f}"),
              (LABEL_AGE, f"{age:.1f}"), (LABEL_EXPIRES, offer.expires_at.isoformat()),
              (LABEL_REMOTE_POOL, offer.pool_id),
              (LABEL_OFFERED_DEVICE_PRICE, str(offer.price_cny_per_device_hour)),
              (LABEL_OFFERED_CPU_PRICE, str(offer.price_cny_per_cpu_hour)))
    if policy.delegate.tenants:
        labels = (*labels, (LABEL_TENANTS, ",".join(policy.delegate.tenants)))
    pool = Pool(id=remote_id(p, offer.pool_id), site_id=site.id, name=f"{offer.pool_id} @ {platform_name}",
                compute_class=cc, nodes=offer.nodes, cpus_per_node=offer.cpus_per_node,
                memory_gb_per_node=offer.memory_gb_per_node, accelerator=offer.accelerator,
                accelerators_per_node=offer.accelerators_per_node,
                price_cny_per_device_hour=resale_price(offer.price_cny_per_device_hour, policy.resale_markup),
                price_cny_per_cpu_hour=resale_price(offer.price_cny_per_cpu_hour, policy.resale_markup),
                labels=labels)
    return RemotePool(p, offer, region, site, pool, pool_state(offer, pool.id), forecast(offer, site.id))


def pool_state(offer: PoolOffer, pool_id: str) -> PoolState:
    """Free nodes first (low indices), then the nodes the offer reports as full."""
    nodes: list[NodeFree] = []
    for count, cpus, mem, devs in sorted(offer.free, key=lambda g: (-g[3], -g[1])):
        nodes.extend(NodeFree(cpus, mem, tuple(range(devs))) for _ in range(count))
    nodes.extend(NodeFree(0, 0, ()) for _ in range(offer.nodes - len(nodes)))
    return PoolState(pool_id, tuple(nodes), True)


def forecast(offer: PoolOffer, site_id: str) -> SiteForecast | None:
    fc = offer.forecast
    if fc is None:
        return None
    err = ForecastErrorModel(seed=0)
    series = {
        SignalType.CARBON_INTENSITY: Forecast(site_id, SignalType.CARBON_INTENSITY, offer.issued_at, fc.start,
                                              fc.carbon_g_per_kwh, (Provenance.MODELLED,) * len(fc.carbon_g_per_kwh),
                                              err),
        SignalType.RENEWABLE_SHARE: Forecast(site_id, SignalType.RENEWABLE_SHARE, offer.issued_at, fc.start,
                                             fc.renewable_share, (Provenance.MODELLED,) * len(fc.renewable_share),
                                             err),
    }
    return SiteForecast(site_id, offer.issued_at, series)


def extend_world(world: World, remote: Iterable[RemotePool]) -> World:
    """The local world plus remote regions, sites and pools (local ids win on a clash)."""
    remote = list(remote)
    if not remote:
        return world
    regions = {r.id: r for r in world.regions}
    for rp in remote:
        regions.setdefault(rp.region.id, rp.region)
    local_sites = {s.id for s in world.sites}
    local_pools = {p.id for p in world.pools}
    sites = list(world.sites)
    seen_sites = set(local_sites)
    for rp in remote:
        if rp.site.id not in seen_sites:
            sites.append(rp.site)
            seen_sites.add(rp.site.id)
    pools = list(world.pools) + [rp.pool for rp in remote if rp.pool.id not in local_pools]
    return World(world.platform_id, world.platform_name, tuple(regions.values()), tuple(sites), tuple(pools))


def label(pool: Pool, key: str) -> str | None:
    for k, v in pool.labels:
        if k == key:
            return v
    return None


def is_remote(pool: Pool) -> bool:
    return label(pool, LABEL_PEER) is not None


def offer_stale(offer: PoolOffer, now: datetime, max_age_s: float) -> bool:
    return offer.expires_at <= now or now - offer.issued_at > timedelta(seconds=max_age_s)


def group_free(nodes: Iterable[tuple[int, int, int]]) -> tuple[tuple[int, int, int, int], ...]:
    """(cpus, mem, devices) per node -> the offer's compact groups."""
    counts: dict[tuple[int, int, int], int] = {}
    for n in nodes:
        counts[n] = counts.get(n, 0) + 1
    return tuple((c, *k) for k, c in sorted(counts.items(), key=lambda kv: (-kv[0][2], -kv[0][0], -kv[0][1])))


def by_platform(pools: Iterable[RemotePool]) -> Mapping[str, list[RemotePool]]:
    out: dict[str, list[RemotePool]] = {}
    for rp in pools:
        out.setdefault(rp.platform, []).append(rp)
    return out

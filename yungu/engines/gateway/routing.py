"""Which replica serves a request: a pure choice over a frozen view of the replicas.

Filters first (each exclusion keeps its reason, like the scheduler's filter plugins): the
model, the key's data-residency regions, the request's regions, the request's maximum price,
an open circuit breaker. Then an ordered list of candidates: the request's ``order`` first
(OpenRouter's provider order), the rest by ``sort`` (price, latency or throughput) or, by
default, by a weighted score in the scheduler's manner: each term is the option's metric
divided by the largest among the candidates (so about ``[0, 1]``, smaller is better) and the
weights combine them (price, load, latency, green share). The caller walks the list: the
first candidate, then the fallbacks if ``allow_fallbacks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from yungu.domain.errors import InvalidInput
from yungu.engines.gateway.breaker import BreakerState
from yungu.engines.gateway.pricing import Price, parse_price


@dataclass(frozen=True)
class Replica:
    """One serving endpoint of a model: a local inference job's server, a peer's replica,
    or an OpenAI-compatible upstream an operator registered."""

    id: str
    model: str
    url: str  # base URL of its OpenAI-compatible API, e.g. http://127.0.0.1:8011/v1
    region: str
    price: Price
    provider: str = ""  # who is paid for the tokens (a site's provider, or a peer's name)
    platform: str = ""  # "" when this platform serves it; a peer platform's id otherwise
    pool_id: str = ""
    job_id: str = ""  # the inference job that runs it (empty for registered upstreams)
    green_share: float = 0.0  # 0..1 of the serving site's electricity
    kind: str = "chat"  # chat | embeddings


class LoadLike(Protocol):
    """What routing reads of a replica's observed load (``Load``, or the gateway's live stats)."""

    @property
    def inflight(self) -> int: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def tokens_per_s(self) -> float: ...


@dataclass(frozen=True)
class Load:
    """What the gateway observed of a replica (exponentially weighted)."""

    inflight: int = 0
    latency_ms: float = 0.0  # time to the first byte
    tokens_per_s: float = 0.0


class Sort(StrEnum):
    PRICE = "price"
    LATENCY = "latency"
    THROUGHPUT = "throughput"


@dataclass(frozen=True)
class Preferences:
    """OpenRouter-style per-request routing preferences (the request's ``provider`` object)."""

    order: tuple[str, ...] = ()  # replica ids, providers or platforms to try first, in order
    allow_fallbacks: bool = True
    sort: Sort | None = None
    max_price: Price | None = None  # per million tokens; dearer replicas are never used
    regions: tuple[str, ...] = ()  # only these regions (within what the key allows)

    @staticmethod
    def parse(raw: object) -> Preferences:
        """From the request body's ``provider`` object; raises ``InvalidInput`` on nonsense."""
        if raw is None:
            return Preferences()
        if not isinstance(raw, Mapping):
            raise InvalidInput("'provider' must be an object")
        known = {"order", "allow_fallbacks", "sort", "max_price", "region", "regions"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"unknown provider preference(s) {unknown}; known: {sorted(known)}")
        order = raw.get("order") or ()
        if not isinstance(order, (list, tuple)) or not all(isinstance(x, str) for x in order):
            raise InvalidInput("'provider.order' must be a list of strings")
        fallbacks = raw.get("allow_fallbacks", True)
        if not isinstance(fallbacks, bool):
            raise InvalidInput("'provider.allow_fallbacks' must be true or false")
        sort = raw.get("sort")
        if sort is not None and sort not in {s.value for s in Sort}:
            raise InvalidInput(f"'provider.sort' must be one of {[s.value for s in Sort]}")
        regions = raw.get("regions", raw.get("region", ()))
        if isinstance(regions, str):
            regions = (regions,)
        if not isinstance(regions, (list, tuple)) or not all(isinstance(x, str) for x in regions):
            raise InvalidInput("'provider.region' must be a string or a list of strings")
        max_price = None
        mp = raw.get("max_price")
        if mp is not None:
            if not isinstance(mp, Mapping) or not set(mp) <= {"prompt", "completion"}:
                raise InvalidInput("'provider.max_price' must be {\"prompt\": ..., \"completion\": ...} "
                                   "in CNY per million tokens")
            cap = parse_price(MAX_SENTINEL)
            max_price = Price(parse_price(mp.get("prompt", cap)), parse_price(mp.get("completion", cap)))
        return Preferences(tuple(order), fallbacks, Sort(sort) if sort else None, max_price, tuple(regions))


MAX_SENTINEL = "1000000"


@dataclass(frozen=True)
class Weights:
    price: float = 0.4
    load: float = 0.3
    latency: float = 0.2
    green: float = 0.1


@dataclass(frozen=True)
class Route:
    """The candidates to try, best first, and why the others were left out."""

    candidates: tuple[Replica, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)  # replica id -> reason

    @property
    def reserve_price(self) -> Price | None:
        """The dearest candidate's price: reserving at it covers every fallback."""
        if not self.candidates:
            return None
        p = self.candidates[0].price
        for r in self.candidates[1:]:
            p = p.dearer(r.price)
        return p


def _per_m(p: Price) -> Decimal:
    return p.input_per_m + p.output_per_m


def choose(replicas: Sequence[Replica], model: str, prefs: Preferences, *,
           allowed_regions: Sequence[str] = (), loads: Mapping[str, LoadLike] | None = None,
           breakers: Mapping[str, BreakerState] | None = None, weights: Weights = Weights(),
           kind: str = "chat") -> Route:
    loads = loads if loads is not None else {}
    breakers = breakers or {}
    idle = Load()
    excluded: dict[str, str] = {}
    ok: list[Replica] = []
    for r in replicas:
        if r.model != model:
            continue
        if r.kind != kind:
            excluded[r.id] = f"serves {r.kind}, not {kind}"
        elif allowed_regions and r.region not in allowed_regions:
            excluded[r.id] = f"region {r.region} is outside the key's data-residency regions {list(allowed_regions)}"
        elif prefs.regions and r.region not in prefs.regions:
            excluded[r.id] = f"region {r.region} not in the requested regions {list(prefs.regions)}"
        elif prefs.max_price is not None and (r.price.input_per_m > prefs.max_price.input_per_m
                                              or r.price.output_per_m > prefs.max_price.output_per_m):
            excluded[r.id] = "dearer than the request's max_price"
        elif breakers.get(r.id) is BreakerState.OPEN:
            excluded[r.id] = "circuit breaker open"
        else:
            ok.append(r)
    if not ok:
        return Route((), excluded)

    def metric(r: Replica) -> tuple[float, float, str]:
        ld = loads.get(r.id, idle)
        if prefs.sort is Sort.PRICE:
            return (float(_per_m(r.price)), ld.inflight, r.id)
        if prefs.sort is Sort.LATENCY:
            return (ld.latency_ms, ld.inflight, r.id)
        if prefs.sort is Sort.THROUGHPUT:
            return (-ld.tokens_per_s, ld.inflight, r.id)
        return (score(r, ld, ref_price, ref_latency, ref_load, weights), 0.0, r.id)

    ref_price = max(float(_per_m(r.price)) for r in ok) or 1.0
    ref_latency = max(loads.get(r.id, idle).latency_ms for r in ok) or 1.0
    ref_load = max(loads.get(r.id, idle).inflight for r in ok) or 1
    ranked = sorted(ok, key=metric)
    if prefs.order:
        rank = {name: i for i, name in enumerate(prefs.order)}

        def pos(r: Replica) -> int:
            return min(rank.get(r.id, 1 << 30), rank.get(r.provider, 1 << 30), rank.get(r.platform or "local", 1 << 30))

        first = sorted((r for r in ranked if pos(r) < 1 << 30), key=pos)  # stable: ties keep the rank
        rest = [r for r in ranked if pos(r) >= 1 << 30]
        ranked = first + rest if prefs.allow_fallbacks else first
        for r in rest if not prefs.allow_fallbacks else ():
            excluded[r.id] = "not in provider.order and allow_fallbacks is false"
    elif not prefs.allow_fallbacks:
        for r in ranked[1:]:
            excluded[r.id] = "allow_fallbacks is false"
        ranked = ranked[:1]
    return Route(tuple(ranked), excluded)


def score(r: Replica, ld: LoadLike, ref_price: float, ref_latency: float, ref_load: int, w: Weights) -> float:
    """Smaller is better; each term is normalised by the largest among the candidates."""
    return (w.price * float(_per_m(r.price)) / ref_price
            + w.load * ld.inflight / ref_load
            + w.latency * ld.latency_ms / ref_latency
            + w.green * (1.0 - min(1.0, max(0.0, r.green_share))))

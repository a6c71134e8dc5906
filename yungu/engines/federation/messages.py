"""The federation protocol's message bodies, as values, with strict parsers.

Wire format: JSON objects. Money travels as decimal strings (CNY) or integer fen, never as
floats; times as RFC 3339 UTC strings. Every parser raises ``InvalidInput`` with the field
that was wrong, so a bad message is refused with a 4xx and changes nothing.

Identity of a delegation: ``(origin platform, origin job id, attempt)``; its request id on
the wire is ``"{origin_job_id}.{attempt}"`` (the origin executor request id), and the
attempt is the lease *epoch*.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from yungu.domain.errors import InvalidInput

PROTOCOL = "yungu-federation/1"
MAX_BATCH = 1000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_PLATFORM = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a detached signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- field readers

def _get(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping):
        raise InvalidInput(f"{where}: expected an object")
    if key not in d:
        raise InvalidInput(f"{where}: missing field {key!r}")
    return d[key]


def text(d: Mapping[str, Any], key: str, where: str, *, pattern: re.Pattern[str] | None = None,
         max_len: int = 200, optional: bool = False) -> str:
    if optional and key not in d:
        return ""
    v = _get(d, key, where)
    if not isinstance(v, str) or len(v) > max_len:
        raise InvalidInput(f"{where}: {key} must be a string of at most {max_len} characters")
    if pattern is not None and not pattern.match(v):
        raise InvalidInput(f"{where}: {key} {v!r} is not a valid identifier")
    return v


def integer(d: Mapping[str, Any], key: str, where: str, lo: int = 0, hi: int = 10**15) -> int:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidInput(f"{where}: {key} must be an integer {lo}..{hi}")
    return v


def number(d: Mapping[str, Any], key: str, where: str, lo: float, hi: float) -> float:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= float(v) <= hi:
        raise InvalidInput(f"{where}: {key} must be a number {lo}..{hi}")
    return float(v)


def money(d: Mapping[str, Any], key: str, where: str) -> Decimal:
    v = _get(d, key, where)
    if not isinstance(v, str):
        raise InvalidInput(f"{where}: {key} must be a decimal string such as \"1.50\" (not a float)")
    try:
        out = Decimal(v)
    except InvalidOperation as exc:
        raise InvalidInput(f"{where}: {key} is not a decimal: {v!r}") from exc
    if not out.is_finite() or out < 0 or out > Decimal(10**9):
        raise InvalidInput(f"{where}: {key} must be 0..1e9")
    return out


def when(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> datetime | None:
    if optional and d.get(key) is None:
        return None
    v = _get(d, key, where)
    if not isinstance(v, str):
        raise InvalidInput(f"{where}: {key} must be an RFC 3339 time string")
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{where}: {key} is not an RFC 3339 time: {v!r}") from exc
    if t.tzinfo is None:
        raise InvalidInput(f"{where}: {key} must carry a time zone")
    return t.astimezone(UTC)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def items(d: Mapping[str, Any], key: str, where: str, max_n: int = MAX_BATCH) -> list[Any]:
    v = _get(d, key, where)
    if not isinstance(v, list) or len(v) > max_n:
        raise InvalidInput(f"{where}: {key} must be a list of at most {max_n} entries")
    return v


def platform_id(value: str, where: str = "platform") -> str:
    if not isinstance(value, str) or not _PLATFORM.match(value):
        raise InvalidInput(f"{where}: platform id {value!r} must be lowercase letters, digits and '-'")
    return value


def split_request_id(rid: str, where: str = "request") -> tuple[str, int]:
    job, _, att = rid.rpartition(".")
    if not job or not att.isdigit() or not _ID.match(rid):
        raise InvalidInput(f"{where}: request id {rid!r} must be '<job id>.<attempt>'")
    return job, int(att)


# ---------------------------------------------------------------- offers

@dataclass(frozen=True)
class HourlyForecast:
    """48 hourly values from ``start`` (whole UTC hour), with how they were obtained."""

    start: datetime
    carbon_g_per_kwh: tuple[float, ...]
    renewable_share: tuple[float, ...]
    method: str  # e.g. "location-based average intensity; modelled day-ahead forecast"

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "carbon_g_per_kwh": [round(x, 3) for x in self.carbon_g_per_kwh],
                "renewable_share": [round(x, 4) for x in self.renewable_share], "method": self.method}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> HourlyForecast:
        start = when(d, "start", where)
        assert start is not None
        carbon = items(d, "carbon_g_per_kwh", where, 72)
        ren = items(d, "renewable_share", where, 72)
        if any(isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 5000 for x in carbon):
            raise InvalidInput(f"{where}: carbon_g_per_kwh values must be numbers 0..5000")
        if any(isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1 for x in ren):
            raise InvalidInput(f"{where}: renewable_share values must be numbers 0..1")
        return cls(start, tuple(float(x) for x in carbon), tuple(float(x) for x in ren),
                   text(d, "method", where, max_len=300))


@dataclass(frozen=True)
class PoolOffer:
    """One pool's capacity, price and energy outlook, as a peer offers it (signed, expiring)."""

    offer_id: str
    platform_id: str
    pool_id: str
    site_id: str
    region_id: str
    region_name: str
    compute_class: str
    accelerator: str | None
    nodes: int
    cpus_per_node: int
    memory_gb_per_node: int
    accelerators_per_node: int
    # Free capacity now, grouped: (node count, free CPUs, free memory GB, free devices) per group.
    free: tuple[tuple[int, int, int, int], ...]
    price_cny_per_device_hour: Decimal
    price_cny_per_cpu_hour: Decimal
    pue: float
    green_contract_share: float
    forecast: HourlyForecast | None
    issued_at: datetime
    expires_at: datetime

    @property
    def devices_free(self) -> int:
        return sum(n * d for n, _c, _m, d in self.free)

    @property
    def cpus_free(self) -> int:
        return sum(n * c for n, c, _m, _d in self.free)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id, "platform_id": self.platform_id, "pool_id": self.pool_id,
            "site_id": self.site_id, "region_id": self.region_id, "region_name": self.region_name,
            "compute_class": self.compute_class, "accelerator": self.accelerator, "nodes": self.nodes,
            "cpus_per_node": self.cpus_per_node, "memory_gb_per_node": self.memory_gb_per_node,
            "accelerators_per_node": self.accelerators_per_node, "free": [list(g) for g in self.free],
            "devices_free": self.devices_free, "cpus_free": self.cpus_free,
            "price_cny_per_device_hour": str(self.price_cny_per_device_hour),
            "price_cny_per_cpu_hour": str(self.price_cny_per_cpu_hour), "pue": self.pue,
            "green_contract_share": self.green_contract_share,
            "forecast": self.forecast.to_dict() if self.forecast else None,
            "issued_at": iso(self.issued_at), "expires_at": iso(self.expires_at),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "offer") -> PoolOffer:
        free_raw = items(d, "free", where, 100_000)
        free: list[tuple[int, int, int, int]] = []
        for g in free_raw:
            if (not isinstance(g, list) or len(g) != 4
                    or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in g)):
                raise InvalidInput(f"{where}: free groups must be [nodes, cpus, memory_gb, devices] of integers >= 0")
            free.append((g[0], g[1], g[2], g[3]))
        acc = d.get("accelerator")
        if acc is not None and (not isinstance(acc, str) or len(acc) > 64):
            raise InvalidInput(f"{where}: accelerator must be a model name or null")
        fc = d.get("forecast")
        issued, expires = when(d, "issued_at", where), when(d, "expires_at", where)
        assert issued is not None and expires is not None
        if expires <= issued:
            raise InvalidInput(f"{where}: expires_at must be after issued_at")
        offer = cls(
            offer_id=text(d, "offer_id", where, pattern=_ID), platform_id=platform_id(text(d, "platform_id", where)),
            pool_id=text(d, "pool_id", where, pattern=_ID), site_id=text(d, "site_id", where, pattern=_ID),
            region_id=text(d, "region_id", where, pattern=_ID), region_name=text(d, "region_name", where),
            compute_class=text(d, "compute_class", where), accelerator=acc,
            nodes=integer(d, "nodes", where, 1, 1_000_000), cpus_per_node=integer(d, "cpus_per_node", where, 1, 100_000),
            memory_gb_per_node=integer(d, "memory_gb_per_node", where, 0, 10_000_000),
            accelerators_per_node=integer(d, "accelerators_per_node", where, 0, 1024), free=tuple(free),
            price_cny_per_device_hour=money(d, "price_cny_per_device_hour", where),
            price_cny_per_cpu_hour=money(d, "price_cny_per_cpu_hour", where), pue=number(d, "pue", where, 1.0, 3.0),
            green_contract_share=number(d, "green_contract_share", where, 0.0, 1.0),
            forecast=HourlyForecast.from_dict(fc, where + ".forecast") if fc is not None else None,
            issued_at=issued, expires_at=expires,
        )
        if sum(n for n, *_ in offer.free) > offer.nodes:
            raise InvalidInput(f"{where}: more free nodes than the pool has")
        if compute_class_ok(offer.compute_class) is False:
            raise InvalidInput(f"{where}: compute_class must be general, intelligent or supercomputing")
        return offer


def compute_class_ok(value: str) -> bool:
    return value in ("general", "intelligent", "supercomputing")


# ---------------------------------------------------------------- delegation

@dataclass(frozen=True)
class DelegatedSpec:
    """What the peer runs: the launch as the origin placed it (no origin-side ids inside)."""

    name: str
    command: str
    replicas: int
    cpus: int
    memory_gb: int
    accelerators: int
    env: Mapping[str, str] = field(default_factory=dict)
    time_limit_s: int | None = None
    estimated_duration_s: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "replicas": self.replicas, "cpus": self.cpus,
                "memory_gb": self.memory_gb, "accelerators": self.accelerators, "env": dict(self.env),
                "time_limit_s": self.time_limit_s, "estimated_duration_s": self.estimated_duration_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> DelegatedSpec:
        env = d.get("env") or {}
        if not isinstance(env, dict) or len(env) > 200 or any(
                not isinstance(k, str) or not isinstance(v, str) or len(v) > 4096 for k, v in env.items()):
            raise InvalidInput(f"{where}: env must map names to strings")
        tl = d.get("time_limit_s")
        est = d.get("estimated_duration_s")
        return cls(
            name=text(d, "name", where), command=text(d, "command", where, max_len=64 * 1024),
            replicas=integer(d, "replicas", where, 1, 1024), cpus=integer(d, "cpus", where, 1, 1024),
            memory_gb=integer(d, "memory_gb", where, 0, 16384), accelerators=integer(d, "accelerators", where, 0, 64),
            env=env,
            time_limit_s=integer(d, "time_limit_s", where, 1, 90 * 86400) if tl is not None else None,
            estimated_duration_s=integer(d, "estimated_duration_s", where, 1, 90 * 86400) if est is not None else None,
        )


@dataclass(frozen=True)
class Delegation:
    origin: str
    origin_job_id: str
    attempt: int  # the lease epoch
    pool_id: str  # the peer's pool, from its offer
    tenant_ref: str  # the origin's tenant (opaque to the peer; for its policy and reports)
    spec: DelegatedSpec
    lease_expires_at: datetime
    offer_id: str
    price_cny_per_device_hour: Decimal  # the offered price the origin accepts (a cap on billing)
    price_cny_per_cpu_hour: Decimal

    @property
    def request_id(self) -> str:
        return f"{self.origin_job_id}.{self.attempt}"

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "origin_job_id": self.origin_job_id, "attempt": self.attempt,
                "pool_id": self.pool_id, "tenant_ref": self.tenant_ref, "spec": self.spec.to_dict(),
                "lease_expires_at": iso(self.lease_expires_at), "offer_id": self.offer_id,
                "price_cny_per_device_hour": str(self.price_cny_per_device_hour),
                "price_cny_per_cpu_hour": str(self.price_cny_per_cpu_hour)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "delegation") -> Delegation:
        exp = when(d, "lease_expires_at", where)
        assert exp is not None
        return cls(
            origin=platform_id(text(d, "origin", where)), origin_job_id=text(d, "origin_job_id", where, pattern=_ID),
            attempt=integer(d, "attempt", where, 0, 1_000_000), pool_id=text(d, "pool_id", where, pattern=_ID),
            tenant_ref=text(d, "tenant_ref", where, max_len=128),
            spec=DelegatedSpec.from_dict(_get(d, "spec", where), where + ".spec"), lease_expires_at=exp,
            offer_id=text(d, "offer_id", where, max_len=128),
            price_cny_per_device_hour=money(d, "price_cny_per_device_hour", where),
            price_cny_per_cpu_hour=money(d, "price_cny_per_cpu_hour", where),
        )


# ---------------------------------------------------------------- receipts

@dataclass(frozen=True)
class UsageReceipt:
    """What one delegated attempt (or one batch of tokens) consumed and costs, signed by the peer.

    ``kind`` is ``compute`` (device-seconds) or ``tokens`` (the token service's receipts use the
    same envelope: ``quantities`` then holds ``tokens_in``/``tokens_out``). ``amount_fen`` is
    what the peer bills the origin; it may never exceed the quantities at the offered price.
    """

    receipt_id: str
    kind: str
    issuer: str  # the peer that ran it
    origin: str  # the platform that owes
    request_id: str  # origin job id + attempt (compute) or the origin's reference (tokens)
    outcome: str  # succeeded | failed | cancelled | lease_expired | fenced | delivered
    started_at: datetime
    finished_at: datetime
    devices: int
    device_seconds: int
    kwh: Decimal
    kwh_method: str  # measured | modelled (device TDP x PUE)
    carbon_g: Decimal
    carbon_method: str
    green_share: float
    price_cny_per_unit_hour: Decimal  # the offered price used
    amount_fen: int
    period: str  # YYYY-MM (China Standard Time) of finished_at
    quantities: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"receipt_id": self.receipt_id, "kind": self.kind, "issuer": self.issuer, "origin": self.origin,
                "request_id": self.request_id, "outcome": self.outcome, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "devices": self.devices, "device_seconds": self.device_seconds,
                "kwh": str(self.kwh), "kwh_method": self.kwh_method, "carbon_g": str(self.carbon_g),
                "carbon_method": self.carbon_method, "green_share": self.green_share,
                "price_cny_per_unit_hour": str(self.price_cny_per_unit_hour), "amount_fen": self.amount_fen,
                "period": self.period, "quantities": dict(self.quantities), "protocol": PROTOCOL}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "receipt") -> UsageReceipt:
        s, f = when(d, "started_at", where), when(d, "finished_at", where)
        assert s is not None and f is not None
        q = d.get("quantities") or {}
        if not isinstance(q, dict) or any(not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int)
                                          or v < 0 for k, v in q.items()):
            raise InvalidInput(f"{where}: quantities must map names to integers >= 0")
        kind = text(d, "kind", where)
        if kind not in ("compute", "tokens"):
            raise InvalidInput(f"{where}: kind must be compute or tokens")
        period = text(d, "period", where)
        if not re.match(r"^\d{4}-\d{2}$", period):
            raise InvalidInput(f"{where}: period must be YYYY-MM")
        return cls(
            receipt_id=text(d, "receipt_id", where, pattern=_ID), kind=kind,
            issuer=platform_id(text(d, "issuer", where)), origin=platform_id(text(d, "origin", where)),
            request_id=text(d, "request_id", where, pattern=_ID), outcome=text(d, "outcome", where),
            started_at=s, finished_at=f, devices=integer(d, "devices", where, 0, 1_000_000),
            device_seconds=integer(d, "device_seconds", where), kwh=money(d, "kwh", where),
            kwh_method=text(d, "kwh_method", where), carbon_g=money(d, "carbon_g", where),
            carbon_method=text(d, "carbon_method", where, max_len=300),
            green_share=number(d, "green_share", where, 0.0, 1.0),
            price_cny_per_unit_hour=money(d, "price_cny_per_unit_hour", where),
            amount_fen=integer(d, "amount_fen", where), period=period, quantities=q,
        )


# ---------------------------------------------------------------- status

TERMINAL_PHASES = ("succeeded", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class RemoteStatus:
    request_id: str
    phase: str  # pending | running | succeeded | failed | cancelled | lost | unknown
    exit_code: int | None = None
    reason: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    receipt: Mapping[str, Any] | None = None  # {"body": {...}, "signature": "..."} once finished

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "phase": self.phase, "exit_code": self.exit_code,
                "reason": self.reason, "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
                "receipt": dict(self.receipt) if self.receipt else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "status") -> RemoteStatus:
        phase = text(d, "phase", where)
        if phase not in ("pending", "running", "unknown", *TERMINAL_PHASES):
            raise InvalidInput(f"{where}: unknown phase {phase!r}")
        ec = d.get("exit_code")
        if ec is not None and (isinstance(ec, bool) or not isinstance(ec, int)):
            raise InvalidInput(f"{where}: exit_code must be an integer or null")
        rc = d.get("receipt")
        if rc is not None and not isinstance(rc, dict):
            raise InvalidInput(f"{where}: receipt must be an object")
        return cls(text(d, "request_id", where, pattern=_ID), phase, ec, text(d, "reason", where, max_len=2000,
                                                                                optional=True),
                   when(d, "started_at", where, optional=True), when(d, "finished_at", where, optional=True), rc)


def request_ids(d: Mapping[str, Any], key: str, where: str) -> list[str]:
    out = []
    for rid in items(d, key, where):
        if not isinstance(rid, str):
            raise InvalidInput(f"{where}: {key} must be a list of request ids")
        split_request_id(rid, where)
        out.append(rid)
    return out


def dedupe(seq: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(seq))

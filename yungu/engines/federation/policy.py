"""Peering policy: what may be delegated to a peer and accepted from it.

Peering is mutual: each operator registers the other with a policy of its own. The same
shape serves both directions; ``allows`` answers with the reason when it does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from yungu.domain.errors import InvalidInput


@dataclass(frozen=True)
class Direction:
    """One direction of a peering: empty tuples mean "any"."""

    compute_classes: tuple[str, ...] = ()
    accelerators: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()  # origin tenant refs (accept) or local tenant ids/names (delegate)
    max_price_cny_per_device_hour: Decimal | None = None
    max_price_cny_per_cpu_hour: Decimal | None = None
    quota_devices: int | None = None  # devices (CPUs on CPU pools) at once
    quota_jobs: int | None = None

    def allows(self, *, compute_class: str, accelerator: str | None, tenant: str | None,
               device_price: Decimal, cpu_price: Decimal, accelerators: int) -> str:
        """The reason this is not allowed, or ``""``."""
        if self.compute_classes and compute_class not in self.compute_classes:
            return f"compute class {compute_class} not in the peering policy {list(self.compute_classes)}"
        if self.accelerators and accelerators and (accelerator or "") not in self.accelerators:
            return f"accelerator {accelerator} not in the peering policy {list(self.accelerators)}"
        if self.tenants and tenant is not None and tenant not in self.tenants:
            return f"tenant {tenant} may not use this peering"
        cap = self.max_price_cny_per_device_hour
        if accelerators and cap is not None and device_price > cap:
            return f"price {device_price} CNY/device-h above the peering cap {cap}"
        cap = self.max_price_cny_per_cpu_hour
        if not accelerators and cap is not None and cpu_price > cap:
            return f"price {cpu_price} CNY/CPU-h above the peering cap {cap}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"compute_classes": list(self.compute_classes), "accelerators": list(self.accelerators),
                "tenants": list(self.tenants),
                "max_price_cny_per_device_hour": _s(self.max_price_cny_per_device_hour),
                "max_price_cny_per_cpu_hour": _s(self.max_price_cny_per_cpu_hour),
                "quota_devices": self.quota_devices, "quota_jobs": self.quota_jobs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> Direction:
        d = d or {}
        if not isinstance(d, Mapping):
            raise InvalidInput(f"{where}: expected an object")
        known = {"compute_classes", "accelerators", "tenants", "max_price_cny_per_device_hour",
                 "max_price_cny_per_cpu_hour", "quota_devices", "quota_jobs"}
        extra = sorted(set(d) - known)
        if extra:
            raise InvalidInput(f"{where}: unknown keys {extra}; known: {sorted(known)}")
        return cls(
            compute_classes=_strs(d.get("compute_classes"), f"{where}.compute_classes"),
            accelerators=_strs(d.get("accelerators"), f"{where}.accelerators"),
            tenants=_strs(d.get("tenants"), f"{where}.tenants"),
            max_price_cny_per_device_hour=_dec(d.get("max_price_cny_per_device_hour"), where),
            max_price_cny_per_cpu_hour=_dec(d.get("max_price_cny_per_cpu_hour"), where),
            quota_devices=_int(d.get("quota_devices"), f"{where}.quota_devices"),
            quota_jobs=_int(d.get("quota_jobs"), f"{where}.quota_jobs"),
        )


@dataclass(frozen=True)
class PeeringPolicy:
    delegate: Direction = field(default_factory=Direction)  # what we send to the peer
    accept: Direction = field(default_factory=Direction)  # what we run for the peer
    max_peers_per_job: int = 1  # how many peers one job may be offered to at once
    resale_markup: Decimal = Decimal("0.10")  # our price for its capacity: offered price x (1 + markup)

    def to_dict(self) -> dict[str, Any]:
        return {"delegate": self.delegate.to_dict(), "accept": self.accept.to_dict(),
                "max_peers_per_job": self.max_peers_per_job, "resale_markup": str(self.resale_markup)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "policy") -> PeeringPolicy:
        d = d or {}
        if not isinstance(d, Mapping):
            raise InvalidInput(f"{where}: expected an object")
        extra = sorted(set(d) - {"delegate", "accept", "max_peers_per_job", "resale_markup"})
        if extra:
            raise InvalidInput(f"{where}: unknown keys {extra}")
        mp = _int(d.get("max_peers_per_job", 1), f"{where}.max_peers_per_job")
        if mp is None or not 1 <= mp <= 16:
            raise InvalidInput(f"{where}: max_peers_per_job must be 1..16")
        markup = _dec(d.get("resale_markup", "0.10"), where) or Decimal(0)
        if markup > 10:
            raise InvalidInput(f"{where}: resale_markup must be 0..10")
        return cls(Direction.from_dict(d.get("delegate"), f"{where}.delegate"),
                   Direction.from_dict(d.get("accept"), f"{where}.accept"), mp, markup)


def _s(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def _strs(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or any(not isinstance(x, str) or len(x) > 128 for x in v) or len(v) > 1000:
        raise InvalidInput(f"{where}: expected a list of names")
    return tuple(v)


def _int(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InvalidInput(f"{where}: expected an integer >= 0")
    return v


def _dec(v: Any, where: str) -> Decimal | None:
    if v is None:
        return None
    if not isinstance(v, str | int) or isinstance(v, bool):
        raise InvalidInput(f"{where}: give prices as decimal strings (e.g. \"2.50\"), not floats")
    try:
        out = Decimal(str(v))
    except ArithmeticError as exc:
        raise InvalidInput(f"{where}: not a decimal: {v!r}") from exc
    if not out.is_finite() or out < 0:
        raise InvalidInput(f"{where}: must be a decimal >= 0")
    return out

"""Federation settings: the ``[federation]`` table of the platform TOML (all optional)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yungu.domain.errors import InvalidInput
from yungu.engines.federation.health import HealthTerms
from yungu.engines.federation.lease import LeaseTerms


@dataclass(frozen=True)
class FederationSettings:
    lease: LeaseTerms = field(default_factory=LeaseTerms)
    health: HealthTerms = field(default_factory=HealthTerms)
    offer_ttl_s: float = 15.0  # an offer expires this long after it was issued
    offer_refresh_s: float = 5.0  # re-issue (and push) unchanged offers this often
    publish_every_s: float = 0.25  # look for capacity changes this often
    status_every_s: float = 0.1  # poll a peer for its delegated jobs' status this often
    signature_window_s: float = 60.0
    call_timeout_s: float = 5.0  # a busy peer still answers; silence is measured from the last answer
    kill_grace_s: int = 2  # watchdog: TERM, then KILL after this long
    clock_offset_s: float = 0.0  # tests: this platform's clock runs this far ahead (YUNGU_CLOCK_OFFSET_S)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "[federation]") -> FederationSettings:
        lease_keys = {"lease_ttl_s": "ttl_s", "renew_every_s": "renew_every_s", "max_clock_skew_s": "max_skew_s",
                      "stop_budget_s": "stop_budget_s", "replace_margin_s": "replace_margin_s"}
        health_keys = {"suspect_after_s": "suspect_after_s", "lost_after_s": "lost_after_s"}
        own = {"offer_ttl_s", "offer_refresh_s", "publish_every_s", "status_every_s", "signature_window_s",
               "call_timeout_s", "kill_grace_s"}
        extra = sorted(set(raw) - set(lease_keys) - set(health_keys) - own)
        if extra:
            raise InvalidInput(f"{where}: unknown keys {extra}; known: {sorted({*lease_keys, *health_keys, *own})}")
        try:
            lease = LeaseTerms(**{v: float(raw[k]) for k, v in lease_keys.items() if k in raw})
            health = HealthTerms(**{v: float(raw[k]) for k, v in health_keys.items() if k in raw})
            kw: dict[str, Any] = {k: float(raw[k]) for k in own - {"kill_grace_s"} if k in raw}
            if "kill_grace_s" in raw:
                kw["kill_grace_s"] = int(raw["kill_grace_s"])
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
        problems = lease.validate()
        if problems:
            raise InvalidInput(f"{where}: " + "; ".join(problems))
        if "lost_after_s" not in raw:
            health = HealthTerms(health.suspect_after_s, lease.ttl_s)
        offset = float(os.environ.get("YUNGU_CLOCK_OFFSET_S", "0") or 0)
        return cls(lease=lease, health=health, clock_offset_s=offset, **kw)


def load_settings(config_path: Path | None) -> FederationSettings:
    raw: Mapping[str, Any] = {}
    if config_path is not None and config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8")).get("federation", {})
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{config_path}: not valid TOML: {exc}") from exc
    return FederationSettings.from_mapping(raw)

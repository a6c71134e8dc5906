"""Virtual keys: what a tenant's token key may do (models, budget, limits, residency, expiry)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from yungu.engines.gateway.budget import Period


@dataclass(frozen=True)
class KeyPolicy:
    key_id: str
    tenant_id: str
    name: str = ""
    models: tuple[str, ...] = ()  # empty: every model
    budget_units: int | None = None  # per period, units of 1e-10 CNY; None: no budget, every call refused
    period: Period = Period.MONTH
    alert_ratio: Decimal | None = None  # soft alert at this share of the budget
    rpm: int | None = None
    tpm: int | None = None
    regions: tuple[str, ...] = ()  # data residency: serve only from these regions (empty: anywhere)
    expires_at: datetime | None = None

    def refusal(self, model: str, now: datetime) -> tuple[int, str, str] | None:
        """(HTTP status, OpenAI error code, message) when this key may not call ``model`` now."""
        if self.expires_at is not None and now >= self.expires_at:
            return 401, "key_expired", f"this key expired at {self.expires_at.isoformat()} / 密钥已过期"
        if self.models and model not in self.models:
            return 403, "model_not_allowed", (f"this key may not use model {model!r}; allowed: {list(self.models)} "
                                              f"/ 此密钥不能使用该模型")
        if not self.budget_units:
            return 429, "insufficient_quota", ("this key has no token budget: ask the operator to set one "
                                               "(yungu tokens keys budget) / 此密钥没有令牌预算")
        return None

    @property
    def alert_units(self) -> int | None:
        if self.alert_ratio is None or self.budget_units is None:
            return None
        return int(Decimal(self.budget_units) * self.alert_ratio)

"""Budgets that no request can overspend: reserve the maximum cost before the call, settle
the actual cost after it.

A :class:`Budget` belongs to one key and one period. ``reserve`` admits a request only if
what is already spent plus every open reservation plus this request's maximum cost stays
within the limit, so however many requests run at once, their actual costs (each at most
its reservation) cannot add up to more than the limit. ``settle`` turns a reservation into
spending of the actual cost (never more than the reservation when the caller keeps the
bound it reserved for) and frees the rest.

Amounts are integer cost units (1e-10 CNY, see ``pricing``). Pure and single-threaded: the
gateway calls it from its event loop only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

from yungu.domain.status import Code, Status

CST = timezone(timedelta(hours=8))


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"  # never resets


def period_key(period: Period, when: datetime) -> str:
    """The budget period containing ``when`` (China Standard Time, like billing periods)."""
    local = when.astimezone(CST)
    if period is Period.DAY:
        return f"{local:%Y-%m-%d}"
    if period is Period.MONTH:
        return f"{local:%Y-%m}"
    return "total"


def period_start(period: Period, when: datetime) -> datetime:
    local = when.astimezone(CST)
    if period is Period.DAY:
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period is Period.MONTH:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return start.astimezone(UTC)


@dataclass
class Budget:
    limit: int  # cost units per period
    period: str  # the period key this budget counts
    spent: int = 0
    alert_at: int | None = None  # soft alert threshold in cost units
    alerted: bool = False
    open: dict[str, int] = field(default_factory=dict)  # request id -> reserved units

    @property
    def reserved(self) -> int:
        return self._reserved

    def __post_init__(self) -> None:
        self._reserved = sum(self.open.values())

    def reserve(self, request_id: str, amount: int) -> Status:
        if amount < 0:
            return Status(Code.ERROR, ("negative reservation",), "budget")
        if request_id in self.open:
            return Status.success("budget")  # a retry of the same request reserves nothing more
        if self.spent + self._reserved + amount > self.limit:
            return Status(Code.UNSCHEDULABLE, (
                f"预算不足 budget exhausted: spent {self.spent} + reserved {self._reserved} + this request's "
                f"maximum {amount} exceeds the period limit {self.limit} (units of 1e-10 CNY)",), "budget")
        self.open[request_id] = amount
        self._reserved += amount
        return Status.success("budget")

    def settle(self, request_id: str, actual: int) -> int:
        """Spend ``actual`` and free the reservation; returns the amount by which ``actual``
        exceeded the reservation (0 when the caller kept its bound, as the gateway does by
        capping ``max_tokens`` and the prompt bound). A request settled twice spends once."""
        held = self.open.pop(request_id, None)
        if held is None:
            return 0
        self._reserved -= held
        actual = max(actual, 0)
        self.spent += actual
        return max(0, actual - held)

    def release(self, request_id: str) -> None:
        self.settle(request_id, 0)

    def crossed_alert(self) -> bool:
        """True once, when spending first reaches the soft alert threshold."""
        if self.alert_at is not None and not self.alerted and self.spent >= self.alert_at:
            self.alerted = True
            return True
        return False

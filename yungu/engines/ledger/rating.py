"""Metering and rating: usage records from finished jobs, priced to the fen.

A usage record's id is stable (``usage:<job id>.<attempt>``), so any number of retries of
the billing loop produce the same record, the same ledger transfer ids and the same invoice
line: exactly one booking. Rating is integer/Decimal arithmetic with banker's rounding once,
at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from yungu.domain.errors import InvalidInput
from yungu.domain.job import Job
from yungu.domain.world import World

SECONDS_PER_HOUR = 3600
DEFAULT_VAT = Decimal("0.06")  # 信息技术服务 / 现代服务业 VAT rate


@dataclass(frozen=True)
class Usage:
    """What one job attempt consumed. Quantities are measured, never estimated: the times
    are the executor's (when the processes started and ended), not when the platform noticed."""

    id: str
    tenant_id: str
    job_id: str
    pool_id: str
    provider: str  # the provider's stable id (``Site.provider_id``), never its display name
    started_at: datetime
    ended_at: datetime
    device_seconds: int  # accelerator-seconds (CPU-seconds for CPU-only pools)
    compute_units: Decimal  # normalised: device-hours x relative throughput (A100 = 1)
    facility_kwh: Decimal  # IT energy x PUE
    tokens_in: int = 0
    tokens_out: int = 0

    def validate(self) -> None:
        if self.device_seconds < 0 or self.tokens_in < 0 or self.tokens_out < 0:
            raise InvalidInput(f"usage {self.id}: negative quantity")
        if self.compute_units < 0 or self.facility_kwh < 0:
            raise InvalidInput(f"usage {self.id}: negative quantity")
        if self.ended_at < self.started_at:
            raise InvalidInput(f"usage {self.id}: ends before it starts")


def usage_id(job_id: str, attempt: int) -> str:
    return f"usage:{job_id}.{attempt}"


def to_minor(amount: Decimal, exponent: int = 2) -> int:
    """Decimal currency amount -> integer minor units (exact, or an error)."""
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{amount} has more precision than the currency allows")
    return int(scaled)


def from_minor(minor: int, exponent: int = 2) -> Decimal:
    return Decimal(minor).scaleb(-exponent)


def rate_device_time(device_seconds: int, price_per_device_hour: Decimal, *, tokens: int = 0,
                     price_per_million_tokens: Decimal = Decimal(0)) -> int:
    """Gross charge in fen for device time (and tokens), rounded half-even once."""
    if device_seconds < 0 or tokens < 0 or price_per_device_hour < 0 or price_per_million_tokens < 0:
        raise InvalidInput("quantities and prices must not be negative")
    yuan = (Decimal(device_seconds) * price_per_device_hour / SECONDS_PER_HOUR
            + Decimal(tokens) * price_per_million_tokens / 1_000_000)
    return int((yuan * 100).quantize(Decimal(1), ROUND_HALF_EVEN))


@dataclass(frozen=True)
class Split:
    """How a gross (tax-inclusive) charge divides between provider, platform and tax."""

    gross: int
    tax: int
    commission: int
    provider: int


def split_charge(gross: int, vat: Decimal = DEFAULT_VAT, commission_rate: Decimal = Decimal("0.10")) -> Split:
    """Tax-inclusive price: tax = gross x r / (1 + r); commission is a share of the net."""
    if gross < 0:
        raise InvalidInput("a charge cannot be negative")
    tax = int((Decimal(gross) * vat / (1 + vat)).quantize(Decimal(1), ROUND_HALF_EVEN))
    net = gross - tax
    commission = int((Decimal(net) * commission_rate).quantize(Decimal(1), ROUND_HALF_EVEN))
    return Split(gross, tax, commission, net - commission)


def period_of(when: datetime) -> str:
    """Billing periods are calendar months in UTC+8 (China Standard Time), ``YYYY-MM``."""
    from datetime import timedelta, timezone

    local = when.astimezone(timezone(timedelta(hours=8)))
    return f"{local.year:04d}-{local.month:02d}"


def next_period(period: str) -> str:
    y, m = int(period[:4]), int(period[5:7])
    return f"{y + (m == 12):04d}-{m % 12 + 1:02d}"


def job_price(job: Job, world: World) -> tuple[int, Decimal]:
    """How a job attempt is priced on its pool: (billed units, CNY per unit-hour).

    Accelerator pools price device-hours; CPU-only pools (and CPU jobs on them) price
    CPU-hours. Raises ``KeyError`` when the pool is not in the world (any more).
    """
    a = job.allocation
    if a is None:
        raise KeyError(job.id)
    pool = world.pool(a.pool_id)
    if a.devices:
        return a.devices, pool.price_cny_per_device_hour
    return len(a.replicas) * a.cpus_per_replica, pool.price_cny_per_cpu_hour


def unit_seconds(started: datetime, finished: datetime, units: int) -> int:
    """Billed unit-seconds of a run: its exact duration (to the microsecond) times the units,
    rounded half-even once — so a 0.2 s run on 8 devices bills 2 device-seconds, not 0."""
    us = max(0, (finished - started) // timedelta(microseconds=1))
    return int((Decimal(us) * units / 1_000_000).quantize(Decimal(1), ROUND_HALF_EVEN))


def cost_of_seconds(seconds: float, units: int, price_per_unit_hour: Decimal) -> int:
    """An upper bound, in fen, of what ``seconds`` of running costs (budgets: rounded up)."""
    unit_s = math.ceil(max(0.0, seconds) * units)
    yuan = Decimal(unit_s) * price_per_unit_hour / SECONDS_PER_HOUR
    return int((yuan * 100).to_integral_value(ROUND_CEILING))

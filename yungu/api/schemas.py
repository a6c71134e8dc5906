"""Request and response bodies of the jobs API (Pydantic, strict: unknown fields are errors)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from yungu.adapters.store.codec import allocation_to_dict, spec_to_dict
from yungu.domain.errors import InvalidInput
from yungu.domain.job import (
    MAX_ENV_VARS,
    MAX_LABELS,
    MAX_NAME_CHARS,
    OBJECTIVE_TERMS,
    Job,
    JobKind,
    JobSpec,
    Objective,
    Resources,
)
from yungu.domain.money import AMOUNT_PATTERN, parse_amount


def _money_text(v: Any) -> str:
    """Money in a request body: checked by the one money parser (``parse_amount``), kept as the
    text it was given. At most two decimals here (no currency has a finer minor unit); a
    currency with a coarser one (JPY) is checked again where the currency is known."""
    try:
        parse_amount(v, "CNY")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return str(v)


Money = Annotated[str, BeforeValidator(_money_text), WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "integer"}],
     "description": "exact decimal in the currency's major unit, e.g. \"12.50\" (no floats) / 金额（十进制字符串）",
     "examples": ["12.50"]})]
"""Money in a request body: a decimal string such as ``"12.50"`` or an integer."""

Ratio = Annotated[str, BeforeValidator(lambda v: _ratio_text(v)), WithJsonSchema(
    {"type": "string", "pattern": r"^(0(\.[0-9]{1,9})?|1(\.0{1,9})?)$", "examples": ["0.999"]})]
"""A ratio 0..1 as a decimal string, e.g. an availability target ``"0.999"``."""


def _ratio_text(v: Any) -> str:
    import re

    if not isinstance(v, str) or not re.fullmatch(r"(0(\.[0-9]{1,9})?|1(\.0{1,9})?)", v, re.ASCII):
        raise ValueError("give a ratio 0..1 as a decimal string, e.g. \"0.999\" / 比例应为 0..1 的十进制字符串")
    return v


Weight = Annotated[float, Field(strict=True)]  # range and NaN: JobSpec.validate, which names the weight

MIN_YEAR, MAX_YEAR = 1970, 9000  # far from datetime's limits: arithmetic on them never overflows


def _iso_time(v: Any) -> datetime:
    """An instant as ISO 8601 text with a zone; not a number (pydantic would read 0.5 as 1970)."""
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, str) and 0 < len(v) <= 64:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{v[:64]!r} is not an ISO 8601 time, e.g. 2026-11-23T08:00:00+08:00") from None
    else:
        raise ValueError("give the time as ISO 8601 text, e.g. 2026-11-23T08:00:00+08:00 / 时间应为 ISO 8601 字符串")
    if t.tzinfo is None:
        raise ValueError("timestamps need a time zone, e.g. 2026-11-23T08:00:00+08:00 / 时间需带时区")
    if not MIN_YEAR <= t.year <= MAX_YEAR:
        raise ValueError(f"times must lie in the years {MIN_YEAR}..{MAX_YEAR} / 时间超出范围")
    return t


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]
"""An aware instant given as ISO 8601 text with a zone (``Z`` or ``+08:00``)."""

PERIOD_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
Period = Annotated[str, Field(pattern=PERIOD_PATTERN, description="a calendar month YYYY-MM (UTC+8) / 账期",
                              examples=["2026-11"])]


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    cpus: int = Field(1, ge=1, le=1024)
    memory_gb: int = Field(1, ge=0, le=16384)
    accelerators: int = Field(0, ge=0, le=64)
    accelerator_types: list[str] = Field(default_factory=list, max_length=16)


class JobIn(BaseModel):
    """A job submission. Times are ISO-8601 with a zone; money is a decimal string."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    command: str = Field(min_length=1, max_length=65536)
    kind: JobKind = JobKind.BATCH
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    replicas: int = Field(1, ge=1, le=1024, strict=True)
    estimated_duration_s: int | None = Field(None, ge=1, le=90 * 86400, strict=True)
    deadline: IsoTime | None = None
    earliest_start: IsoTime | None = None
    priority: int = Field(0, ge=-1000, le=1000, strict=True)
    max_price_cny_per_hour: Money | None = None
    objective: Objective = Objective.BALANCED
    objective_weights: dict[str, Weight] = Field(default_factory=dict, max_length=len(OBJECTIVE_TERMS))
    data_location: str | None = Field(None, max_length=128)
    pool: str | None = Field(None, max_length=128)
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=MAX_LABELS)
    env: dict[str, Annotated[str, Field(max_length=32 * 1024)]] = Field(default_factory=dict, max_length=MAX_ENV_VARS)
    tenant_id: str | None = Field(None, max_length=64, description="admin/operator only: submit on behalf of a tenant")

    @field_validator("max_price_cny_per_hour")
    @classmethod
    def _price(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_amount(v, "CNY")
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
            if v.startswith("-"):
                raise ValueError("max_price_cny_per_hour must not be negative")
        return v

    def to_spec(self) -> JobSpec:
        r = self.resources
        return JobSpec(name=self.name, command=self.command, kind=self.kind,
                       resources=Resources(r.cpus, r.memory_gb, r.accelerators, tuple(r.accelerator_types)),
                       replicas=self.replicas, estimated_duration_s=self.estimated_duration_s,
                       deadline=self.deadline, earliest_start=self.earliest_start, priority=self.priority,
                       max_price_cny_per_hour=None if self.max_price_cny_per_hour is None
                       else Decimal(self.max_price_cny_per_hour), objective=self.objective,
                       objective_weights=self.objective_weights, data_location=self.data_location,
                       pool=self.pool, labels=self.labels, env=self.env)


def job_out(j: Job) -> dict[str, Any]:
    return {
        "id": j.id, "platform_id": j.platform_id, "tenant_id": j.tenant_id, "name": j.spec.name,
        "state": j.state.value, "attempt": j.attempt, "reason": j.reason,
        "submitted_at": j.submitted_at.isoformat(), "updated_at": j.updated_at.isoformat(),
        "started_at": j.started_at.isoformat() if j.started_at else None,
        "finished_at": j.finished_at.isoformat() if j.finished_at else None,
        "exit_code": j.exit_code, "cancel_requested": j.cancel_requested,
        "pool_id": j.allocation.pool_id if j.allocation else None,
        "allocation": allocation_to_dict(j.allocation) if j.allocation else None,
        "spec": spec_to_dict(j.spec),
    }


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


StateName = Literal["pending", "queued", "scheduled", "dispatched", "running", "succeeded", "failed",
                    "cancelled", "preempted"]

"""Request and response bodies of the jobs API (Pydantic, strict: unknown fields are errors)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from yungu.adapters.codec import allocation_to_dict, spec_to_dict
from yungu.domain.job import Job, JobKind, JobSpec, Objective, Resources


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    cpus: int = Field(1, ge=1, le=1024)
    memory_gb: int = Field(1, ge=0, le=16384)
    accelerators: int = Field(0, ge=0, le=64)
    accelerator_types: list[str] = Field(default_factory=list, max_length=16)


class JobIn(BaseModel):
    """A job submission. Times are ISO-8601 with a zone; money is a decimal string."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    command: str = Field(min_length=1, max_length=65536)
    kind: JobKind = JobKind.BATCH
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    replicas: int = Field(1, ge=1, le=1024, strict=True)
    estimated_duration_s: int | None = Field(None, ge=1, le=90 * 86400, strict=True)
    deadline: datetime | None = None
    earliest_start: datetime | None = None
    priority: int = Field(0, ge=-1000, le=1000, strict=True)
    max_price_cny_per_hour: Decimal | None = Field(None, ge=0)
    objective: Objective = Objective.BALANCED
    objective_weights: dict[str, float] = Field(default_factory=dict)
    data_location: str | None = None
    pool: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    tenant_id: str | None = Field(None, description="admin/operator only: submit on behalf of a tenant")

    @field_validator("max_price_cny_per_hour", mode="before")
    @classmethod
    def _no_float_money(cls, v: Any) -> Any:
        if isinstance(v, float):
            raise ValueError("give money as a decimal string, e.g. \"12.50\"")
        return v

    @field_validator("deadline", "earliest_start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps need a time zone, e.g. 2026-11-23T08:00:00+08:00")
        return v

    def to_spec(self) -> JobSpec:
        r = self.resources
        return JobSpec(name=self.name, command=self.command, kind=self.kind,
                       resources=Resources(r.cpus, r.memory_gb, r.accelerators, tuple(r.accelerator_types)),
                       replicas=self.replicas, estimated_duration_s=self.estimated_duration_s,
                       deadline=self.deadline, earliest_start=self.earliest_start, priority=self.priority,
                       max_price_cny_per_hour=self.max_price_cny_per_hour, objective=self.objective,
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

"""JSON forms of domain values: job specs and allocations, as the store keeps them in text
columns and the API shows them (one encoding for both)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from yungu.domain.job import Allocation, JobKind, JobSpec, Objective, ReplicaPlacement, Resources


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    r = spec.resources
    return {
        "name": spec.name,
        "command": spec.command,
        "kind": spec.kind.value,
        "resources": {
            "cpus": r.cpus,
            "memory_gb": r.memory_gb,
            "accelerators": r.accelerators,
            "accelerator_types": list(r.accelerator_types),
        },
        "replicas": spec.replicas,
        "estimated_duration_s": spec.estimated_duration_s,
        "deadline": spec.deadline.isoformat() if spec.deadline else None,
        "earliest_start": spec.earliest_start.isoformat() if spec.earliest_start else None,
        "priority": spec.priority,
        "max_price_cny_per_hour": str(spec.max_price_cny_per_hour)
        if spec.max_price_cny_per_hour is not None
        else None,
        "objective": spec.objective.value,
        "objective_weights": dict(spec.objective_weights),
        "data_location": spec.data_location,
        "pool": spec.pool,
        "labels": dict(spec.labels),
        "env": dict(spec.env),
    }


def spec_from_dict(d: dict[str, Any]) -> JobSpec:
    r = d.get("resources", {})
    return JobSpec(
        name=d["name"],
        command=d["command"],
        kind=JobKind(d.get("kind", "batch")),
        resources=Resources(
            int(r.get("cpus", 1)),
            int(r.get("memory_gb", 1)),
            int(r.get("accelerators", 0)),
            tuple(r.get("accelerator_types", ())),
        ),
        replicas=int(d.get("replicas", 1)),
        estimated_duration_s=d.get("estimated_duration_s"),
        deadline=datetime.fromisoformat(d["deadline"]) if d.get("deadline") else None,
        earliest_start=datetime.fromisoformat(d["earliest_start"]) if d.get("earliest_start") else None,
        priority=int(d.get("priority", 0)),
        max_price_cny_per_hour=Decimal(d["max_price_cny_per_hour"])
        if d.get("max_price_cny_per_hour") is not None
        else None,
        objective=Objective(d.get("objective", "balanced")),
        objective_weights=dict(d.get("objective_weights", {})),
        data_location=d.get("data_location"),
        pool=d.get("pool"),
        labels=dict(d.get("labels", {})),
        env=dict(d.get("env", {})),
    )


def dumps_spec(spec: JobSpec) -> str:
    return json.dumps(spec_to_dict(spec), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def loads_spec(text: str) -> JobSpec:
    return spec_from_dict(json.loads(text))


def allocation_to_dict(a: Allocation) -> dict[str, Any]:
    return {
        "pool_id": a.pool_id,
        "cpus_per_replica": a.cpus_per_replica,
        "memory_gb_per_replica": a.memory_gb_per_replica,
        "replicas": [{"node": p.node, "devices": list(p.devices)} for p in a.replicas],
    }


def dumps_allocation(a: Allocation | None) -> str | None:
    return None if a is None else json.dumps(allocation_to_dict(a), separators=(",", ":"))


def loads_allocation(job_id: str, text: str | None) -> Allocation | None:
    if not text:
        return None
    d = json.loads(text)
    return Allocation(
        job_id,
        d["pool_id"],
        tuple(ReplicaPlacement(p["node"], tuple(p["devices"])) for p in d["replicas"]),
        d["cpus_per_replica"],
        d["memory_gb_per_replica"],
    )

"""Accelerator and CPU node catalogue types.

Figures live in ``yungu/data/accelerators.toml``, each with its public source; this module
holds the types and the pure parsing of the already-loaded mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from yungu.domain.errors import InvalidInput


class Precision(StrEnum):
    FP64 = "fp64"
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"  # BF16/FP16 dense
    FP8 = "fp8"


@dataclass(frozen=True)
class AcceleratorSpec:
    """One catalogue entry: an accelerator model or a CPU node type."""

    model: str
    vendor: str
    kind: str  # "gpu" | "npu" | "mlu" | "cpu"
    memory_gb: float
    tdp_w: float
    idle_w: float
    tflops: Mapping[Precision, float]  # dense, per device (per node for CPU types)
    relative_throughput: float  # training throughput relative to A100 = 1.0
    sources: tuple[str, ...]

    def peak(self, precision: Precision) -> float:
        return self.tflops.get(precision, 0.0)


@dataclass(frozen=True)
class Catalogue:
    entries: Mapping[str, AcceleratorSpec]

    def get(self, model: str) -> AcceleratorSpec:
        try:
            return self.entries[model]
        except KeyError as exc:
            raise InvalidInput(
                f"unknown accelerator {model!r}; known: {', '.join(sorted(self.entries))}"
            ) from exc

    def __contains__(self, model: object) -> bool:
        return model in self.entries


def parse_catalogue(doc: Mapping[str, Any]) -> Catalogue:
    entries: dict[str, AcceleratorSpec] = {}
    for model, raw in doc.get("accelerator", {}).items():
        try:
            tflops = {Precision(k): float(v) for k, v in raw["tflops"].items()}
            spec = AcceleratorSpec(
                model=model,
                vendor=str(raw["vendor"]),
                kind=str(raw["kind"]),
                memory_gb=float(raw["memory_gb"]),
                tdp_w=float(raw["tdp_w"]),
                idle_w=float(raw.get("idle_w", float(raw["tdp_w"]) * 0.15)),
                tflops=tflops,
                relative_throughput=float(raw.get("relative_throughput", 1.0)),
                sources=tuple(raw.get("sources", ())),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"catalogue entry {model!r} is malformed: {exc}") from exc
        if not spec.sources:
            raise InvalidInput(f"catalogue entry {model!r} names no public source")
        entries[model] = spec
    return Catalogue(entries)

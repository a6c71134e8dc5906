"""What a node agent reports, and the rules a report must pass before it is stored.

One :class:`NodeSample` is one reading of one node at one instant, numbered by the agent
with a per-node sequence number that never repeats (it survives agent restarts through the
agent's on-disk state), so the platform can drop resent samples exactly. Cumulative values
(CPU seconds of a job's process tree, energy counters) are sent as counters, not deltas:
a lost or duplicated sample then cannot create or destroy energy, only coarsen it.

``check_sample`` is pure: the ingestion service passes the current time and the set of
registered nodes. It returns reasons (stable slugs + detail), empty when the sample is good.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.signals import Provenance

MAX_FUTURE_S = 300.0  # clocks more than 5 minutes ahead are wrong, not early
MAX_PAST_S = 7 * 86400.0  # older than the agent's buffer could hold: refuse, not backfill silently


@dataclass(frozen=True)
class GpuReading:
    index: int
    utilisation: float  # 0..1
    memory_used_mb: float
    power_w: float
    energy_j: float | None = None  # NVML total-energy counter (mJ / 1000) where the GPU has one
    method: Provenance = Provenance.MEASURED


@dataclass(frozen=True)
class JobUsage:
    job_id: str
    cpu_seconds: float  # cumulative CPU time of the job's process tree
    gpus: tuple[int, ...] = ()  # device indices assigned to the job
    cores: int = 0  # cores allocated to the job (for the idle share)


@dataclass(frozen=True)
class NodeSample:
    node_id: str
    seq: int
    ts: float  # UTC epoch seconds
    cpu_utilisation: float  # 0..1 over all cores since the previous sample
    memory_utilisation: float  # 0..1
    cpu_power_w: float  # package power (RAPL) or model
    cpu_method: Provenance
    node_cpu_seconds: float  # cumulative busy CPU time of the whole node
    cores: int
    cpu_energy_j: float | None = None  # cumulative RAPL counter where readable
    cpu_idle_w: float = 0.0  # the idle share of cpu_power_w (model idle, or measured idle baseline)
    gpu_idle_w: float = 0.0
    gpus: tuple[GpuReading, ...] = ()
    jobs: tuple[JobUsage, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def power_w(self) -> float:
        """Node IT power: CPU package plus GPUs (memory/fans/PSU losses are in the PUE)."""
        return self.cpu_power_w + sum(g.power_w for g in self.gpus)

    @property
    def modelled(self) -> bool:
        return self.cpu_method is Provenance.MODELLED or any(
            g.method is Provenance.MODELLED for g in self.gpus
        )


@dataclass(frozen=True)
class Rejection:
    reason: str  # stable slug: not_finite, negative_power, unknown_node, future_clock, ...
    detail: str


def _finite_nonneg(name: str, v: float | None, out: list[Rejection]) -> None:
    if v is None:
        return
    if not math.isfinite(v):
        out.append(Rejection("not_finite", f"{name} is {v}"))
    elif v < 0:
        out.append(Rejection("negative_power" if "power" in name else "negative_value", f"{name} is {v}"))


def check_sample(
    s: NodeSample,
    *,
    now: float,
    known_nodes: Collection[str] | None,
    max_future_s: float = MAX_FUTURE_S,
    max_past_s: float = MAX_PAST_S,
) -> list[Rejection]:
    """Every reason this sample must not be stored (empty list: store it)."""
    out: list[Rejection] = []
    if known_nodes is not None and s.node_id not in known_nodes:
        out.append(Rejection("unknown_node", f"node {s.node_id!r} is not registered"))
    if s.seq < 0:
        out.append(Rejection("bad_seq", f"seq {s.seq} < 0"))
    if not math.isfinite(s.ts):
        out.append(Rejection("not_finite", "timestamp is not finite"))
    elif s.ts > now + max_future_s:
        out.append(Rejection("future_clock", f"timestamp {s.ts - now:.0f} s ahead of the platform clock"))
    elif s.ts < now - max_past_s:
        out.append(Rejection("past_clock", f"timestamp {now - s.ts:.0f} s behind the platform clock"))
    for name, v in (
        ("cpu_power_w", s.cpu_power_w),
        ("cpu_energy_j", s.cpu_energy_j),
        ("cpu_idle_power_w", s.cpu_idle_w),
        ("node_cpu_seconds", s.node_cpu_seconds),
    ):
        _finite_nonneg(name, v, out)
    for name, u in (("cpu_utilisation", s.cpu_utilisation), ("memory_utilisation", s.memory_utilisation)):
        if not (math.isfinite(u) and 0.0 <= u <= 1.0):
            out.append(Rejection("out_of_range", f"{name} {u} outside 0..1"))
    seen: set[int] = set()
    for g in s.gpus:
        _finite_nonneg(f"gpu{g.index}.power_w", g.power_w, out)
        _finite_nonneg(f"gpu{g.index}.energy_j", g.energy_j, out)
        if g.index in seen:
            out.append(Rejection("malformed", f"gpu index {g.index} reported twice"))
        seen.add(g.index)
    for j in s.jobs:
        _finite_nonneg(f"job {j.job_id}.cpu_seconds", j.cpu_seconds, out)
    return out


def sample_from_dict(d: dict[str, Any]) -> NodeSample:
    """Parse the wire form (JSON object) of a sample; raises InvalidInput when malformed."""
    try:
        gpus = tuple(
            GpuReading(
                index=int(g["index"]),
                utilisation=float(g.get("utilisation", 0.0)),
                memory_used_mb=float(g.get("memory_used_mb", 0.0)),
                power_w=float(g["power_w"]),
                energy_j=None if g.get("energy_j") is None else float(g["energy_j"]),
                method=Provenance(g.get("method", "measured")),
            )
            for g in d.get("gpus", ())
        )
        jobs = tuple(
            JobUsage(
                job_id=str(j["job_id"]),
                cpu_seconds=float(j["cpu_seconds"]),
                gpus=tuple(int(x) for x in j.get("gpus", ())),
                cores=int(j.get("cores", 0)),
            )
            for j in d.get("jobs", ())
        )
        return NodeSample(
            node_id=str(d["node_id"]),
            seq=int(d["seq"]),
            ts=float(d["ts"]),
            cpu_utilisation=float(d["cpu_utilisation"]),
            memory_utilisation=float(d.get("memory_utilisation", 0.0)),
            cpu_power_w=float(d["cpu_power_w"]),
            cpu_method=Provenance(d.get("cpu_method", "modelled")),
            node_cpu_seconds=float(d.get("node_cpu_seconds", 0.0)),
            cores=int(d.get("cores", 1)),
            cpu_energy_j=None if d.get("cpu_energy_j") is None else float(d["cpu_energy_j"]),
            cpu_idle_w=float(d.get("cpu_idle_w", 0.0)),
            gpu_idle_w=float(d.get("gpu_idle_w", 0.0)),
            gpus=gpus,
            jobs=jobs,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed sample: {exc!r}") from exc


def sample_to_dict(s: NodeSample) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "seq": s.seq,
        "ts": s.ts,
        "cpu_utilisation": s.cpu_utilisation,
        "memory_utilisation": s.memory_utilisation,
        "cpu_power_w": s.cpu_power_w,
        "cpu_method": s.cpu_method.value,
        "node_cpu_seconds": s.node_cpu_seconds,
        "cores": s.cores,
        "cpu_energy_j": s.cpu_energy_j,
        "cpu_idle_w": s.cpu_idle_w,
        "gpu_idle_w": s.gpu_idle_w,
        "gpus": [
            {
                "index": g.index,
                "utilisation": g.utilisation,
                "memory_used_mb": g.memory_used_mb,
                "power_w": g.power_w,
                "energy_j": g.energy_j,
                "method": g.method.value,
            }
            for g in s.gpus
        ],
        "jobs": [
            {"job_id": j.job_id, "cpu_seconds": j.cpu_seconds, "gpus": list(j.gpus), "cores": j.cores}
            for j in s.jobs
        ],
    }


# ---- column-shaped wire form ------------------------------------------------------------
#
# A batch of samples as parallel arrays, one JSON array per field: ``{"seq": [..], "ts": [..],
# "cpu_utilisation": [..], ...}``. It carries exactly what the list of per-sample objects
# carries (row i of every column is sample i; a column that is absent means "field absent"
# in every sample), but the platform can turn each column into a numpy array in one call
# instead of visiting 5,000 dicts. Nested parts (``gpus``, ``jobs``) are per-row lists, null
# or empty where a sample has none; samples that carry them take the full per-sample path.

COLUMN_FIELDS = (
    "node_id", "seq", "ts", "cpu_utilisation", "memory_utilisation", "cpu_power_w", "cpu_method",
    "node_cpu_seconds", "cores", "cpu_energy_j", "cpu_idle_w", "gpu_idle_w", "gpus", "jobs",
)  # fmt: skip


def columns_or_none(rows: list[dict[str, Any]]) -> dict[str, list[Any]] | None:
    """Per-sample objects -> parallel columns (the agent's sending form), or None.

    ``gpus``/``jobs`` (empty list) and ``cpu_energy_j`` (null) mean the same absent or empty,
    so they are filled where a sample lacks them; any other field must be in every sample,
    else None: the caller sends the per-sample form, which says exactly what it means.
    """
    if not rows:
        return {}
    keys: set[str] = set()
    for r in rows:
        keys.update(r)
    cols: dict[str, list[Any]] = {}
    for k in keys:
        if k in ("gpus", "jobs"):
            cols[k] = [r.get(k) or [] for r in rows]
        elif k == "cpu_energy_j":
            cols[k] = [r.get(k) for r in rows]
        elif all(k in r for r in rows):
            cols[k] = [r[k] for r in rows]
        else:
            return None
    return cols


def columns_to_rows(cols: dict[str, Any], index: Collection[int] | None = None) -> list[dict[str, Any]]:
    """Parallel columns -> per-sample objects (all rows, or those at ``index``).

    Used by the platform for samples that need the full per-sample checks (to quarantine
    them with their reason and payload) and by the agent's fallback to the object form.
    An empty ``gpus``/``jobs`` entry is left out, as the object form would omit it.
    """
    n = column_length(cols)
    idx = range(n) if index is None else index
    out: list[dict[str, Any]] = []
    for i in idx:
        d: dict[str, Any] = {}
        for k, v in cols.items():
            x = v[i]
            if k in ("gpus", "jobs") and not x:
                continue
            d[k] = x
        out.append(d)
    return out


def column_length(cols: dict[str, Any]) -> int:
    """The common length of the columns; InvalidInput when they differ or are not arrays."""
    n: int | None = None
    for k, v in cols.items():
        if not isinstance(v, list):
            raise InvalidInput(f"column {k!r} must be an array")
        if n is None:
            n = len(v)
        elif len(v) != n:
            raise InvalidInput(f"column {k!r} has {len(v)} entries, others have {n}")
    return n or 0

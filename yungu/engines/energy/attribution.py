"""Per-job energy on one node, the way Kepler attributes it, with idle power kept apart.

For each interval between two consecutive samples of a node:

* **GPU**: a device's energy (counter delta when both ends carry the NVML counter,
  otherwise the trapezoid of the two power readings) goes wholly to the job the device is
  assigned to. Its idle part (``gpu_idle_w x dt``) is reported separately. Energy of
  devices assigned to no job is ``unassigned_gpu_j``.
* **CPU dynamic**: package energy above idle, split by each job's share of the node's CPU
  time in the interval (the job's process-tree CPU seconds over the node's busy CPU
  seconds). CPU time of processes outside any job is ``system_j``.
* **CPU idle**: shared explicitly by allocated cores (``cores_j / node cores``); the idle
  power of unallocated cores is ``unallocated_idle_j``. Nobody is silently charged for
  idle capacity they did not hold.

Everything is conserved: the jobs' totals plus ``system_j``, ``unallocated_idle_j`` and
``unassigned_gpu_j`` equal the node's energy (``test_attribution_conserves_energy``).
Energy is also bucketed by UTC hour so carbon accounting can use hourly intensities.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from yungu.engines.energy.samples import NodeSample
from yungu.engines.energy.signals import Provenance


@dataclass
class JobEnergy:
    job_id: str
    cpu_dynamic_j: float = 0.0
    cpu_idle_j: float = 0.0
    gpu_dynamic_j: float = 0.0
    gpu_idle_j: float = 0.0
    modelled_j: float = 0.0  # how much of the total came from the power model
    hourly_j: dict[int, float] = field(default_factory=lambda: defaultdict(float))  # hour epoch s -> J

    @property
    def total_j(self) -> float:
        return self.cpu_dynamic_j + self.cpu_idle_j + self.gpu_dynamic_j + self.gpu_idle_j

    @property
    def idle_j(self) -> float:
        return self.cpu_idle_j + self.gpu_idle_j

    @property
    def provenance(self) -> Provenance:
        """``measured`` only if no joule of it came from the model."""
        return Provenance.MODELLED if self.modelled_j > 1e-9 * max(1.0, self.total_j) else Provenance.MEASURED


@dataclass
class NodeEnergy:
    node_id: str
    total_j: float = 0.0
    cpu_j: float = 0.0
    gpu_j: float = 0.0
    system_j: float = 0.0
    unallocated_idle_j: float = 0.0
    unassigned_gpu_j: float = 0.0
    modelled_j: float = 0.0
    jobs: dict[str, JobEnergy] = field(default_factory=dict)
    used_counters: bool = False

    def job(self, job_id: str) -> JobEnergy:
        if job_id not in self.jobs:
            self.jobs[job_id] = JobEnergy(job_id)
        return self.jobs[job_id]

    @property
    def attributed_j(self) -> float:
        return (
            sum(j.total_j for j in self.jobs.values())
            + self.system_j
            + self.unallocated_idle_j
            + self.unassigned_gpu_j
        )


def _energy(p0: float, p1: float, c0: float | None, c1: float | None, dt: float) -> tuple[float, bool]:
    """Interval energy: counter delta when both ends have one, else trapezoid."""
    if c0 is not None and c1 is not None:
        d = c1 - c0
        return (c1 if d < 0 else d), True
    return 0.5 * (p0 + p1) * dt, False


def _hour_split(t0: float, t1: float) -> Iterable[tuple[int, float]]:
    """(hour start, fraction of [t0, t1)) for each UTC hour the interval touches."""
    span = t1 - t0
    h = math.floor(t0 / 3600.0) * 3600
    while h < t1:
        a, b = max(t0, h), min(t1, h + 3600)
        if b > a:
            yield int(h), (b - a) / span
        h += 3600


def attribute(samples: Sequence[NodeSample]) -> NodeEnergy:
    """Attribute a node's energy over its samples (sorted by time; duplicates dropped first)."""
    ordered = sorted({s.seq: s for s in samples}.values(), key=lambda s: s.ts)
    out = NodeEnergy(ordered[0].node_id if ordered else "")
    for s0, s1 in itertools.pairwise(ordered):
        dt = s1.ts - s0.ts
        if dt <= 0:
            continue
        _interval(out, s0, s1, dt)
    return out


def _interval(out: NodeEnergy, s0: NodeSample, s1: NodeSample, dt: float) -> None:
    hours = list(_hour_split(s0.ts, s1.ts))

    def credit(job: JobEnergy, joules: float) -> None:
        for h, frac in hours:
            job.hourly_j[h] += joules * frac

    # CPU package
    cpu_e, counted = _energy(s0.cpu_power_w, s1.cpu_power_w, s0.cpu_energy_j, s1.cpu_energy_j, dt)
    out.used_counters |= counted
    cpu_modelled = s1.cpu_method is Provenance.MODELLED
    cpu_idle = min(cpu_e, 0.5 * (s0.cpu_idle_w + s1.cpu_idle_w) * dt)
    cpu_dyn = cpu_e - cpu_idle
    before = {j.job_id: j for j in s0.jobs}
    deltas: dict[str, float] = {}
    for j in s1.jobs:
        prev = before.get(j.job_id)
        deltas[j.job_id] = max(0.0, j.cpu_seconds - (prev.cpu_seconds if prev else 0.0))
    job_cpu = sum(deltas.values())
    denom = max(s1.node_cpu_seconds - s0.node_cpu_seconds, job_cpu, 0.0)
    given = 0.0
    for j in s1.jobs:
        share = deltas[j.job_id] / denom if denom > 0 else 0.0
        dyn = cpu_dyn * share
        idle = cpu_idle * min(1.0, j.cores / s1.cores) if s1.cores > 0 else 0.0
        idle = min(idle, cpu_idle - given)
        given += idle
        je = out.job(j.job_id)
        je.cpu_dynamic_j += dyn
        je.cpu_idle_j += idle
        if cpu_modelled:
            je.modelled_j += dyn + idle
        credit(je, dyn + idle)
    out.system_j += cpu_dyn * ((denom - job_cpu) / denom if denom > 0 else 1.0)
    out.unallocated_idle_j += cpu_idle - given
    out.cpu_j += cpu_e
    if cpu_modelled:
        out.modelled_j += cpu_e

    # GPUs
    # A job that ended inside the interval still held its devices for it: s0's owners count too.
    owner = {g: j.job_id for j in s0.jobs for g in j.gpus}
    owner.update({g: j.job_id for j in s1.jobs for g in j.gpus})
    g0 = {g.index: g for g in s0.gpus}
    for g in s1.gpus:
        gprev = g0.get(g.index)
        if gprev is None:
            continue
        e, counted = _energy(gprev.power_w, g.power_w, gprev.energy_j, g.energy_j, dt)
        out.used_counters |= counted
        idle = min(e, 0.5 * (s0.gpu_idle_w + s1.gpu_idle_w) * dt)
        modelled = g.method is Provenance.MODELLED
        out.gpu_j += e
        if modelled:
            out.modelled_j += e
        job_id = owner.get(g.index)
        if job_id is None:
            out.unassigned_gpu_j += e
            continue
        je = out.job(job_id)
        je.gpu_dynamic_j += e - idle
        je.gpu_idle_j += idle
        if modelled:
            je.modelled_j += e
        credit(je, e)
    out.total_j = out.cpu_j + out.gpu_j

"""Round-local capacity bookkeeping shared by every policy: free nodes, gang placement, estimates.

A round copies the snapshot's free capacity into small mutable lists, places gangs
all-or-nothing (best fit per replica: the fullest node that still fits, which keeps whole
nodes free for large gangs), and answers "when would this gang fit on this pool" from the
running jobs' estimated ends (for EASY reservations). Nothing here outlives one
``schedule()`` call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Allocation, Job, ReplicaPlacement
from yungu.domain.world import Pool
from yungu.engines.scheduler.types import PoolState

DEFAULT_DURATION_S = 3600.0


def throughput(catalogue: Catalogue, pool: Pool) -> float:
    """Relative training throughput of one device of the pool (A100 = 1.0; CPU pools 1.0)."""
    if pool.accelerator and pool.accelerator in catalogue:
        t = catalogue.get(pool.accelerator).relative_throughput
        return t if t > 0 else 1.0
    return 1.0


def device_power_w(catalogue: Catalogue, pool: Pool, load: float) -> float:
    """Average electrical power of one busy device (W): idle + load x (TDP - idle)."""
    if pool.accelerator and pool.accelerator in catalogue:
        spec = catalogue.get(pool.accelerator)
        return spec.idle_w + load * (spec.tdp_w - spec.idle_w)
    return 0.0


def ref_duration_s(job: Job, default: float = DEFAULT_DURATION_S) -> float:
    d = job.spec.estimated_duration_s
    return float(d) if d else default


def devices(job: Job) -> int:
    return job.spec.resources.accelerators * job.spec.replicas


class Free:
    """Mutable free capacity of one pool during a round."""

    __slots__ = ("available", "cpus", "devs", "free_devices", "mem", "pool_id")

    def __init__(self, state: PoolState) -> None:
        self.pool_id = state.pool_id
        self.available = state.available
        self.cpus = [n.cpus for n in state.nodes]
        self.mem = [n.memory_gb for n in state.nodes]
        self.devs = [list(n.devices) for n in state.nodes]
        self.free_devices = sum(len(d) for d in self.devs)

    def copy(self) -> Free:
        c = Free.__new__(Free)
        c.pool_id, c.available = self.pool_id, self.available
        c.cpus, c.mem = list(self.cpus), list(self.mem)
        c.devs = [list(d) for d in self.devs]
        c.free_devices = self.free_devices
        return c

    def find(self, job: Job) -> list[tuple[int, tuple[int, ...]]] | None:
        """Node and device indices for every replica (best fit), or None; changes nothing."""
        r = job.spec.resources
        need = r.accelerators * job.spec.replicas
        if need > self.free_devices or not self.available:
            return None
        cpus, mem = list(self.cpus), list(self.mem)
        ndev = [len(d) for d in self.devs]
        out: list[tuple[int, tuple[int, ...]]] = []
        taken: dict[int, int] = {}
        for _ in range(job.spec.replicas):
            best = -1
            for i in range(len(cpus)):
                if cpus[i] >= r.cpus and mem[i] >= r.memory_gb and ndev[i] >= r.accelerators and (
                    best < 0 or ndev[i] < ndev[best]
                ):
                    best = i
                    if ndev[i] == r.accelerators:
                        break
            if best < 0:
                return None
            k = taken.get(best, 0)
            out.append((best, tuple(self.devs[best][k : k + r.accelerators])))
            taken[best] = k + r.accelerators
            cpus[best] -= r.cpus
            mem[best] -= r.memory_gb
            ndev[best] -= r.accelerators
        return out

    def take(self, job: Job, where: list[tuple[int, tuple[int, ...]]]) -> Allocation:
        r = job.spec.resources
        for node, devs in where:
            self.cpus[node] -= r.cpus
            self.mem[node] -= r.memory_gb
            gone = set(devs)
            self.devs[node] = [d for d in self.devs[node] if d not in gone]
            self.free_devices -= len(devs)
        return Allocation(
            job.id,
            self.pool_id,
            tuple(ReplicaPlacement(n, d) for n, d in where),
            r.cpus,
            r.memory_gb,
        )

    def release(self, alloc: Allocation) -> None:
        for rp in alloc.replicas:
            if rp.node >= len(self.cpus):
                continue
            self.cpus[rp.node] += alloc.cpus_per_replica
            self.mem[rp.node] += alloc.memory_gb_per_replica
            self.devs[rp.node].extend(rp.devices)
            self.free_devices += len(rp.devices)


@dataclass(frozen=True)
class RunningInfo:
    job: Job
    pool_id: str
    expected_end: datetime
    devices: int


def running_by_pool(
    running: Iterable[Job], pools: Mapping[str, Pool], catalogue: Catalogue, now: datetime
) -> dict[str, list[RunningInfo]]:
    """Running jobs per pool with their estimated end (start + estimate / throughput)."""
    out: dict[str, list[RunningInfo]] = {}
    tput: dict[str, float] = {}
    for j in running:
        if j.allocation is None:
            continue
        pool = pools.get(j.allocation.pool_id)
        if pool is None:
            continue
        t = tput.get(pool.id)
        if t is None:
            t = tput[pool.id] = throughput(catalogue, pool)
        run = ref_duration_s(j) / t
        start = j.started_at or now
        end = max(now, start + timedelta(seconds=run))
        out.setdefault(pool.id, []).append(RunningInfo(j, pool.id, end, j.allocation.devices))
    for v in out.values():
        v.sort(key=lambda r: r.expected_end)
    return out


def _slots(dev: int, cpu: int, mem: float, a: int, c: int, m: float) -> int:
    """How many replicas of shape (a devices, c CPUs, m GB) fit on one node with this much free."""
    k = dev // a if a > 0 else 1 << 30
    if c > 0:
        k = min(k, cpu // c)
    if m > 0:
        k = min(k, int(mem // m))
    return max(k, 0)


def fit_timeline(job: Job, free: Free, running: list[RunningInfo], now: datetime) -> list[tuple[datetime, int, int]]:
    """``(time, replica slots, free devices)`` for the job's replica shape on this pool: now, then
    after each running job's estimated end (in order). Replicas are identical, so the gang fits
    exactly when the slots (per node: free devices, CPUs and memory each divided by the
    replica's need, rounded down) add up to the replica count. The walk only updates the nodes
    each release touches. An unavailable pool has no entry for now."""
    r = job.spec.resources
    a, c, m = r.accelerators, r.cpus, r.memory_gb
    dev = [len(d) for d in free.devs]
    cpu = list(free.cpus)
    mem = list(free.mem)
    slots = [_slots(dev[i], cpu[i], mem[i], a, c, m) for i in range(len(dev))]
    total = sum(slots)
    free_devices = free.free_devices
    out: list[tuple[datetime, int, int]] = [(now, total, free_devices)] if free.available else []
    for run in running:
        alloc = run.job.allocation
        if alloc is None:
            continue
        for rp in alloc.replicas:
            i = rp.node
            if i >= len(dev):
                continue
            dev[i] += len(rp.devices)
            cpu[i] += alloc.cpus_per_replica
            mem[i] += alloc.memory_gb_per_replica
            free_devices += len(rp.devices)
            k = _slots(dev[i], cpu[i], mem[i], a, c, m)
            total += k - slots[i]
            slots[i] = k
        out.append((run.expected_end, total, free_devices))
    return out


class Timeline:
    """The release timeline of :func:`fit_timeline`, built only as far as it is read.

    Made from the pool's free capacity at creation (copied: later starts in the round do not
    change it) and its running jobs in order of estimated end; :meth:`first_fit` walks the
    releases until the gang fits, computing each entry once. Most questions are answered by
    the first few releases, so a pool with hundreds of running jobs is rarely walked to the
    end. "Now" is not stored: the same timeline answers in a later round while the pool's
    state and running jobs are unchanged.
    """

    __slots__ = ("a", "c", "cpu", "dev", "entries", "free_devices", "head", "m", "mem", "pos", "running", "slots",
                 "total")

    def __init__(self, job: Job, free: Free, running: list[RunningInfo]) -> None:
        r = job.spec.resources
        self.a, self.c, self.m = r.accelerators, r.cpus, r.memory_gb
        self.dev = [len(d) for d in free.devs]
        self.cpu = list(free.cpus)
        self.mem = list(free.mem)
        self.slots = [_slots(self.dev[i], self.cpu[i], self.mem[i], self.a, self.c, self.m) for i in range(len(self.dev))]
        self.total = sum(self.slots)
        self.free_devices = free.free_devices
        self.head: tuple[int, int] | None = (self.total, self.free_devices) if free.available else None
        self.running = running
        self.pos = 0
        self.entries: list[tuple[datetime, int, int]] = []

    def _extend(self) -> bool:
        """Add the entry after the next release; False when every running job is released."""
        dev, cpu, mem, slots = self.dev, self.cpu, self.mem, self.slots
        while self.pos < len(self.running):
            run = self.running[self.pos]
            self.pos += 1
            alloc = run.job.allocation
            if alloc is None:
                continue
            for rp in alloc.replicas:
                i = rp.node
                if i >= len(dev):
                    continue
                dev[i] += len(rp.devices)
                cpu[i] += alloc.cpus_per_replica
                mem[i] += alloc.memory_gb_per_replica
                self.free_devices += len(rp.devices)
                k = _slots(dev[i], cpu[i], mem[i], self.a, self.c, self.m)
                self.total += k - slots[i]
                slots[i] = k
            self.entries.append((run.expected_end, self.total, self.free_devices))
            return True
        return False

    def first_fit(self, job: Job, now: datetime, claimed: int = 0) -> tuple[datetime, int] | None:
        """The same answer as ``first_fit_time(job, fit_timeline(...), claimed)``."""
        want, need = job.spec.replicas, devices(job) + claimed
        h = self.head
        if h is not None and h[0] >= want and h[1] >= need:
            return now, h[1] - need
        entries = self.entries
        i = 0
        while True:
            if i == len(entries) and not self._extend():
                return None
            t, total, free_devices = entries[i]
            if total >= want and free_devices >= need:
                return t, free_devices - need
            i += 1


def first_fit_time(job: Job, timeline: list[tuple[datetime, int, int]], claimed: int = 0) -> tuple[datetime, int] | None:
    """The first entry of ``timeline`` where the gang fits beside ``claimed`` promised devices."""
    want, need = job.spec.replicas, devices(job) + claimed
    for t, total, free_devices in timeline:
        if total >= want and free_devices >= need:
            return t, free_devices - need
    return None


def earliest_fit(
    job: Job, free: Free, running: list[RunningInfo], now: datetime, claimed: int = 0
) -> tuple[datetime, int] | None:
    """When the gang would fit on this pool if nothing else started (EASY shadow time).

    Returns ``(shadow time, devices left over at that time)``, or None if it never fits
    (even with every running job gone). ``claimed``: devices already promised to jobs that
    wait for this pool this round; the gang then also needs that many more free devices
    (an estimate: which nodes the earlier claims take is not modelled).
    """
    return first_fit_time(job, fit_timeline(job, free, running, now), claimed)

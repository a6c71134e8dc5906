"""First-fit placement: the simplest scheduler behind the ``schedule(snapshot)`` interface.

Jobs are taken in order; each gang goes to the first pool whose free capacity holds all its
replicas at once (all or nothing), devices assigned lowest index first.
"""

from __future__ import annotations

from dataclasses import replace

from yungu.domain.job import Allocation, Job, ReplicaPlacement
from yungu.domain.status import Code, Status
from yungu.domain.world import Pool
from yungu.engines.scheduler.types import Defer, Infeasible, NodeFree, Plan, PoolState, Snapshot, Start


def fits_declared(job: Job, pool: Pool) -> list[str]:
    """Reasons why the job can never fit ``pool`` even when empty; empty list if it can."""
    r = job.spec.resources
    reasons = []
    if job.spec.pool and job.spec.pool != pool.id:
        reasons.append(f"pinned to pool {job.spec.pool}")
    if r.accelerators and not pool.accelerators_per_node:
        reasons.append("pool has no accelerators")
    if r.accelerator_types and pool.accelerator not in r.accelerator_types:
        reasons.append(f"accelerator {pool.accelerator} not in {list(r.accelerator_types)}")
    if r.accelerators > pool.accelerators_per_node:
        reasons.append(f"needs {r.accelerators} devices per replica; nodes have {pool.accelerators_per_node}")
    if r.cpus > pool.cpus_per_node:
        reasons.append(f"needs {r.cpus} CPUs per replica; nodes have {pool.cpus_per_node}")
    if r.memory_gb > pool.memory_gb_per_node:
        reasons.append(f"needs {r.memory_gb} GB per replica; nodes have {pool.memory_gb_per_node}")
    if not r.accelerators and not r.accelerator_types and pool.accelerators_per_node and job.spec.pool != pool.id:
        reasons.append("CPU-only job: accelerator pools are kept for accelerator work")
    if job.spec.replicas > pool.nodes * max(1, _per_node_slots(job, pool)):
        reasons.append(f"gang of {job.spec.replicas} exceeds the pool's {pool.nodes} nodes")
    return reasons


def _per_node_slots(job: Job, pool: Pool) -> int:
    r = job.spec.resources
    slots = pool.cpus_per_node // max(1, r.cpus)
    if r.memory_gb:
        slots = min(slots, pool.memory_gb_per_node // r.memory_gb)
    if r.accelerators:
        slots = min(slots, pool.accelerators_per_node // r.accelerators)
    return slots


def place_gang(job: Job, state: PoolState) -> tuple[Allocation, PoolState] | None:
    """All replicas placed on ``state`` at once, or None. Returns the pool's remaining capacity."""
    r = job.spec.resources
    nodes = list(state.nodes)
    placements: list[ReplicaPlacement] = []
    for _ in range(job.spec.replicas):
        for i, n in enumerate(nodes):
            if n.cpus >= r.cpus and n.memory_gb >= r.memory_gb and len(n.devices) >= r.accelerators:
                devs = n.devices[: r.accelerators]
                nodes[i] = NodeFree(n.cpus - r.cpus, n.memory_gb - r.memory_gb, n.devices[r.accelerators :])
                placements.append(ReplicaPlacement(node=i, devices=devs))
                break
        else:
            return None
    alloc = Allocation(job.id, state.pool_id, tuple(placements), r.cpus, r.memory_gb)
    return alloc, replace(state, nodes=tuple(nodes))


class FirstFit:
    name = "first-fit"

    def schedule(self, snapshot: Snapshot) -> Plan:
        free = dict(snapshot.pools)
        starts: list[Start] = []
        defers: list[Defer] = []
        infeasible: list[Infeasible] = []
        for job in snapshot.pending:
            if job.spec.earliest_start and job.spec.earliest_start > snapshot.now:
                defers.append(Defer(job.id, job.spec.earliest_start, Status(Code.WAIT, ("earliest_start in the future",), self.name)))
                continue
            candidates = [p for p in snapshot.world.pools if not fits_declared(job, p)]
            if not candidates:
                reasons = tuple(
                    f"{p.id}: {'; '.join(fits_declared(job, p))}" for p in snapshot.world.pools
                )
                infeasible.append(Infeasible(job.id, Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, self.name)))
                continue
            for pool in candidates:
                st = free.get(pool.id)
                if st is None or not st.available:
                    continue
                placed = place_gang(job, st)
                if placed:
                    alloc, free[pool.id] = placed
                    starts.append(Start(job.id, alloc, f"first pool with room: {pool.id}"))
                    break
            else:
                defers.append(Defer(job.id, None, Status(Code.UNSCHEDULABLE, ("no pool has room now",), self.name)))
        return Plan(starts=tuple(starts), defers=tuple(defers), infeasible=tuple(infeasible))

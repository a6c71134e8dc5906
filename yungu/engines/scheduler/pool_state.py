"""Free capacity per pool: declared capacity minus what active jobs hold."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from yungu.domain.job import Job
from yungu.domain.world import World
from yungu.engines.scheduler.types import NodeFree, PoolState


def pool_states(world: World, active: Iterable[Job], available: Mapping[str, bool] | None = None,
                unsupported: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, PoolState]:
    """Build the scheduler's view of free capacity: declared capacity minus what ``active``
    jobs hold (preempted ones included until their stop is confirmed), with each pool's
    reachability and its executor's unsupported features (by pool id; absent: reachable,
    nothing unsupported). Raises if the store holds an over-commit, because that would be
    a bug we must not paper over."""
    used: dict[str, dict[int, list[int]]] = {}  # pool -> node -> [cpus, mem, *devices]
    devs_used: dict[tuple[str, int], set[int]] = {}
    local = {p.id for p in world.pools}
    for job in active:
        a = job.allocation
        if a is None or a.pool_id not in local:  # a peer's pool: its capacity is the peer's to count
            continue
        per_node = used.setdefault(a.pool_id, {})
        for r in a.replicas:
            n = per_node.setdefault(r.node, [0, 0])
            n[0] += a.cpus_per_replica
            n[1] += a.memory_gb_per_replica
            taken = devs_used.setdefault((a.pool_id, r.node), set())
            if taken & set(r.devices):
                raise AssertionError(f"device double-booked on {a.pool_id} node {r.node}: {r.devices}")
            taken.update(r.devices)
    states: dict[str, PoolState] = {}
    for pool in world.pools:
        pu = used.get(pool.id, {})
        nodes = []
        for i in range(pool.nodes):
            cpus, mem = pu.get(i, (0, 0))
            taken = devs_used.get((pool.id, i), set())
            free_devs = tuple(d for d in range(pool.accelerators_per_node) if d not in taken)
            nodes.append(NodeFree(pool.cpus_per_node - cpus, pool.memory_gb_per_node - mem, free_devs))
        ok = True if available is None else available.get(pool.id, True)
        missing = {} if unsupported is None else unsupported.get(pool.id, {})
        states[pool.id] = PoolState(pool.id, tuple(nodes), ok, missing)
    return states


def pool_load(world: World, active: Iterable[Job]) -> dict[str, dict[str, int]]:
    """Used devices and CPUs per pool, for capacity-and-load tables."""
    load = {p.id: {"devices_used": 0, "cpus_used": 0, "jobs": 0} for p in world.pools}
    for job in active:
        a = job.allocation
        if a is None or a.pool_id not in load:
            continue
        entry = load[a.pool_id]
        entry["devices_used"] += a.devices
        entry["cpus_used"] += a.cpus_per_replica * len(a.replicas)
        entry["jobs"] += 1
    return load


def hold_devices(state: PoolState, devices: int) -> PoolState:
    """Take ``devices`` free devices out of the pool's free capacity (from the last nodes, so
    first-fit placement keeps the low nodes whole): capacity reserved for someone else."""
    nodes = list(state.nodes)
    for i in range(len(nodes) - 1, -1, -1):
        if devices <= 0:
            break
        n = nodes[i]
        take = min(devices, len(n.devices))
        if take:
            nodes[i] = NodeFree(n.cpus, n.memory_gb, n.devices[: len(n.devices) - take])
            devices -= take
    return PoolState(state.pool_id, tuple(nodes), state.available, state.unsupported)

"""Alert rules over node state: node silent, power anomaly, pool over declared capacity.

Pure: the caller passes the nodes' last-seen times and powers, the pools' declared node
counts and per-node power ceilings, and ``now``. Returns the alerts that hold now; the
store keeps first/last-seen and resolution times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeState:
    node_id: str
    pool_id: str
    last_seen_s: float | None
    last_power_w: float | None


@dataclass(frozen=True)
class PoolLimit:
    pool_id: str
    declared_nodes: int
    node_max_w: float  # the catalogue TDP of a node of this pool (CPU + accelerators)


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str
    severity: str
    message: str


def evaluate(
    nodes: Sequence[NodeState],
    pools: Mapping[str, PoolLimit],
    now_s: float,
    *,
    silent_after_s: float = 60.0,
    anomaly_factor: float = 1.2,
) -> list[Alert]:
    out: list[Alert] = []
    reporting: dict[str, int] = defaultdict(int)
    power: dict[str, float] = defaultdict(float)
    for n in nodes:
        if n.last_seen_s is None or now_s - n.last_seen_s > silent_after_s:
            age = (
                "never reported / 从未上报"
                if n.last_seen_s is None
                else f"silent for {now_s - n.last_seen_s:.0f} s / 已静默"
            )
            out.append(Alert("node_silent", n.node_id, "warning", f"node {n.node_id}: {age}"))
            continue
        reporting[n.pool_id] += 1
        power[n.pool_id] += n.last_power_w or 0.0
        lim = pools.get(n.pool_id)
        if (
            lim is not None
            and n.last_power_w is not None
            and n.last_power_w > anomaly_factor * lim.node_max_w
        ):
            out.append(Alert("power_anomaly", n.node_id, "critical",
                             f"node {n.node_id} draws {n.last_power_w:.0f} W, above {anomaly_factor:.1f} x its "
                             f"{lim.node_max_w:.0f} W ceiling / 功率异常"))  # fmt: skip
    for pool_id, lim in sorted(pools.items()):
        if reporting[pool_id] > lim.declared_nodes:
            out.append(Alert("pool_over_capacity", pool_id, "warning",
                             f"pool {pool_id}: {reporting[pool_id]} nodes reporting, {lim.declared_nodes} declared / 超出申报容量"))  # fmt: skip
        elif power[pool_id] > lim.declared_nodes * lim.node_max_w:
            out.append(Alert("pool_over_capacity", pool_id, "warning",
                             f"pool {pool_id}: {power[pool_id]:.0f} W drawn, declared ceiling "
                             f"{lim.declared_nodes * lim.node_max_w:.0f} W / 超出申报功率"))  # fmt: skip
    return out

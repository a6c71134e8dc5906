"""How many replicas an inference service should run: between its minimum and maximum,
on queue depth (requests in flight or waiting) and latency. Pure; the inference manager
calls it every pass and submits or cancels replica jobs to match.

Up at once when the queue per replica or the latency is over target; down one replica at a
time, only after the service has been quiet for ``down_after_s`` (no flapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    min_replicas: int = 1
    max_replicas: int = 1
    target_queue: float = 4.0  # requests in flight per replica
    target_latency_ms: float = 2000.0  # time to the first byte
    down_after_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.target_queue <= 0 or self.target_latency_ms <= 0:
            raise ValueError("scaling targets must be positive")


@dataclass(frozen=True)
class Observed:
    replicas: int  # running or starting
    queue: int  # requests in flight across the replicas
    latency_ms: float  # recent time to the first byte
    quiet_since: float | None  # when the service last needed its current count (monotonic s)


def desired(policy: ScalePolicy, seen: Observed, now: float) -> int:
    lo, hi = policy.min_replicas, policy.max_replicas
    need = math.ceil(seen.queue / policy.target_queue) if seen.queue else 0
    if seen.latency_ms > policy.target_latency_ms and seen.queue:
        need = max(need, seen.replicas + 1)
    need = min(hi, max(lo, need))
    if need >= seen.replicas:
        return need
    # Fewer would do: drop one, and only after a quiet spell.
    if seen.quiet_since is not None and now - seen.quiet_since >= policy.down_after_s:
        return max(need, seen.replicas - 1)
    return seen.replicas

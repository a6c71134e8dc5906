"""What the control loop asks of federation: peers' offers as pools in the scheduler's snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from yungu.domain.job import Job
from yungu.domain.world import World
from yungu.engines.scheduler.types import PoolState


class RemoteCapacity(Protocol):
    def extend_snapshot(self, now: datetime, world: World, pools: Mapping[str, PoolState],
                        signals: Mapping[str, object], active: Sequence[Job] = ()
                        ) -> tuple[World, dict[str, PoolState], dict[str, object]]:
        """The scheduler's world, free capacity and signals with remote pools added."""
        ...

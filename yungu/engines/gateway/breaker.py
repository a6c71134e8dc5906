"""A circuit breaker per replica: opens after ``failures`` failed calls among the last
``window`` calls (not on the first error), stays open ``cooldown_s``, then lets one probe
through (half-open); the probe's success closes it, its failure opens it again.

Pure: the caller passes ``now`` (monotonic seconds) and reports each outcome.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 3  # X failures ...
    window: int = 10  # ... among the last N calls open the breaker
    cooldown_s: float = 10.0  # then wait this long before one probe

    def __post_init__(self) -> None:
        if not 1 <= self.failures <= self.window:
            raise ValueError("breaker needs 1 <= failures <= window")
        if self.cooldown_s <= 0:
            raise ValueError("breaker cooldown must be positive")


@dataclass
class Breaker:
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    probing: bool = False
    _recent: deque[bool] = field(default_factory=deque)  # True = failure

    def allows(self, now: float) -> bool:
        """May a call go to this replica now? In half-open, only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.policy.cooldown_s:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def view(self, now: float) -> BreakerState:
        """The state as a router sees it, without claiming the probe."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.policy.cooldown_s:
            return BreakerState.HALF_OPEN
        return self.state

    def record(self, ok: bool, now: float) -> None:
        if self.state is not BreakerState.CLOSED:
            if self.state is BreakerState.HALF_OPEN or self.probing:
                self.probing = False
                if ok:
                    self.state = BreakerState.CLOSED
                    self._recent.clear()
                else:
                    self.state, self.opened_at = BreakerState.OPEN, now
            return
        self._recent.append(not ok)
        if len(self._recent) > self.policy.window:
            self._recent.popleft()
        if sum(self._recent) >= self.policy.failures:
            self.state, self.opened_at = BreakerState.OPEN, now
            self._recent.clear()

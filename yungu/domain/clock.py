"""Time is injected: engines take ``now``; control loops and executors take a ``Clock``.

Two readings, because they answer different questions:

- ``now()`` is wall-clock time (aware UTC): what is written down (``submitted_at``, event
  times, billing periods) and what the scheduler plans against;
- ``monotonic()`` is seconds on a clock that never goes back: what intervals, timeouts,
  back-off and leases are measured with (a wall clock stepped by NTP must not fire them);

and ``sleep(seconds)``, where code would wait (a test clock may jump instead of waiting).

Production wires ``yungu.adapters.system.SystemClock``; tests and the simulator use
``FixedClock`` (moves only when told) or ``yungu.testing.MockClock`` (can jump by itself).
Nothing in ``yungu.control`` or the executors reads ``time``/``datetime.now`` directly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class FixedClock:
    """A test/simulation clock that moves only when told to (both readings together)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        """Nothing else moves this clock, so waiting means moving it."""
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now = self._now + timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, when: datetime) -> None:
        """Jump the wall clock (forward: the monotonic reading follows; back: it stays)."""
        delta = (when - self._now).total_seconds()
        self._now = when
        if delta > 0:
            self._mono += delta

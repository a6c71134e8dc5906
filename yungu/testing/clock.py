"""A clock for tests that moves when told, or by itself (after Trio's ``MockClock``).

``MockClock`` has both readings of :class:`yungu.domain.clock.Clock` (wall ``now()`` and
``monotonic()``) on one virtual timeline, and three ways of moving it:

- ``jump(seconds)``: the test moves it (sleepers whose deadline passed wake up);
- ``rate``: virtual seconds per real second (0, the default, stands still; 1 runs with
  the wall clock; 10 runs ten times faster), for code that must see time pass on its own;
- ``autojump``: a ``sleep(s)`` does not wait: the clock jumps to its deadline and returns,
  so a loop that sleeps between rounds runs its rounds back to back, deterministically
  and instantly. (Trio jumps once every task is blocked; threads cannot be watched like
  that, so here the sleeper itself jumps: ``sleep`` is where code says it would wait.)

Without autojump, ``sleep`` really blocks until someone jumps the clock past its deadline
(or the rate carries it there), which is how a test holds a thread at a point in time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class MockClock:
    def __init__(self, start: datetime | None = None, *, rate: float = 0.0, autojump: bool = False) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("MockClock needs an aware (UTC) start time")
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._cond = threading.Condition()  # an RLock inside: readings may be taken while held
        self._virtual = 0.0  # virtual seconds since start, at real time _real_base
        self._real_base = time.perf_counter()
        self._rate = 0.0
        self.rate = rate
        self.autojump = autojump
        self.sleeps = 0  # how many sleep() calls there were (a test can assert a loop slept)

    # ---- the Clock protocol ---------------------------------------------------------------

    def monotonic(self) -> float:
        with self._cond:
            return self._virtual + (time.perf_counter() - self._real_base) * self._rate

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("cannot sleep a negative time")
        self.sleeps += 1
        deadline = self.monotonic() + seconds
        if self.autojump:
            self._advance_to(deadline)
            return
        with self._cond:
            while self.monotonic() < deadline:
                if self._rate > 0:
                    left = (deadline - self.monotonic()) / self._rate
                    self._cond.wait(timeout=min(max(left, 0.0), 0.5))
                else:
                    self._cond.wait(timeout=0.5)

    # ---- moving it ----------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value < 0:
            raise ValueError("rate must be >= 0")
        with self._cond:
            now = self._virtual + (time.perf_counter() - self._real_base) * self._rate
            self._virtual, self._real_base, self._rate = now, time.perf_counter(), float(value)
            self._cond.notify_all()

    def jump(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (waking sleepers whose deadline passed)."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._advance_to(self.monotonic() + seconds)

    advance = jump  # the same verb as FixedClock's

    def _advance_to(self, target: float) -> None:
        with self._cond:
            current = self._virtual + (time.perf_counter() - self._real_base) * self._rate
            if target > current:
                self._virtual, self._real_base = target, time.perf_counter()
            self._cond.notify_all()


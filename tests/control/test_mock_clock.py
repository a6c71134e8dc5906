"""``yungu.testing.MockClock``: jumps when told, runs at a rate, or jumps to every sleep."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from yungu.testing import MockClock
from yungu.testing.world import T0


def test_it_stands_still_until_told() -> None:
    c = MockClock(T0)
    assert c.now() == T0 and c.monotonic() == 0.0
    c.jump(90)
    assert c.now() == T0 + timedelta(seconds=90) and c.monotonic() == 90.0
    with pytest.raises(ValueError):
        c.jump(-1)


def test_autojump_makes_sleeps_instant_and_exact() -> None:
    c = MockClock(T0, autojump=True)
    t = time.perf_counter()
    for _ in range(1000):
        c.sleep(60)  # a loop that waits a minute between rounds
    assert time.perf_counter() - t < 1.0
    assert c.monotonic() == 60_000 and c.sleeps == 1000


def test_without_autojump_a_sleeper_waits_for_the_jump() -> None:
    c = MockClock(T0)
    woke = threading.Event()

    def sleeper() -> None:
        c.sleep(30)
        woke.set()

    th = threading.Thread(target=sleeper, daemon=True)
    th.start()
    assert not woke.wait(0.2)  # held at its point in time
    c.jump(29)
    assert not woke.wait(0.1)
    c.jump(1)
    assert woke.wait(2.0)


def test_a_rate_runs_virtual_time_faster() -> None:
    c = MockClock(T0, rate=100.0)
    time.sleep(0.05)
    assert 3.0 < c.monotonic() < 60.0
    c.rate = 0
    frozen = c.monotonic()
    time.sleep(0.02)
    assert c.monotonic() == frozen

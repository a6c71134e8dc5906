"""Makes Python's ``time.sleep`` work under libfaketime (loaded only by ``make test-times``).

``make test-times`` runs the time-sensitive suites under Debian's ``faketime`` with
``FAKETIME_DONT_FAKE_MONOTONIC=1`` and ``PYTHONPATH`` pointing here, so every Python process
of the run (pytest, the servers and CLIs it starts) imports this module at start-up.

Why: libfaketime 0.9.10 does not intercept ``sem_clockwait``, which CPython 3.11 uses for
every lock and event timeout against CLOCK_MONOTONIC, so a faked monotonic clock makes
``threading.Event.wait(0.5)`` wait for decades. With the monotonic clock left real those
waits are right, but libfaketime's ``clock_nanosleep`` still shifts absolute monotonic
deadlines by the fake offset, and ``time.sleep`` (which CPython implements with it) fails
with EINVAL. A ``select`` with a relative timeout sleeps correctly; only the wall clock
(``time.time``, ``datetime.now``) is faked, which is what the runs are about.
"""

from __future__ import annotations

import os
import select
import time

if "faketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":
    _monotonic = time.monotonic

    def _sleep(secs: float) -> None:
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = _monotonic() + secs
        while (left := deadline - _monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep

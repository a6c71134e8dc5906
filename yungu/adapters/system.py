"""The real clock and id source, injected by the composition root."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from yungu.domain.ids import uuid7


class SystemClock:
    """The machine's clocks: UTC wall time, ``time.monotonic`` and a real sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Ids:
    """UUIDv7 ids: globally unique and time-ordered (keyset pagination follows submission order)."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0

    def new(self) -> str:
        ms = time.time_ns() // 1_000_000
        # Keep ids strictly increasing within one process even within one millisecond.
        if ms <= self._last_ms:
            ms = self._last_ms
            self._seq += 1
            if self._seq > 0xFF:  # 8 bits of sequence per millisecond: borrow the next one
                ms, self._seq = ms + 1, 0
        else:
            self._seq = 0
        self._last_ms = ms
        rand = bytearray(os.urandom(10))
        rand[0] = (self._seq >> 4) & 0x0F  # rand_a's top bits carry the in-ms sequence
        rand[1] = ((self._seq & 0x0F) << 4) | (rand[1] & 0x0F)
        return uuid7(ms, bytes(rand))

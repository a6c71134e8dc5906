"""The real clock and id source, injected by the composition root."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from yungu.domain.ids import uuid7


class SystemClock:
    """The machine's clock, optionally offset (``YUNGU_CLOCK_OFFSET_S``: tests of clock skew
    between federated platforms run one platform ahead or behind without touching the box)."""

    def __init__(self, offset_s: float | None = None) -> None:
        if offset_s is None:
            offset_s = float(os.environ.get("YUNGU_CLOCK_OFFSET_S", "0") or 0)
        self._offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset if self._offset else datetime.now(UTC)


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
        else:
            self._seq = 0
        self._last_ms = ms
        rand = bytearray(os.urandom(10))
        rand[0] = (self._seq >> 4) & 0x0F  # rand_a's top bits carry the in-ms sequence
        rand[1] = ((self._seq & 0x0F) << 4) | (rand[1] & 0x0F)
        return uuid7(ms, bytes(rand))

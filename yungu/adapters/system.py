"""The real clock and id source, injected by the composition root."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

from yungu.domain.ids import uuid7


class SystemClock:
    """The machine's clocks (UTC wall time, ``time.monotonic``, a real sleep), the wall time optionally offset (``YUNGU_CLOCK_OFFSET_S``: tests of clock skew
    between federated platforms run one platform ahead or behind without touching the box)."""

    def __init__(self, offset_s: float | None = None) -> None:
        if offset_s is None:
            offset_s = float(os.environ.get("YUNGU_CLOCK_OFFSET_S", "0") or 0)
        self._offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset if self._offset else datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Ids:
    """UUIDv7 ids: globally unique and time-ordered (keyset pagination follows submission order).

    Within one millisecond the 12 bits of ``rand_a`` carry a sequence (RFC 9562 method 1);
    when 4,096 ids are minted in one millisecond the timestamp borrows the next one, so ids
    stay strictly increasing in one process. Thread-safe: API threads and loops share it.
    """

    _SEQ_MAX = 0xFFF

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._seq += 1
                if self._seq > self._SEQ_MAX:  # sequence exhausted: borrow the next millisecond
                    ms += 1
                    self._seq = 0
            else:
                self._seq = 0
            self._last_ms = ms
            seq = self._seq
        rand = bytearray(os.urandom(10))
        rand[0] = (seq >> 4) & 0xFF  # rand_a (12 bits) = the top 12 bits of rand: the sequence
        rand[1] = ((seq & 0x0F) << 4) | (rand[1] & 0x0F)
        return uuid7(ms, bytes(rand))

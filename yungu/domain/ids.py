"""Globally unique, time-ordered ids (UUIDv7, RFC 9562).

Ids are minted at the edges (the composition root injects an ``IdFactory``); this module
only builds the value from its inputs so it stays pure and testable.
"""

from __future__ import annotations

import re
import uuid

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def uuid7(unix_ms: int, rand: bytes) -> str:
    """UUIDv7 from a millisecond timestamp and 10 random bytes."""
    if len(rand) < 10:
        raise ValueError("uuid7 needs 10 random bytes")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    r = int.from_bytes(rand[:10], "big")
    value |= ((r >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= r & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def is_id(text: str) -> bool:
    return bool(_UUID_RE.match(text))

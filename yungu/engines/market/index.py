"""The public price index: a volume-weighted average of clearing prices per product line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class IndexPoint:
    product_line: str  # region/accelerator class (the window is the time axis)
    at: datetime
    price_fen: int
    volume: int


def vwap(points: Sequence[IndexPoint]) -> int | None:
    """Volume-weighted average price in fen (rounded down); None when nothing traded."""
    vol = sum(p.volume for p in points)
    if vol == 0:
        return None
    return sum(p.price_fen * p.volume for p in points) // vol

"""Requests-per-minute and tokens-per-minute limits as leaky buckets (pure; ``now`` is
monotonic seconds).

A bucket holds what was used and drains at ``limit / 60`` per second, so a key may burst up
to its per-minute limit and then proceeds at the steady rate. A refusal carries the seconds
until the call would be admitted, which the HTTP layer sends as ``Retry-After``.

RPM counts a request when it is admitted. TPM cannot know a call's tokens before it runs, so
a call is admitted while the bucket is under the limit and its actual tokens are added when
it settles (the same rule OpenAI and LiteLLM apply); the bucket then refuses until it has
drained below the limit again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Bucket:
    limit_per_min: int
    used: float = 0.0
    at: float = 0.0

    @property
    def rate(self) -> float:
        return self.limit_per_min / 60.0

    def _drain(self, now: float) -> None:
        if now > self.at:
            self.used = max(0.0, self.used - (now - self.at) * self.rate)
            self.at = now

    def admit(self, now: float, amount: float) -> float:
        """Take ``amount`` if it fits under the limit; else the seconds to wait (> 0)."""
        self._drain(now)
        if self.used + amount <= self.limit_per_min:
            self.used += amount
            return 0.0
        return (self.used + amount - self.limit_per_min) / self.rate

    def under(self, now: float) -> float:
        """0 while the bucket is below its limit; else the seconds until it is."""
        self._drain(now)
        if self.used < self.limit_per_min:
            return 0.0
        return (self.used - self.limit_per_min) / self.rate + 1e-3

    def add(self, now: float, amount: float) -> None:
        self._drain(now)
        self.used += amount


def retry_after_s(wait: float) -> int:
    """Whole seconds for the ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(wait))

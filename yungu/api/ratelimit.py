"""Rate limits: per credential, and per source address for failed authentication.

Token buckets in memory (one API process; several processes each keep their own, so the
effective limit is per process). A request over its limit gets 429 with ``Retry-After``
(whole seconds) and a problem+json body, and changes nothing.

- **Per credential** (``RateLimit`` middleware): every request that carries an API key
  (``Authorization: Bearer``, ``X-API-Key``) or a node key (``X-Node-Key``) takes a token from
  that credential's bucket before anything else runs. Requests without a credential (health,
  the public price index, the certificate key) are not limited here.
- **Failed authentication per address** (``Limiter.auth_failed`` / ``Limiter.check_address``,
  called by ``deps.principal`` and the node-key check): each 401 takes a token from the
  caller's address; an address whose bucket is empty is answered 429 before its key is
  even looked up, so guessing keys costs the guesser, not the database.

Defaults (``RateLimits``) are far above what one API process serves for one key on the
2-core machines of BENCHMARKS.md (about 1,300 authenticated requests/s), so they never
throttle the benchmarks or honest clients; operators lower them with environment variables
(see ``RateLimits.from_env`` and docs/operations.md). A rate of 0 turns a limit off.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from yungu.api import problems
from yungu.domain.errors import InvalidInput, LimitExceeded


@dataclass(frozen=True)
class RateLimits:
    key_rate: float = 2000.0  # requests per second per credential, sustained
    key_burst: float = 4000.0  # bucket size: requests a credential may send at once
    auth_fail_rate: float = 0.5  # failed authentications per second per address, sustained
    auth_fail_burst: float = 30.0

    ENV: ClassVar[dict[str, str]] = {"key_rate": "YUNGU_RATE_KEY_PER_S", "key_burst": "YUNGU_RATE_KEY_BURST",
           "auth_fail_rate": "YUNGU_RATE_AUTH_FAIL_PER_S", "auth_fail_burst": "YUNGU_RATE_AUTH_FAIL_BURST"}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RateLimits:
        """Defaults, overridden by ``YUNGU_RATE_*`` variables (numbers; 0 turns a limit off)."""
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for field, var in cls.ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                v = float(raw)
            except ValueError:
                v = -1.0
            if not math.isfinite(v) or v < 0:
                raise InvalidInput(f"{var}={raw!r}: give a number >= 0 (0 turns the limit off) / 限流参数无效")
            values[field] = v
        return cls(**values)


class RateLimited(LimitExceeded):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, detail={"retry_after_s": math.ceil(retry_after_s)})
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class TokenBuckets:
    """Buckets of ``burst`` tokens refilled at ``rate`` per second, one per key; the least
    recently used are forgotten past ``max_keys`` (a forgotten bucket comes back full)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, max(burst, 1.0), clock, max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 when allowed, else the seconds until they would be there."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._b.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= n:
                tokens -= n
            else:
                wait = (n - tokens) / self.rate
            self._b[key] = (tokens, now)
            if len(self._b) > self.max_keys:
                self._b.popitem(last=False)
            return wait

    def peek(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0.0 if it has one now); takes nothing."""
        if not self.enabled:
            return 0.0
        with self._lock:
            state = self._b.get(key)
        if state is None:
            return 0.0
        tokens = min(self.burst, state[0] + (self.clock() - state[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class Limiter:
    def __init__(self, limits: RateLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or RateLimits()
        self.keys = TokenBuckets(self.limits.key_rate, self.limits.key_burst, clock)
        self.failures = TokenBuckets(self.limits.auth_fail_rate, self.limits.auth_fail_burst, clock)

    def check_address(self, address: str) -> None:
        """Raise ``RateLimited`` if ``address`` has used up its failed authentications."""
        wait = self.failures.peek(address)
        if wait > 0:
            raise RateLimited(f"too many failed authentications from {address}; retry in {math.ceil(wait)} s "
                              f"/ 认证失败次数过多，请稍后再试", wait)

    def auth_failed(self, address: str) -> None:
        self.failures.take(address)


def client_address(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def credential(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The credential a request carries (API key or node key), as sent; None if none."""
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() == b"bearer " and len(value) > 7:
                return value[7:].strip()
        elif name in (b"x-api-key", b"x-node-key") and value:
            return value
    return None


class RateLimit:
    """ASGI middleware: one token per request from the bucket of the credential it carries."""

    def __init__(self, app: Any, limiter: Limiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.limiter.keys.enabled:
            cred = credential(scope["headers"])
            if cred is not None:
                wait = self.limiter.keys.take(cred.decode("latin-1"))
                if wait > 0:
                    after = max(1, math.ceil(wait))
                    await problems.problem(
                        429, "Too many requests", f"this key is over its rate limit; retry in {after} s / "
                        f"请求过于频繁，请 {after} 秒后重试", "rate_limited",
                        headers={"Retry-After": str(after)})(scope, receive, send)
                    return
        await self.app(scope, receive, send)

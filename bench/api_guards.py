"""What the request guards cost per request: rate limit, body/NUL guard, security headers.

    python bench/api_guards.py [--requests 5000] [--rounds 3]

In process, no sockets: the same app over the embedded default world with its guards, and
with them stripped (the baseline), driven through ASGI for GET /health (no key), GET
/regions (a tenant key: the rate limiter's bucket) and POST /jobs with a 4 KiB job that the
API refuses (a body the guard counts and scans for NUL; refused so the store is not measured).
Rounds alternate guarded and bare apps; the table shows the median per-request time of each
and the difference in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine
from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.tenancy import Role


def bare(app: Any) -> Any:
    app.user_middleware = [m for m in app.user_middleware if m.cls.__name__ not in
                           ("RequestGuard", "RateLimit", "SecurityHeaders")]
    return app


async def drive(app: Any, method: str, path: str, headers: dict[str, str], body: bytes | None, n: int) -> float:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
        for _ in range(50):
            await http.request(method, path, headers=headers, content=body)
        t0 = time.perf_counter()
        for _ in range(n):
            await http.request(method, path, headers=headers, content=body)
        return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = build(Path(tmp) / "data", start_loop=False)
        t = c.store.create_tenant(c.ids.new(), "bench", c.clock.now())
        _, key = c.store.create_key(c.ids.new(), Role.TENANT, t.id, "bench", c.clock.now())
        h = {"Authorization": f"Bearer {key}"}
        job = b'{"name":"b","command":"' + b"x" * 4096 + b'","deadline":"2000-01-01T00:00:00Z"}'
        calls = [("GET /health (no key)", "GET", "/api/v1/health", {}, None),
                 ("GET /regions (tenant key)", "GET", "/api/v1/regions", h, None),
                 ("POST /jobs 4 KiB, refused", "POST", "/api/v1/jobs", {**h, "content-type": "application/json"}, job)]
        apps = {"guarded": create_app(c), "bare": bare(create_app(c))}
        res: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for label, method, path, headers, body in calls:
                for kind, app in apps.items():
                    res.setdefault((label, kind), []).append(
                        asyncio.run(drive(app, method, path, headers, body, args.requests)))
        c.close()
    print(f"machine: {machine()}  requests per run: {args.requests}  rounds: {args.rounds}")
    print("| call | without guards µs | with guards µs | cost µs | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, *_ in calls:
        b, g = statistics.median(res[(label, "bare")]), statistics.median(res[(label, "guarded")])
        print(f"| {label} | {b:.0f} | {g:.0f} | {g - b:+.0f} | {g / b:.2f} |")


if __name__ == "__main__":
    main()

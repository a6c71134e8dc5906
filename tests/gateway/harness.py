"""A real gateway for tests: SQLite store, the token service behind uvicorn (in a thread),
real upstream processes (the echo upstream, or the real model server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.net import free_port
from yungu.adapters.gateway.http1 import raise_open_files_limit
from yungu.adapters.gateway.service import TokenService
from yungu.adapters.gateway.store import TokenStore
from yungu.adapters.store import tables as _tables  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.system import Ids
from yungu.api.routes.openai import standalone
from yungu.domain.clock import FixedClock
from yungu.domain.tenancy import Role
from yungu.engines.gateway.breaker import BreakerPolicy
from yungu.engines.gateway.budget import Period
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.pricing import Price, cny_to_units
from yungu.engines.gateway.routing import Replica

PRICE = Price(Decimal("2.0000"), Decimal("8.0000"))  # CNY per million tokens


def start_echo(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "yungu.adapters.gateway.echo_upstream", "--port", str(port), *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", p)
    return p, url + "/v1"


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class Mono:
    """A monotonic clock the test moves (breakers, rate buckets)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Gateway:
    url: str
    service: TokenService
    store: TokenStore
    jobs: SqlStore
    clock: FixedClock
    mono: Mono
    ids: Ids
    tenant_id: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def key(self, *, budget: str | None = "10", models: tuple[str, ...] = (), rpm: int | None = None,
            tpm: int | None = None, regions: tuple[str, ...] = (), expires_at: datetime | None = None,
            alert: str | None = None, policy: bool = True) -> str:
        k, secret = self.jobs.create_key(self.ids.new(), Role.TENANT, self.tenant_id, "t", self.clock.now())
        if policy:
            self.store.set_key(KeyPolicy(k.id, self.tenant_id, "t", models,
                                         cny_to_units(Decimal(budget)) if budget is not None else None, Period.MONTH,
                                         Decimal(alert) if alert else None, rpm, tpm, regions, expires_at),
                               self.clock.now())
        return str(secret)

    def replica(self, rid: str, url: str, region: str = "horinger", model: str = "echo", kind: str = "chat",
                price: Price | None = None, provider: str = "Yungu Horinger", platform: str = "") -> None:
        self.store.add_upstream(Replica(rid, model, url, region, price or PRICE, provider, platform, "pool-a", "",
                                        0.5, kind), "registered", self.clock.now(), own_price=price is not None)
        self.service.refresh()

    def echo(self, rid: str, *args: str, region: str = "horinger", **kw: Any) -> str:
        p, url = start_echo(*args)
        self.procs.append(p)
        self.replica(rid, url, region, **kw)
        return url

    def post(self, path: str, key: str | None, body: Any, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=60, **kw)

    def rows(self) -> list[dict[str, Any]]:
        self.service.writer.flush()
        return self.store.usage(limit=1_000_000)


@contextmanager
def gateway(tmp: Path, *, breaker: BreakerPolicy | None = None) -> Iterator[Gateway]:
    engine = create_engine(f"sqlite:///{tmp / 'gw.db'}")
    migrate(engine)
    jobs = SqlStore(engine, "yungu-test")
    store = TokenStore(engine)
    clock = FixedClock(datetime(2026, 3, 10, 4, 0, tzinfo=UTC))
    ids, mono = Ids(), Mono()
    tenant = jobs.create_tenant(ids.new(), "lab", clock.now())
    now = clock.now()
    store.set_model("echo", "chat", PRICE, 64, now)
    store.set_model("echo-embed", "embeddings", Price(Decimal("0.1000"), Decimal("0")), 1, now)
    raise_open_files_limit()  # as the servers do (app/tokens.py, app/gateway_server.py)
    svc = TokenService(store, jobs.principal, clock, ids.new, "yungu-test", breaker=breaker, monotonic=mono,
                       refresh_s=1e9)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(standalone(svc), host="127.0.0.1", port=port, log_level="warning",
                                           loop="uvloop", http="httptools", lifespan="on"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    g = Gateway(url, svc, store, jobs, clock, mono, ids, tenant.id)
    try:
        yield g
    finally:
        server.should_exit = True
        th.join(timeout=10)
        svc.close()
        for p in g.procs:
            p.kill()
            p.wait()
        engine.dispose()


async def stream_lines(url: str, key: str, body: dict[str, Any], stop_after: int | None = None) -> tuple[int, list[str]]:
    """Stream a completion; read ``stop_after`` data lines and hang up (a client cut-off)."""
    async with httpx.AsyncClient(timeout=60) as c, c.stream(
            "POST", url, json=body, headers={"authorization": f"Bearer {key}"}) as r:
        lines: list[str] = []
        if r.status_code != 200:
            await r.aread()
            return r.status_code, [r.text]
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if stop_after is not None and len(lines) >= stop_after:
                    break
        return r.status_code, lines


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def stop_services(s: Any) -> None:
    """Scale every inference service of a test platform to zero and cancel its replica jobs,
    waiting until they end (replicas are jobs: they outlive the platform process otherwise)."""
    h = {"authorization": f"Bearer {s.admin_key}"}
    api = s.url + "/api/v1"
    for svc in httpx.get(f"{api}/tokens/services", headers=h).json()["items"]:
        body = {k: svc[k] for k in ("models", "tenant_id", "cpus", "accelerators", "pool", "command")}
        httpx.put(f"{api}/tokens/services/{svc['name']}", headers=h, json={**body, "min_replicas": 0, "max_replicas": 0})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = [j for j in httpx.get(f"{api}/jobs", headers=h, params={"limit": 500}).json()["items"]
                if j["state"] not in ("succeeded", "failed", "cancelled")]
        if not live:
            return
        for j in live:
            httpx.post(f"{api}/jobs/{j['id']}/cancel", headers=h)
        time.sleep(1)

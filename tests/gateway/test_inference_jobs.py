"""Inference services on the live platform: a replica is an ordinary job of kind inference
that the scheduler places; it becomes a gateway replica once healthy, scales up on queue
depth (to its maximum) and leaves the router when its job ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.gateway.harness import stop_services

ECHO = "{python} -m yungu.adapters.gateway.echo_upstream --port {port} --model {model} --delay-ms 150 --tokens 20"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str], str]]:
    data = tmp_path / "data"
    data.mkdir()
    s = ServerProcess(data).start(timeout=60)
    h = {"authorization": f"Bearer {s.admin_key}"}
    try:
        api = s.url + "/api/v1"
        httpx.put(f"{api}/tokens/models/echo", headers=h, json={"input_per_million": "1", "output_per_million": "2",
                                                                "max_output_tokens": 64}).raise_for_status()
        owner = httpx.post(f"{api}/admin/tenants", headers=h, json={"name": "token-service"}).json()["id"]
        lab = httpx.post(f"{api}/admin/tenants", headers=h, json={"name": "lab"}).json()["id"]
        r = httpx.put(f"{api}/tokens/services/echo", headers=h, json={
            "models": ["echo"], "tenant_id": owner, "min_replicas": 1, "max_replicas": 2, "command": ECHO,
            "pool": "horinger-cpu"})
        assert r.status_code == 200, r.text
        key = httpx.post(f"{api}/tokens/keys", headers=h, json={"tenant_id": lab, "budget": "100"}).json()["secret"]
        yield s, h, key
    finally:
        stop_services(s)
        s.stop()


def replicas(s: ServerProcess, h: dict[str, str]) -> list[dict[str, Any]]:
    return list(httpx.get(s.url + "/api/v1/tokens/upstreams", headers=h).json()["items"])


def wait(pred: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_replicas_are_jobs_published_when_healthy_and_scaled_on_queue_depth(platform) -> None:  # type: ignore[no-untyped-def]
    s, h, key = platform
    (first,) = wait(lambda: replicas(s, h))
    job = httpx.get(s.url + f"/api/v1/jobs/{first['job_id']}", headers=h).json()
    assert job["spec"]["kind"] == "inference" and job["state"] == "running"
    assert first["pool_id"] == "horinger-cpu" and first["region"] == "horinger" and first["source"] == "job"

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as c:
            async def one() -> int:
                r = await c.post(s.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "echo", "messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 20, "stream": True})
                return r.status_code
            codes: list[int] = []
            for _ in range(3):  # 12 streams of ~3 s each, three waves: the queue is 12 per replica
                codes += await asyncio.gather(*(one() for _ in range(12)))
            return codes

    codes = asyncio.run(load())
    assert set(codes) == {200}
    two = wait(lambda: len(replicas(s, h)) == 2 and replicas(s, h), 90)
    assert len({r["job_id"] for r in two}) == 2  # scaled to the maximum, no further
    # A replica whose job ends leaves the router.
    httpx.post(s.url + f"/api/v1/jobs/{first['job_id']}/cancel", headers=h).raise_for_status()
    wait(lambda: all(r["job_id"] != first["job_id"] for r in replicas(s, h)), 60)

"""The gateway's upstream client under pressure that is the gateway's own, not the upstream's:
a busy event loop, and no file descriptors left. Neither may make a healthy replica look dead."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvloop

from tests.gateway.harness import gateway, start_echo
from tests.net import free_port
from yungu.adapters.gateway.http1 import GatewayOverloaded, Pool, UpstreamError
from yungu.engines.gateway.breaker import BreakerPolicy


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    p, url = start_echo()
    try:
        yield url
    finally:
        p.kill()
        p.wait()


def test_a_stalled_loop_does_not_turn_healthy_dials_into_timeouts(upstream: str) -> None:
    """The 1,000-stream test's 502s: the loop admitting a burst blocked past the connect timeout
    while the kernel had long connected every dial; each dial was then judged timed out."""
    async def go() -> list[int]:
        pool = Pool(upstream, connect_timeout_s=0.2)
        calls = asyncio.gather(*(pool.request("GET", "/models") for _ in range(64)))
        for _ in range(2):
            await asyncio.sleep(0)  # the dials are in flight
        time.sleep(0.6)  # the loop is busy for three connect timeouts (uvloop runs expired timers first)
        resps = await calls
        statuses = [r.status for r in resps]
        for r in resps:
            await r.read()
        pool.close()
        return statuses

    assert uvloop.run(go()) == [200] * 64


def test_a_dial_to_nobody_still_fails_as_the_upstream_s_fault() -> None:
    async def go() -> None:
        with pytest.raises(UpstreamError) as e:
            await Pool(f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=0.5).request("GET", "/models")
        assert not isinstance(e.value, GatewayOverloaded)

    uvloop.run(go())


@contextmanager
def no_more_descriptors() -> Iterator[None]:
    """Lower this process's soft limit on open files to what is open now (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)  # the kernel hands out the lowest free number
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_is_the_gateway_s_own_failure(upstream: str) -> None:
    async def go() -> None:
        pool = Pool(upstream)
        with no_more_descriptors(), pytest.raises(GatewayOverloaded):
            await pool.request("GET", "/models")

    uvloop.run(go())


def test_a_gateway_out_of_descriptors_answers_503_with_retry_after_and_trips_no_breaker(tmp_path: Path) -> None:
    with gateway(tmp_path, breaker=BreakerPolicy(failures=1, window=1, cooldown_s=30)) as gw:
        gw.echo("r1")
        key = gw.key()
        body = {"model": "echo", "messages": [{"role": "user", "content": "one two"}], "max_tokens": 3}
        gw.service._pool(gw.store.upstreams()[0].url).max_idle = 0  # every call dials the upstream afresh
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            assert c.post("/v1/chat/completions", json=body).status_code == 200  # warm: budget, database, client
            gw.rows()
            time.sleep(0.2)  # the warm call's upstream socket is closed by now
            with no_more_descriptors():
                plain = c.post("/v1/chat/completions", json=body)
                streamed = c.post("/v1/chat/completions", json={**body, "stream": True})
            for r in (plain, streamed):
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "gateway_overloaded"
                assert r.headers["retry-after"] == "1"
            assert gw.service.breaker_states()["r1"].value == "closed"  # the replica is not to blame
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        budget = next(iter(gw.service.budgets.values()))
        assert budget.reserved == 0 and len(gw.rows()) == 2  # the refused calls cost nothing, wrote nothing


def test_a_burst_that_stalls_the_gateway_loop_is_served_not_502(tmp_path: Path) -> None:
    """End to end, the CI failure of the 1,000-stream test made certain: the loop blocks for
    2.5 s (over the 2 s connect timeout) while 99 admitted calls are dialling the upstream."""
    with gateway(tmp_path) as gw:
        gw.echo("r1")
        key = gw.key()
        svc, admitted = gw.service, [0]
        plain_open = svc.open

        def stalling_open(*a: object) -> object:
            admitted[0] += 1
            if admitted[0] == 100:
                asyncio.get_running_loop().call_soon(time.sleep, 2.5)
            return plain_open(*a)  # type: ignore[arg-type]

        svc.open = stalling_open  # type: ignore[method-assign]
        body = {"model": "echo", "messages": [{"role": "user", "content": "one two"}], "max_tokens": 3, "stream": True}

        async def one(c: httpx.AsyncClient) -> int:
            async with c.stream("POST", gw.url + "/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {key}"}) as r:
                await r.aread()
                assert r.status_code == 200, r.text
                return r.status_code

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as c:
                return list(await asyncio.gather(*(one(c) for _ in range(200))))

        assert asyncio.run(burst()) == [200] * 200
        assert svc.breaker_states()["r1"].value == "closed"
        assert len(gw.rows()) == 200

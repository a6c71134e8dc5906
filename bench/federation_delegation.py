"""Federation (issue 12): delegation overhead, delegated throughput, offer propagation.

    python -m bench.federation_delegation [--jobs 40] [--throughput 2000] [--rtt-ms 12]

Three real platforms (``yungu server`` processes, each with its own data dir and SQLite):
Beijing (origin), Horinger (the peer jobs are delegated to) and Guizhou (an observer of offers).

1. **Overhead**: submit at Beijing -> running at Horinger (the peer's job ``started_at`` minus the
   origin's ``submitted_at``; one machine, one clock), one job at a time, over loopback and
   through a delaying TCP proxy (``--rtt-ms``, user space: no netem here); baseline in the same
   run: the same job pinned to Beijing's own pool (submit -> running locally).
   Target: delegated <= local + 2 x RTT + 20 ms.
2. **Throughput**: ``--throughput`` jobs submitted at once at Beijing, pinned remote; the rate at
   which Horinger accepts the delegations (its rows), first submit to last acceptance. Target
   >= 200 jobs/s.
3. **Offer propagation**: a capacity change at Horinger (a job started there) until both other
   platforms hold the new offer, ``--trials`` times. Target <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

from tests.federation.netlab import Pipe
from yungu.cli import federation_demo as fd

TERMS = {"lease_ttl_s": 30, "renew_every_s": 5, "max_clock_skew_s": 5, "stop_budget_s": 7}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def world(root: Path, big: bool) -> list[fd.Platform]:
    ps = fd.make_platforms(root, 3, TERMS)
    if big:  # room for the throughput run: many CPUs at Horinger, few processes at once
        cfg = ps[1].config
        assert cfg is not None
        text = cfg.read_text().replace('id = "horinger-cpu"\nsite = "horinger-dc1"\ncompute_class = "general"\nnodes = 8',
                                       'id = "horinger-cpu"\nsite = "horinger-dc1"\ncompute_class = "general"\nnodes = 128')
        # The peer's jobs run unsandboxed here: this measures the federation path (sign, send,
        # verify, record, answer), not bubblewrap's start-up, which the sandbox benchmark covers.
        cfg.write_text(text.replace("max_processes = 256", "max_processes = 16\nsandbox = false"))
    return ps


def tenant(p: fd.Platform) -> str:
    with p.api() as c:
        r = c.post("/admin/tenants", json={"name": "bench-lab"})
        return str(r.json()["id"]) if r.status_code in (200, 201) else next(
            t["id"] for t in c.get("/admin/tenants").json()["items"] if t["name"] == "bench-lab")


def job(tid: str, pin: str, cmd: str = "sleep 1") -> dict[str, object]:
    return {"name": "bench", "tenant_id": tid, "command": cmd, "resources": {"cpus": 1}, "objective": "cost",
            "labels": {"federation.pin": pin}, "estimated_duration_s": 1}


def ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def overhead(origin: fd.Platform, peer: fd.Platform, n: int, pin: str) -> list[float]:
    tid = tenant(origin)
    out = []
    with origin.api() as c, peer.api() as cp:
        for _ in range(n):
            j = c.post("/jobs", json=job(tid, pin)).json()
            jid, sub = j["id"], ts(j["submitted_at"])
            deadline = time.monotonic() + 30
            started = None
            while time.monotonic() < deadline and started is None:
                if pin == "local":
                    started = c.get(f"/jobs/{jid}").json().get("started_at")
                else:
                    rows = [h for h in cp.get("/federation/hosted").json()["items"] if h["id"].split(":")[1].startswith(jid)]
                    if rows and rows[0]["local_job_id"]:
                        started = cp.get(f"/jobs/{rows[0]['local_job_id']}").json().get("started_at")
                if started is None:
                    time.sleep(0.002)
            if started:
                out.append(1000 * (ts(started) - sub))
            time.sleep(0.05)
    return out


def throughput(ps: list[fd.Platform], n: int) -> tuple[float, float]:
    """A backlog of ``n`` jobs pinned to Horinger waits at Beijing; then the operators peer. The rate
    is the number of delegations Horinger has accepted over the time from peering to the last one."""
    origin, peer = ps[0], ps[1]
    tid = tenant(origin)
    body = job(tid, "platform:yungu-horinger", "sleep 600")
    n = n // 8 * 8
    with ThreadPoolExecutor(8) as pool:
        def submit(_: int) -> None:
            with httpx.Client(base_url=origin.url + "/api/v1", headers={"Authorization": f"Bearer {origin.key}"},
                              trust_env=False, timeout=60) as c:
                for _ in range(n // 8):
                    c.post("/jobs", json=body).raise_for_status()
        list(pool.map(submit, range(8)))
    with origin.api() as c:  # every job admitted and waiting for a Horinger pool
        while c.get("/jobs", params={"state": "pending", "limit": 1}).json()["items"]:
            time.sleep(0.2)
    t0 = time.monotonic()
    fd.peer_all(ps)
    first = None
    with peer.api() as cp:
        while time.monotonic() - t0 < 300:
            rows = cp.get("/federation/hosted").json()["items"]
            accepted = sum(1 for r in rows if r["state"] == "active")
            if accepted and first is None:
                first = time.monotonic()
            if accepted >= n:
                break
            time.sleep(0.05)
    end = time.monotonic()
    return n / (end - t0), n / (end - (first or t0))


def propagation(ps: list[fd.Platform], trials: int) -> list[float]:
    origin, peer, other = ps
    tid = tenant(peer)
    out = []
    with peer.api() as cp, origin.api() as co, other.api() as cg:
        for _ in range(trials):
            def seq(c: httpx.Client) -> int:
                return next(x["offer_seq"] for x in c.get("/federation/peers").json()["items"] if x["id"] == peer.id)
            before = (seq(co), seq(cg))
            j = cp.post("/jobs", json={**job(tid, "local", "sleep 3"), "resources": {"cpus": 1, "accelerators": 8}}).json()
            while cp.get(f"/jobs/{j['id']}").json().get("started_at") is None:
                time.sleep(0.005)
            t0 = time.monotonic()
            seen: dict[int, float] = {}
            while len(seen) < 2 and time.monotonic() - t0 < 10:
                for k, c in enumerate((co, cg)):
                    if k not in seen and seq(c) > before[k]:
                        seen[k] = time.monotonic() - t0
                time.sleep(0.01)
            out.append(max(seen.values()) if len(seen) == 2 else float("inf"))
            time.sleep(4)
    return out


def start(ps: list[fd.Platform], urls: dict[tuple[str, str], str] | None = None) -> None:
    for p in ps:
        p.start()
    for p in ps:
        p.wait_ready()
    time.sleep(5.5)  # the restart guard: messages signed in the first skew-bound seconds are refused
    fd.peer_all(ps, (lambda a, b: urls.get((a.id, b.id), b.url)) if urls else None)
    fd.wait_offers(ps, timeout=60)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the platforms on the way out
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--throughput", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rtt-ms", type=float, default=12.0)
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    for mode in ("loopback", f"{a.rtt_ms:.0f} ms RTT"):
        root = Path(tempfile.mkdtemp(prefix="yungu-bench-fed-"))
        ps = world(root, big=False)
        urls = None
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        if mode != "loopback":
            ports = fd.free_ports(2)
            for (src, dst), port in zip(((ps[0], ps[1]), (ps[1], ps[0])), ports, strict=True):
                pipe = Pipe(loop, ("127.0.0.1", port), ("127.0.0.1", dst.port), a.rtt_ms / 2000)
                asyncio.run_coroutine_threadsafe(pipe.start(), loop).result(5)
                urls = urls or {}
                urls[(src.id, dst.id)] = f"http://127.0.0.1:{port}"
        try:
            start(ps, urls)
            local = overhead(ps[0], ps[1], a.jobs, "local")
            remote = overhead(ps[0], ps[1], a.jobs, "platform:yungu-horinger")
            rtt = a.rtt_ms if mode != "loopback" else 0.0
            rows.append((mode, local, remote, rtt))
            if mode == "loopback":
                prop = propagation(ps, a.trials)
        finally:
            for p in ps:
                p.stop()
            fd.remove_shared(root)
            loop.call_soon_threadsafe(loop.stop)
    root = Path(tempfile.mkdtemp(prefix="yungu-bench-fed-tp-"))
    ps = world(root, big=True)[:2]
    try:
        for p in ps:
            p.start()
        for p in ps:
            p.wait_ready()
        time.sleep(5.5)
        rate, drain = throughput(ps, a.throughput)
    finally:
        for p in ps:
            p.stop()
        fd.remove_shared(root)
    print("\nDelegation overhead: submit at Beijing -> running (ms), one job at a time")
    print("| link | local p50 | local p99 | delegated p50 | delegated p99 | target p50 (local + 2 RTT + 20) | met |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for mode, local, remote, rtt in rows:
        target = pct(local, 0.5) + 2 * rtt + 20
        print(f"| {mode} | {pct(local, .5):.1f} | {pct(local, .99):.1f} | {pct(remote, .5):.1f} | "
              f"{pct(remote, .99):.1f} | {target:.1f} | {'yes' if pct(remote, .5) <= target else 'no'} |")
    print(f"\nDelegated throughput Beijing -> Horinger, a backlog of {a.throughput // 8 * 8} jobs: {rate:.0f} jobs/s "
          f"from peering to the last acceptance ({drain:.0f}/s from the first); target >= 200/s")
    print(f"Offer propagation to both other platforms: p50 {statistics.median(prop):.2f} s, max {max(prop):.2f} s "
          f"over {len(prop)} changes; target <= 2 s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Federation (issue 12): peer-loss detection and re-placement under partitions, duplicate starts.

    python -m bench.federation_partitions [--trials 20] [--lease-ttl 30]

Three real platforms on loopback, Beijing's links to Horinger through a TCP proxy that can drop
everything (a partition). Each trial: a job submitted at Beijing runs at Horinger; the link is
cut; we time Beijing's health state machine (suspect, lost) and the job's re-placement (a new
attempt running elsewhere); then heal. Duplicate starts: a re-placed attempt that started before
Horinger's copy had stopped (from both platforms' job records; one machine, one clock), and any
job whose command finished twice. Baseline in the same run: the lease time (the bound on
re-placement is ``lease_until + margin`` after the last renewal).
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
from datetime import datetime
from pathlib import Path

from tests.federation.netlab import Pipe
from yungu.cli import federation_demo as fd


def ts(s: str | None) -> float:
    return datetime.fromisoformat(s).timestamp() if s else float("nan")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the platforms on the way out
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--lease-ttl", type=float, default=30.0)
    a = ap.parse_args()
    ttl = a.lease_ttl
    terms = {"lease_ttl_s": ttl, "renew_every_s": max(1.0, ttl / 10), "max_clock_skew_s": min(5.0, ttl / 6),
             "stop_budget_s": min(7.0, ttl / 4), "suspect_after_s": 3, "call_timeout_s": 2}
    root = Path(tempfile.mkdtemp(prefix="yungu-bench-part-"))
    ps = fd.make_platforms(root, 3, terms)
    bj, hr, _gz = ps
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    pipes, urls = [], {}
    for (src, dst), port in zip(((bj, hr), (hr, bj)), fd.free_ports(2), strict=True):
        pipe = Pipe(loop, ("127.0.0.1", port), ("127.0.0.1", dst.port), 0.0)
        asyncio.run_coroutine_threadsafe(pipe.start(), loop).result(5)
        pipes.append(pipe)
        urls[(src.id, dst.id)] = f"http://127.0.0.1:{port}"
    print(f"load average at start: {os.getloadavg()[0]:.2f}; lease {terms}")
    ran = fd.ran_file(root)
    rows = []
    try:
        for p in ps:
            p.start()
        for p in ps:
            p.wait_ready()
        time.sleep(6)
        fd.peer_all(ps, lambda x, y: urls.get((x.id, y.id), y.url))
        with bj.api() as c:
            tid = c.post("/admin/tenants", json={"name": "bench"}).json()["id"]
        for i in range(a.trials):
            fd.wait_offers(ps, timeout=90)
            with bj.api() as c, hr.api() as ch:
                body = {"name": f"t{i:03d}", "tenant_id": tid, "command": f"sleep 60; echo t{i:03d} >> {ran}",
                        "resources": {"cpus": 1, "accelerators": 4}, "objective": "cost",
                        "labels": {}, "estimated_duration_s": 60}
                jid = c.post("/jobs", json=body).json()["id"]
                while True:
                    j = c.get(f"/jobs/{jid}").json()
                    if j["state"] == "running":
                        break
                    time.sleep(0.05)
                if not (j.get("allocation") or {}).get("pool_id", "").startswith(hr.id):
                    print(f"trial {i}: placed on {j['allocation']['pool_id']}, not Horinger; skipped")
                    continue
                t0 = time.time()
                for pipe in pipes:
                    loop.call_soon_threadsafe(pipe.cut)
                suspect = lost = replaced = None
                while replaced is None and time.time() - t0 < 3 * ttl:
                    st = next(x["state"] for x in c.get("/federation/peers").json()["items"] if x["id"] == hr.id)
                    now = time.time() - t0
                    if st in ("suspect", "lost") and suspect is None:
                        suspect = now
                    if st == "lost" and lost is None:
                        lost = now
                    j = c.get(f"/jobs/{jid}").json()
                    if j["attempt"] >= 1 and j["state"] in ("running", "succeeded"):
                        replaced = now
                    time.sleep(0.1)
                for pipe in pipes:
                    loop.call_soon_threadsafe(pipe.heal)
                rows.append({"job": jid, "suspect": suspect, "lost": lost, "replaced": replaced,
                             "new_start": ts(j.get("started_at"))})
                print(f"trial {i}: suspect {suspect}, lost {lost}, re-placed {replaced} s", flush=True)
        time.sleep(70)  # let the re-placed copies finish
        names = ran.read_text().split() if ran.exists() else []
        twice = len(names) - len(set(names))
        overlap = 0
        with hr.api() as ch:
            hosted = ch.get("/federation/hosted").json()["items"]
            for r in rows:
                old = [h for h in hosted if h["id"].endswith(f"{r['job']}.0") and h["local_job_id"]]
                if old:
                    peer_job = ch.get(f"/jobs/{old[0]['local_job_id']}").json()
                    if ts(peer_job.get("finished_at")) > r["new_start"]:
                        overlap += 1
    finally:
        for p in ps:
            p.stop()
        fd.remove_shared(root)
    rep = [r["replaced"] for r in rows if r["replaced"] is not None]
    det = [r["suspect"] for r in rows if r["suspect"] is not None]
    print("\n| trials | suspect after (s) p50/max | re-placed after (s) p50/max | bound: lease ttl + margin | "
          "overlapping copies | finished twice |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(rows)} | {statistics.median(det):.1f} / {max(det):.1f} | {statistics.median(rep):.1f} / {max(rep):.1f} "
          f"| {ttl + 1:.0f} | {overlap} | {twice} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

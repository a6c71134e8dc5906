"""Scheduler round latency and bulk placement throughput (no I/O, one process).

    python bench/sched_speed.py [--rounds 30]

1. Round latency: 1,000 pending jobs (30 % with deadlines, mixed objectives, gangs up to 4
   nodes) over 100 pools at 20 sites (5 accelerator types), pools ~70 % busy, 48-h
   forecasts per site. Median and p99 over ``--rounds`` different snapshots.
2. Bulk placement: 5,000 jobs onto an idle federation large enough to take them all;
   jobs placed per second in one round.
Baselines in the same run: the spine's FirstFit and FIFO+EASY backfill.
Targets (issue 3): median <= 50 ms, p99 <= 200 ms; bulk >= 2,000 jobs/s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.scheduler.helpers import CAT, NOW, carbon_signal, job, pool, running, site, snapshot, world
from yungu.domain.job import Objective
from yungu.engines.scheduler.baselines import FifoBackfill
from yungu.engines.scheduler.firstfit import FirstFit
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig

ACCS = ["A100", "H100", "A800", "H800", "L40S"]


def federation(nodes: int):
    sites = [site(f"s{i}", price=f"{0.3 + 0.05 * i:.2f}") for i in range(20)]
    pools = [pool(f"s{i}-p{k}", f"s{i}", nodes=nodes, acc=ACCS[k], price=str(8 + (i * 7 + k * 3) % 12))
             for i in range(20) for k in range(5)]
    return world(sites, pools)


def curves(rng: random.Random):
    return {f"s{i}": carbon_signal(f"s{i}", [max(5.0, 300 + 200 * rng.uniform(-1, 1)) for _ in range(72)]) for i in range(20)}


def pending_jobs(rng: random.Random, n: int):
    out = []
    for i in range(n):
        g = rng.choice([1, 1, 1, 2, 4, 8])
        reps = rng.choice([1] * 8 + [2, 4]) if g == 8 else 1
        out.append(job(f"j{i}", g, reps, dur=rng.randint(600, 8 * 3600),
                       deadline_h=rng.uniform(6, 30) if rng.random() < 0.3 else None,
                       objective=rng.choice(list(Objective)), priority=rng.choice([0, 0, 0, 1]),
                       tenant=f"t{rng.randint(0, 9)}", submitted=NOW - timedelta(seconds=rng.randint(0, 7200))))
    return out


def busy(w, rng: random.Random, share: float):
    run = []
    for p in w.pools:
        for n in range(p.nodes):
            if rng.random() < share:
                run.append(running(f"r-{p.id}-{n}", p, n, tuple(range(8)), dur=rng.randint(600, 36000),
                                   started=NOW - timedelta(seconds=rng.randint(0, 3600))))
    return run


def timed(s, snap):
    t = time.perf_counter()
    plan = s.schedule(snap)
    return time.perf_counter() - t, plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args()
    w = federation(8)
    scheds = {"yungu": GreenScheduler(CAT, PolicyConfig()), "firstfit (spine)": FirstFit(), "fifo-backfill": FifoBackfill(CAT)}
    lat: dict[str, list[float]] = {k: [] for k in scheds}
    started: dict[str, int] = {k: 0 for k in scheds}
    for r in range(a.rounds):
        rng = random.Random(r)
        snap = snapshot(w, pending_jobs(rng, 1000), running_jobs=busy(w, rng, 0.7), truth=curves(rng))
        for k, s in scheds.items():
            dt, plan = timed(s, snap)
            lat[k].append(dt * 1000)
            started[k] += len(plan.starts)
    print(f"Round latency: 1,000 pending jobs, 100 pools, 70 % busy, {a.rounds} snapshots")
    print(f"{'policy':18s} {'median ms':>10s} {'p99 ms':>8s} {'starts/round':>13s}")
    for k, xs in lat.items():
        xs.sort()
        p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
        print(f"{k:18s} {statistics.median(xs):10.1f} {p99:8.1f} {started[k] / a.rounds:13.0f}")
    base = statistics.median(lat["firstfit (spine)"])
    print(f"ratio yungu / firstfit median: {statistics.median(lat['yungu']) / base:.2f}x")

    big = federation(50)  # 40,000 devices
    rng = random.Random(99)
    jobs = [j for j in pending_jobs(rng, 5000)]
    snap = snapshot(big, jobs, truth=curves(rng))
    print("\nBulk placement: 5,000 jobs onto an idle 100-pool federation (40,000 devices)")
    print(f"{'policy':18s} {'placed':>7s} {'seconds':>8s} {'jobs/s':>8s}")
    for k, s in scheds.items():
        dt, plan = timed(s, snap)
        print(f"{k:18s} {len(plan.starts):7d} {dt:8.3f} {len(plan.starts) / dt:8.0f}")


if __name__ == "__main__":
    main()

"""Scheduler round latency and bulk placement throughput (no I/O, one process).

    python bench/sched_speed.py [--rounds 60] [--cold 10] [--dt 60]

1. **Live rounds** (the target): a queue that lives on, as in the control loop. Round 0 is
   1,000 pending jobs (30 % with deadlines, mixed objectives, gangs up to 4 nodes, 10 tenants)
   over 100 pools at 20 sites (5 accelerator types), pools ~70 % busy, 48-h forecasts per site
   re-issued every hour. Between rounds ``--dt`` seconds pass: the plan is applied (starts run,
   preempted jobs requeue), running jobs end at their estimated end, and new jobs arrive so
   1,000 stay pending. The incremental scheduler (carrying state between rounds) and the
   from-scratch scheduler see the *same* snapshots; their plans must be equal. Median and p99
   over ``--rounds`` rounds after round 0; the first round (nothing carried) is shown apart.
2. **Cold rounds**: ``--cold`` unrelated random snapshots of the same shape (nothing to carry).
3. **Bulk placement**: 5,000 jobs onto an idle federation large enough to take them all.

Baselines in the same run: the spine's FirstFit and FIFO+EASY backfill.
Targets (issue 15): live round median <= 25 ms, p99 <= 50 ms; (issue 3) bulk >= 2,000 jobs/s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.scheduler.helpers import (
    CAT,
    NOW,
    carbon_signal,
    job,
    pool,
    running,
    site,
    snapshot,
    state_with,
    world,
)
from yungu.domain.job import Job, JobState, Objective
from yungu.engines.energy.signals import ForecastErrorModel, floor_hour
from yungu.engines.scheduler.baselines import FifoBackfill
from yungu.engines.scheduler.firstfit import FirstFit
from yungu.engines.scheduler.green import GreenScheduler, PolicyConfig
from yungu.engines.scheduler.outlook import build_signals
from yungu.engines.scheduler.types import Plan, Snapshot

ACCS = ["A100", "H100", "A800", "H800", "L40S"]


def federation(nodes: int):
    sites = [site(f"s{i}", price=f"{0.3 + 0.05 * i:.2f}") for i in range(20)]
    pools = [pool(f"s{i}-p{k}", f"s{i}", nodes=nodes, acc=ACCS[k], price=str(8 + (i * 7 + k * 3) % 12))
             for i in range(20) for k in range(5)]
    return world(sites, pools)


def curves(rng: random.Random, hours: int = 72):
    return {f"s{i}": carbon_signal(f"s{i}", [max(5.0, 300 + 200 * rng.uniform(-1, 1)) for _ in range(hours)])
            for i in range(20)}


def pending_jobs(rng: random.Random, n: int, now=NOW, prefix: str = "j"):
    out = []
    for i in range(n):
        g = rng.choice([1, 1, 1, 2, 4, 8])
        reps = rng.choice([1] * 8 + [2, 4]) if g == 8 else 1
        out.append(job(f"{prefix}{i}", g, reps, dur=rng.randint(600, 8 * 3600),
                       deadline_h=rng.uniform(6, 30) if rng.random() < 0.3 else None,
                       objective=rng.choice(list(Objective)), priority=rng.choice([0, 0, 0, 1]),
                       tenant=f"t{rng.randint(0, 9)}", submitted=now - timedelta(seconds=rng.randint(0, 7200))))
    return out


def busy(w, rng: random.Random, share: float):
    run = []
    for p in w.pools:
        for n in range(p.nodes):
            if rng.random() < share:
                run.append(running(f"r-{p.id}-{n}", p, n, tuple(range(8)), dur=rng.randint(600, 36000),
                                   started=NOW - timedelta(seconds=rng.randint(0, 3600))))
    return run


CPU: dict[str, list[float]] = {}  # per policy: CPU seconds of this thread per round (less affected by a busy machine)


def timed(s, snap, label: str = "", **kw):
    t, c = time.perf_counter(), time.thread_time()
    plan = s.schedule(snap, **kw)
    if label:
        CPU.setdefault(label, []).append(time.thread_time() - c)
    return time.perf_counter() - t, plan


class LiveQueue:
    """A queue and a federation that live on from round to round (the control loop's view)."""

    def __init__(self, w, seed: int = 0, pending: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.w, self.target, self.now = w, pending, NOW
        self.pending: dict[str, Job] = {j.id: j for j in pending_jobs(self.rng, pending)}
        self.running: dict[str, Job] = {j.id: j for j in busy(w, self.rng, 0.7)}
        self.truth = curves(self.rng, 24 * 5)
        self.pools_by_id = {p.id: p for p in w.pools}
        self.states = {p.id: state_with(p, [j for j in self.running.values() if j.allocation.pool_id == p.id])
                       for p in w.pools}
        self.signals_hour = None
        self.signals = {}
        self.arrived = 0

    def snapshot(self) -> Snapshot:
        hour = floor_hour(self.now)
        if hour != self.signals_hour:  # forecasts re-issued hourly, as the live loop does
            self.signals = build_signals(self.truth, hour, ForecastErrorModel(sigma_1h=0, sigma_per_hour=0))
            self.signals_hour = hour
        return Snapshot(self.now, self.w, CAT, dict(self.states), tuple(self.pending.values()),
                        tuple(self.running.values()), self.signals)

    def _restate(self, pid: str) -> None:
        p = self.pools_by_id[pid]
        self.states[pid] = state_with(p, [j for j in self.running.values() if j.allocation.pool_id == pid])

    def apply(self, plan: Plan, dt: float) -> None:
        touched: set[str] = set()
        for pre in plan.preempts:
            v = self.running.pop(pre.job_id)
            touched.add(v.allocation.pool_id)
            self.pending[v.id] = replace(v, state=JobState.QUEUED, attempt=v.attempt + 1, allocation=None, started_at=None)
        for st in plan.starts:
            j = self.pending.pop(st.job_id)
            self.running[j.id] = replace(j, state=JobState.RUNNING, allocation=st.allocation, started_at=self.now)
            touched.add(st.allocation.pool_id)
        self.now += timedelta(seconds=dt)
        for j in list(self.running.values()):
            if j.started_at + timedelta(seconds=j.spec.estimated_duration_s) <= self.now:
                del self.running[j.id]
                touched.add(j.allocation.pool_id)
        for pid in touched:
            self._restate(pid)
        for j in pending_jobs(self.rng, max(0, self.target - len(self.pending)), self.now, prefix=f"a{self.arrived}-"):
            self.pending[j.id] = replace(j, submitted_at=self.now, updated_at=self.now)
        self.arrived += 1


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def live(rounds: int, dt: float) -> None:
    w = federation(8)
    q = LiveQueue(w)
    inc = GreenScheduler(CAT, PolicyConfig())
    carry = inc.new_carry()
    scheds = {"yungu incremental": inc, "yungu from scratch": GreenScheduler(CAT, PolicyConfig()),
              "firstfit (spine)": FirstFit(), "fifo-backfill": FifoBackfill(CAT)}
    lat: dict[str, list[float]] = {k: [] for k in scheds}
    first: dict[str, float] = {}
    starts = 0
    for r in range(rounds + 1):
        snap = q.snapshot()
        plans = {}
        for k, s in scheds.items():
            label = k if r else ""
            dt_s, plans[k] = timed(s, snap, label, carry=carry) if k == "yungu incremental" else timed(s, snap, label)
            (lat[k].append(dt_s * 1000) if r else first.__setitem__(k, dt_s * 1000))
        assert plans["yungu incremental"] == plans["yungu from scratch"], f"plans differ in round {r}"
        if r:
            starts += len(plans["yungu incremental"].starts)
        q.apply(plans["yungu incremental"], dt)
    print(f"Live rounds: 1,000 pending, 100 pools, {rounds} rounds {dt:g} s apart after round 0 "
          f"({starts / rounds:.1f} starts/round; forecasts re-issued hourly); incremental == from-scratch plans")
    print(f"{'policy':20s} {'median ms':>10s} {'p99 ms':>8s} {'round 0 ms':>11s} {'cpu median':>11s} {'cpu p99':>8s}")
    for k, xs in lat.items():
        cpu = [x * 1000 for x in CPU[k]]
        print(f"{k:20s} {statistics.median(xs):10.1f} {pct(xs, 0.99):8.1f} {first[k]:11.1f} "
              f"{statistics.median(cpu):11.1f} {pct(cpu, 0.99):8.1f}")
    base = statistics.median(lat["yungu from scratch"])
    print(f"(wall and thread CPU time per round; load average {os.getloadavg()[0]:.1f})")
    print(f"ratio incremental / from-scratch median: {statistics.median(lat['yungu incremental']) / base:.2f}x, "
          f"p99: {pct(lat['yungu incremental'], 0.99) / pct(lat['yungu from scratch'], 0.99):.2f}x; "
          f"incremental / fifo-backfill median: {statistics.median(lat['yungu incremental']) / statistics.median(lat['fifo-backfill']):.2f}x")


def cold(rounds: int) -> None:
    w = federation(8)
    scheds = {"yungu": GreenScheduler(CAT, PolicyConfig()), "firstfit (spine)": FirstFit(), "fifo-backfill": FifoBackfill(CAT)}
    lat: dict[str, list[float]] = {k: [] for k in scheds}
    started: dict[str, int] = {k: 0 for k in scheds}
    for r in range(rounds):
        rng = random.Random(r)
        snap = snapshot(w, pending_jobs(rng, 1000), running_jobs=busy(w, rng, 0.7), truth=curves(rng))
        for k, s in scheds.items():
            dt, plan = timed(s, snap)
            lat[k].append(dt * 1000)
            started[k] += len(plan.starts)
    print(f"\nCold rounds: 1,000 pending jobs, 100 pools, 70 % busy, {rounds} unrelated snapshots")
    print(f"{'policy':18s} {'median ms':>10s} {'p99 ms':>8s} {'starts/round':>13s}")
    for k, xs in lat.items():
        print(f"{k:18s} {statistics.median(xs):10.1f} {pct(xs, 0.99):8.1f} {started[k] / rounds:13.0f}")
    base = statistics.median(lat["firstfit (spine)"])
    print(f"ratio yungu / firstfit median: {statistics.median(lat['yungu']) / base:.2f}x")


def bulk() -> None:
    scheds = {"yungu": GreenScheduler(CAT, PolicyConfig()), "firstfit (spine)": FirstFit(), "fifo-backfill": FifoBackfill(CAT)}
    big = federation(50)  # 40,000 devices
    rng = random.Random(99)
    snap = snapshot(big, pending_jobs(rng, 5000), truth=curves(rng))
    print("\nBulk placement: 5,000 jobs onto an idle 100-pool federation (40,000 devices)")
    print(f"{'policy':18s} {'placed':>7s} {'seconds':>8s} {'jobs/s':>8s}")
    for k, s in scheds.items():
        dt, plan = timed(s, snap)
        print(f"{k:18s} {len(plan.starts):7d} {dt:8.3f} {len(plan.starts) / dt:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=60, help="live rounds after round 0")
    ap.add_argument("--dt", type=float, default=60.0, help="seconds between live rounds")
    ap.add_argument("--cold", type=int, default=10, help="unrelated random snapshots")
    a = ap.parse_args()
    live(a.rounds, a.dt)
    if a.cold:
        cold(a.cold)
    bulk()


if __name__ == "__main__":
    main()

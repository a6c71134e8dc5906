"""Does the policy generalise? Carbon, cost and deadlines on scenarios the defaults were not chosen on.

    nice python bench/sched_eval.py [--only NAME ...] [--parallel 2] [--cache DIR]
        [--set FIELD=VALUE ...] [--weight TERM=VALUE ...]

Every scenario in ``scenarios/eval/`` (other ITP windows than days 0-7, the Alibaba 2023
openb trace with GPU types, sites on other grid series, tighter and looser capacity; see
``scenarios/README.md``) is run three times through the simulator:

- FIFO + EASY backfill: the baseline, and each job's completion budget for the LP bounds;
- yungu with every job's objective ``green``: the share of the FIFO+backfill -> LP min-carbon
  gap it closes (LP: 1-h steps, each job finishing by 1.10 x its FIFO+backfill completion);
- yungu with every job's objective ``cost`` on the scenario's differentiated device-hour
  prices: its saving against FIFO+backfill (and the LP min-cost bound with each job finishing
  by its FIFO+backfill completion, the 1.0x budget of the target).

It prints one row per scenario, then the mean and the **worst** case of each target:
carbon gap closed >= 85 % at JCT <= 1.10x; cost >= 25 % below FIFO+backfill at JCT <= 1.0x;
0 misses among deadlines feasible at submission. The baseline and the LP bounds do not depend
on the policy and are cached (``--cache``, keyed by the scenario file and the simulator's code).
``--set``/``--weight`` evaluate a variant of the policy on every scenario at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sched_scenarios import load

from yungu.domain.job import Objective
from yungu.engines.scheduler.green import GreenScheduler
from yungu.engines.sim.core import simulate
from yungu.engines.sim.lp import lp_bound
from yungu.engines.sim.metrics import summarise
from yungu.engines.sim.policies import make

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "scenarios" / "eval"
CODE = [
    "yungu/engines/sim", "yungu/engines/scheduler/baselines.py", "yungu/engines/scheduler/capacity.py",
    "yungu/engines/scheduler/outlook.py", "yungu/engines/energy/signals.py", "yungu/adapters/traces",
]
CARBON_SLACK, COST_SLACK = 1.10, 1.0


def _code_hash() -> str:
    h = hashlib.sha256()
    for rel in CODE:
        p = REPO / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _policy(ls: Any, sets: list[str], weights: list[str]) -> Any:
    pol = ls.policy
    for kv in sets:
        k, _, v = kv.partition("=")
        cur = getattr(pol, k)
        pol = replace(pol, **{k: (v == "true") if isinstance(cur, bool) else type(cur)(v)})
    if weights:
        extra = {k: float(v) for k, _, v in (kv.partition("=") for kv in weights)}
        pol = replace(pol, weights_override={**pol.weights_override, **extra})
    return pol


def _summary(res: Any) -> dict[str, Any]:
    m = summarise(res)
    return {"jct_h": m.avg_jct_h, "p99_jct_h": m.p99_jct_h, "carbon_kg": m.carbon_kg, "cost": float(m.cost_cny),
            "util": m.utilisation, "misses": m.deadline_misses, "feasible_misses": m.feasible_misses,
            "deadline_jobs": m.deadline_jobs, "failed": m.failed, "jobs": m.jobs, "preemptions": m.preemptions}


def run_base(path: Path, cache: Path) -> dict[str, Any]:
    key = hashlib.sha256(path.read_bytes() + _code_hash().encode()).hexdigest()[:16]
    hit = cache / f"{path.stem}-{key}.json"
    if hit.exists():
        return dict(json.loads(hit.read_text()), cached=True)
    t = time.perf_counter()
    ls = load(path)
    sc = ls.scenario
    res = simulate(sc, make("fifo-backfill", sc.catalogue, ls.policy), policy_name="fifo-backfill")
    out: dict[str, Any] = {"base": _summary(res), "base_wall_s": time.perf_counter() - t}
    for obj, slack in (("carbon", CARBON_SLACK), ("cost", COST_SLACK)):
        bnd = {r.id: r.submit + timedelta(seconds=slack * r.jct_s) for r in res.records if r.jct_s is not None}
        for r in res.records:
            bnd.setdefault(r.id, r.submit + timedelta(days=60))
        t = time.perf_counter()
        b = lp_bound(sc, bnd, obj, 1.0, 900.0)
        out[f"lp_{obj}"] = {"value": b.value, "status": b.status, "variables": b.variables, "wall_s": time.perf_counter() - t}
    cache.mkdir(parents=True, exist_ok=True)
    hit.write_text(json.dumps(out))
    return out


def run_yungu(path: Path, objective: str, sets: list[str], weights: list[str]) -> dict[str, Any]:
    ls = load(path)
    pol = _policy(ls, sets, weights)
    obj = Objective(objective)
    sc = replace(ls.scenario, jobs=tuple(replace(j, objective=obj) for j in ls.scenario.jobs))
    t = time.perf_counter()
    res = simulate(sc, GreenScheduler(sc.catalogue, pol), policy_name=f"yungu-{objective}", timer=time.perf_counter)
    out = _summary(res)
    out["wall_s"] = time.perf_counter() - t
    out["round_ms_p50"] = summarise(res).round_ms_p50
    return out


def _task(args: tuple[str, str, str, list[str], list[str], str]) -> tuple[str, str, dict[str, Any]]:
    name, kind, cache, sets, weights, folder = args
    path = Path(folder) / f"{name}.toml"
    if kind == "base":
        return name, kind, run_base(path, Path(cache))
    return name, kind, run_yungu(path, kind, sets, weights)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", default=[], help="scenario name (repeatable); default: all")
    ap.add_argument("--dir", default=str(EVAL), help="folder of scenarios (scenarios/holdout: the hold-out set)")
    ap.add_argument("--parallel", type=int, default=2, help="simulations at a time (the machine is shared)")
    ap.add_argument("--cache", default=os.environ.get("YUNGU_EVAL_CACHE", "/tmp/yungu-sched-eval-cache"))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="PolicyConfig override")
    ap.add_argument("--weight", action="append", default=[], metavar="TERM=VALUE", help="weights_override entry")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    folder = Path(a.dir).resolve()
    names = a.only or sorted(p.stem for p in folder.glob("*.toml"))
    tasks = [(n, k, a.cache, a.set, a.weight, str(folder)) for n in names for k in ("base", "green", "cost")]
    t0 = time.perf_counter()
    got: dict[str, dict[str, Any]] = {n: {} for n in names}
    with mp.get_context("spawn").Pool(max(1, a.parallel)) as pool:
        for name, kind, res in pool.imap_unordered(_task, tasks):
            got[name][kind] = res
            print(f"  done {name} {kind} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    rows = []
    for n in names:
        b, g, c = got[n]["base"], got[n]["green"], got[n]["cost"]
        base = b["base"]
        lpc, lpk = b["lp_carbon"]["value"], b["lp_cost"]["value"]
        gap = base["carbon_kg"] - lpc
        rows.append({
            "name": n, "jobs": base["jobs"], "util": base["util"],
            "g_jct": g["jct_h"] / base["jct_h"], "g_closed": (base["carbon_kg"] - g["carbon_kg"]) / gap if gap > 0 else float("nan"),
            "g_cut": 1 - g["carbon_kg"] / base["carbon_kg"], "lp_cut": 1 - lpc / base["carbon_kg"],
            "g_miss": g["feasible_misses"], "g_p99": g["p99_jct_h"] / base["p99_jct_h"],
            "c_jct": c["jct_h"] / base["jct_h"], "c_save": 1 - c["cost"] / base["cost"], "lpk_save": 1 - lpk / base["cost"],
            "c_miss": c["feasible_misses"], "wall": g["wall_s"] + c["wall_s"], "dl": base["deadline_jobs"],
            "base_miss": base["feasible_misses"],
        })
    print(f"\nGeneralisation: {len(names)} scenarios, {time.perf_counter() - t0:.0f} s wall "
          f"(load {os.getloadavg()[0]:.1f}); policy overrides: {a.set or '-'} {a.weight or ''}")
    print("| scenario | jobs | FIFO+bf util | green: JCT x | carbon cut | LP cut | **gap closed** | feasible misses "
          "| cost: JCT x | **saving** | LP saving (1.0x) | feasible misses | yungu wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['jobs']} | {r['util']:.0%} | {r['g_jct']:.3f} | {r['g_cut']:.1%} | {r['lp_cut']:.1%} "
              f"| {r['g_closed']:.1%} | {r['g_miss']}/{r['dl']} | {r['c_jct']:.3f} | {r['c_save']:.1%} | {r['lpk_save']:.1%} "
              f"| {r['c_miss']} | {r['wall']:.0f} |")
    mean = {k: statistics.fmean(r[k] for r in rows) for k in ("g_jct", "g_closed", "c_jct", "c_save", "lpk_save")}
    print(f"| **mean** | | | {mean['g_jct']:.3f} | | | {mean['g_closed']:.1%} | | {mean['c_jct']:.3f} | {mean['c_save']:.1%} "
          f"| {mean['lpk_save']:.1%} | | |")
    print(f"| **worst** | | | {max(r['g_jct'] for r in rows):.3f} | | | {min(r['g_closed'] for r in rows):.1%} "
          f"| {max(r['g_miss'] for r in rows)} | {max(r['c_jct'] for r in rows):.3f} | {min(r['c_save'] for r in rows):.1%} "
          f"| {min(r['lpk_save'] for r in rows):.1%} | {max(r['c_miss'] for r in rows)} | |")
    ok_c = all(r["g_closed"] >= 0.85 and r["g_jct"] <= CARBON_SLACK for r in rows)
    ok_k = all(r["c_save"] >= 0.25 and r["c_jct"] <= COST_SLACK for r in rows)
    ok_d = all(r["g_miss"] == 0 and r["c_miss"] == 0 for r in rows)
    print(f"\ncarbon: worst gap closed {min(r['g_closed'] for r in rows):.1%} at worst JCT "
          f"{max(r['g_jct'] for r in rows):.3f}x (target >= 85 % at <= 1.10x): {'met' if ok_c else 'NOT met'}")
    print(f"cost: worst saving {min(r['c_save'] for r in rows):.1%} at worst JCT {max(r['c_jct'] for r in rows):.3f}x "
          f"(target >= 25 % at <= 1.0x): {'met' if ok_k else 'NOT met'}")
    print(f"deadlines: {sum(r['g_miss'] + r['c_miss'] for r in rows)} misses among feasible deadlines: "
          f"{'met' if ok_d else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "raw": got}, indent=1))


if __name__ == "__main__":
    main()

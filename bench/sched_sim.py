"""Policies vs baselines vs the LP bound on an ITP scenario (carbon, cost, JCT, deadlines).

    python bench/sched_sim.py [scenarios/itp-7d.toml] [--objective green|cost|balanced|scenario] [--no-lp]
        [--policy NAME ...] [--set FIELD=VALUE ...] [--weight TERM=VALUE ...]
    (--set: what-if override of a PolicyConfig field; --weight: an operator default weight,
     laid over every objective's preset, e.g. --weight finish=0)

Runs every policy named in the scenario through the simulator (the same engine as
production), solves the LP bounds (min carbon, min cost) with completion bounds of
1.10 x each job's FIFO+backfill JCT, and prints the report table plus the ratios the
targets are stated in (JCT / FIFO+backfill, carbon gap closed, cost vs FIFO+backfill).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sched_scenarios import load

from yungu.adapters.sim_report import comparison, markdown_table
from yungu.cli.sim import run_scenario
from yungu.domain.job import Objective


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", nargs="?", default="scenarios/itp-7d.toml")
    ap.add_argument("--objective", default="scenario")
    ap.add_argument("--no-lp", action="store_true")
    ap.add_argument("--policy", action="append", default=[])
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a PolicyConfig field of our policy (what-if tuning), e.g. flexible_wait_frac=2")
    ap.add_argument("--weight", action="append", default=[], metavar="TERM=VALUE",
                    help="operator default weight over every preset (PolicyConfig.weights_override), e.g. finish=0.2")
    a = ap.parse_args()
    ls = load(Path(a.scenario))  # the scenario file, its ../shared/data paths found (YUNGU_SHARED_DATA)
    for kv in a.set:
        k, _, v = kv.partition("=")
        cur = getattr(ls.policy, k)
        ls = replace(ls, policy=replace(ls.policy, **{k: type(cur)(v) if not isinstance(cur, bool) else v == "true"}))
        print(f"policy override: {k} = {getattr(ls.policy, k)}")
    if a.weight:
        extra = {k: float(v) for k, _, v in (kv.partition("=") for kv in a.weight)}
        ls = replace(ls, policy=replace(ls.policy, weights_override={**ls.policy.weights_override, **extra}))
        print(f"weights override: {dict(ls.policy.weights_override)}")
    if a.objective != "scenario":
        obj = Objective(a.objective)
        ls = replace(ls, scenario=replace(ls.scenario, jobs=tuple(replace(j, objective=obj) for j in ls.scenario.jobs)))
    t = time.perf_counter()
    out = run_scenario(ls, a.policy or list(ls.policies), lp=not a.no_lp)
    print(f"scenario {ls.scenario.name}: {len(ls.scenario.jobs)} jobs, objective {a.objective}, "
          f"{time.perf_counter() - t:.0f} s")
    print(markdown_table(out.metrics, out.wall_s))
    for b in out.bounds:
        print(f"LP min {b.objective}: {b.value:,.0f} (carbon {b.carbon_kg:,.0f} kg, cost {b.cost_cny:,.0f} CNY, "
              f"{b.variables} variables, step {b.step_hours:g} h, {b.status})")
    print("\n".join(comparison(out.metrics, out.bounds)))
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out.wall_s.items()))
    print("CPU seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out.cpu_s.items())
          + f" (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

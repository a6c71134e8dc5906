"""``yungu sim SCENARIO.toml``: replay a trace through the scheduler and its baselines.

Runs locally on files (a what-if tool: it reads traces and energy series and writes a
report; it touches neither the platform's database nor its API).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yungu.adapters.sim_report import markdown_table, write_report
from yungu.adapters.traces.scenario import LoadedScenario, load_scenario
from yungu.cli.output import console, escape, fail
from yungu.domain.errors import YunguError
from yungu.domain.job import Objective
from yungu.engines.sim.core import simulate
from yungu.engines.sim.lp import LpBound, lp_bound
from yungu.engines.sim.metrics import Metrics, summarise
from yungu.engines.sim.model import SimResult
from yungu.engines.sim.policies import POLICIES, make

app = typer.Typer(help="Trace-driven what-if simulation / 基于轨迹的调度仿真", no_args_is_help=True)


@dataclass(frozen=True)
class RunOutput:
    results: tuple[SimResult, ...]
    metrics: tuple[Metrics, ...]
    bounds: tuple[LpBound, ...]
    wall_s: dict[str, float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU seconds per policy


def run_scenario(
    ls: LoadedScenario,
    policies: Sequence[str],
    *,
    lp: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> RunOutput:
    """Run each policy on the scenario (FIFO+backfill first when the LP bound needs it)."""
    sc = ls.scenario
    names = list(dict.fromkeys(policies))
    if lp and "fifo-backfill" not in names:
        names.insert(0, "fifo-backfill")
    results: list[SimResult] = []
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name in names:
        sched = make(name, sc.catalogue, ls.policy)
        t0, c0 = time.perf_counter(), time.process_time()
        cb = (lambda d, t, n=name: progress(n, d, t)) if progress else None
        res = simulate(sc, sched, policy_name=name, timer=time.perf_counter, progress=cb)
        wall[name] = time.perf_counter() - t0
        cpu[name] = time.process_time() - c0
        results.append(res)
    metrics = tuple(summarise(r) for r in results)
    bounds: list[LpBound] = []
    if lp:
        base = next(r for r in results if r.policy == "fifo-backfill")
        slack = float(ls.lp.get("jct_slack", 1.10))
        step = float(ls.lp.get("step_hours", 1.0))
        bnd = {r.id: r.submit + timedelta(seconds=slack * r.jct_s) for r in base.records if r.jct_s is not None}
        for rec in base.records:
            bnd.setdefault(rec.id, rec.submit + timedelta(days=60))
        for obj in ls.lp.get("objectives", ["carbon", "cost"]):
            t0 = time.perf_counter()
            bounds.append(lp_bound(sc, bnd, str(obj), step, float(ls.lp.get("time_limit_s", 600))))
            wall[f"lp-{obj}"] = time.perf_counter() - t0
    return RunOutput(tuple(results), metrics, tuple(bounds), wall, cpu)


def focus(ls: LoadedScenario) -> str:
    """What the run optimises, for the plots: "cost" when most jobs (or the operator) ask for
    cost, else "carbon"."""
    obj = ls.policy.objective_override
    if obj is None:
        n = sum(1 for j in ls.scenario.jobs if j.objective is Objective.COST)
        return "cost" if n * 2 > len(ls.scenario.jobs) else "carbon"
    return "cost" if obj is Objective.COST else "carbon"


@app.command("sim")
def sim(
    scenario: Path = typer.Argument(..., help="scenario TOML / 场景文件"),
    policy: list[str] = typer.Option([], "--policy", "-p", help=f"policy to run (repeatable): {', '.join(POLICIES)}"),
    out: Path = typer.Option(Path("sim-out"), "--out", help="report folder / 报告目录"),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="skip malformed trace rows and count them / 跳过格式错误的行"),
    lp: bool = typer.Option(False, "--lp", help="also solve the LP optimum bound (HiGHS) / 求解线性规划下界"),
    max_jobs: int = typer.Option(0, "--max-jobs", help="only the first N jobs (0: all)"),
) -> None:
    """Replay SCENARIO through the scheduler and baselines; write report.md and plots / 仿真并输出报告."""
    try:
        ls = load_scenario(scenario, skip_bad_rows=skip_bad_rows)
    except YunguError as exc:
        fail(str(exc), "see scenarios/README.md for the format / 场景格式见 scenarios/README.md")
    if max_jobs:
        ls = replace(ls, scenario=replace(ls.scenario, jobs=ls.scenario.jobs[:max_jobs]))
    names = policy or list(ls.policies)
    for n in names:
        if n not in POLICIES:
            fail(f"unknown policy {n!r}", f"known / 可选: {', '.join(POLICIES)}")
    console.print(
        f"场景 scenario [bold]{escape(ls.scenario.name)}[/]: {len(ls.scenario.jobs)} jobs 作业, "
        f"{len(ls.scenario.world.pools)} pools 资源池"
        + (f"; skipped 跳过 {ls.skipped_rows} bad rows 行" if ls.skipped_rows else "")
    )
    total = len(ls.scenario.jobs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def tick(name: str, done: int, _t: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"{name} 仿真中", total=total)
            if done % 200 == 0 or done == total:
                bar.update(tasks[name], completed=done)

        try:
            res = run_scenario(ls, names, lp=lp, progress=tick)
        except YunguError as exc:
            fail(str(exc))
    console.print(markdown_table(res.metrics, res.wall_s), markup=False, highlight=False)
    path = write_report(out, ls.scenario.name, str(scenario), res.results, res.metrics, res.bounds, ls.skipped_rows,
                        wall_s=res.wall_s, focus=focus(ls))
    console.print(f"报告 report: {path}")

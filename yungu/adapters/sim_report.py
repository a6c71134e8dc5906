"""The simulator's report: a Markdown table per policy (with wall times) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from yungu.engines.sim.lp import LpBound
from yungu.engines.sim.metrics import Metrics
from yungu.engines.sim.model import SimResult

COLUMNS = (
    "policy", "jobs", "done", "failed", "avg JCT h", "p50 JCT h", "p99 JCT h", "avg wait h", "makespan h",
    "util", "cost CNY", "energy kWh", "carbon kgCO2e", "green share", "deadline misses (feasible)",
    "preempt", "round ms p50", "round ms p99",
)


def metrics_row(m: Metrics) -> list[str]:
    return [
        m.policy, str(m.jobs), str(m.finished), str(m.failed), f"{m.avg_jct_h:.2f}", f"{m.p50_jct_h:.2f}",
        f"{m.p99_jct_h:.1f}", f"{m.avg_wait_h:.2f}", f"{m.makespan_h:.0f}", f"{m.utilisation:.1%}",
        f"{m.cost_cny:,.0f}", f"{m.energy_kwh:,.0f}", f"{m.carbon_kg:,.0f}", f"{m.green_share:.1%}",
        f"{m.deadline_misses}/{m.deadline_jobs} ({m.feasible_misses})", str(m.preemptions),
        f"{m.round_ms_p50:.1f}", f"{m.round_ms_p99:.1f}",
    ]


def markdown_table(metrics: Sequence[Metrics], wall_s: Mapping[str, float] | None = None) -> str:
    """One row per policy; with ``wall_s`` (policy -> seconds) a wall-time column too."""
    cols = [*COLUMNS, "wall s"] if wall_s else list(COLUMNS)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m in metrics:
        row = metrics_row(m)
        if wall_s:
            row.append(f"{wall_s[m.policy]:.1f}" if m.policy in wall_s else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def _change(a: float, b: float) -> str:
    return f"{a / b - 1:+.1%}" if b else "n/a (baseline is 0)"


def comparison(metrics: Sequence[Metrics], bounds: Sequence[LpBound], base: str = "fifo-backfill") -> list[str]:
    """Ratios against FIFO+backfill and, where an LP bound exists, the share of the gap closed."""
    by = {m.policy: m for m in metrics}
    b = by.get(base)
    if b is None:
        return []
    out = []
    lpc = next((x for x in bounds if x.objective == "carbon" and not math.isnan(x.value)), None)
    lpk = next((x for x in bounds if x.objective == "cost" and not math.isnan(x.value)), None)
    for m in metrics:
        if m.policy == base:
            continue
        s = (
            f"- **{m.policy}** vs {base}: JCT x{_ratio(m.avg_jct_h, b.avg_jct_h)}, carbon "
            f"{_change(m.carbon_kg, b.carbon_kg)}, cost {_change(float(m.cost_cny), float(b.cost_cny))}"
        )
        if lpc and b.carbon_kg > lpc.value:
            s += f"; carbon gap to LP closed {(b.carbon_kg - m.carbon_kg) / (b.carbon_kg - lpc.value):.0%}"
        if lpk and float(b.cost_cny) > lpk.value:
            s += f"; cost gap to LP closed {(float(b.cost_cny) - float(m.cost_cny)) / (float(b.cost_cny) - lpk.value):.0%}"
        out.append(s)
    return out


def plot_sites(res: SimResult, path: Path, focus: str = "carbon") -> None:
    """Per site, hourly: busy share of capacity, and the signal the run optimises (the truth
    series): carbon intensity, or the electricity price for a cost run (``focus="cost"``)."""
    sites = list(res.site_load)
    fig, axes = plt.subplots(len(sites), 1, figsize=(11, 2.2 * len(sites)), sharex=True)
    if len(sites) == 1:
        axes = [axes]
    series, label, colour = (
        (res.site_price, "electricity price CNY/kWh", "tab:red") if focus == "cost"
        else (res.site_carbon, "carbon intensity gCO2e/kWh", "tab:green")
    )
    top = max((max(v, default=0.0) for v in series.values()), default=0.0)
    for ax, sid in zip(axes, sites, strict=True):
        cap = max(1, res.capacity_devices.get(sid, 1))
        load = [x / cap for x in res.site_load[sid]]
        ax.plot(load, label="load (busy share)", lw=0.8)
        ax.set_ylabel(sid)
        ax.set_ylim(0, 1.05)
        right = ax.twinx()
        right.plot(series.get(sid, ())[: len(load)], label=label, lw=0.8, alpha=0.8, color=colour)
        right.set_ylim(min(0.0, min((min(v, default=0.0) for v in series.values()), default=0.0)), top * 1.05 or 1.0)
        right.tick_params(labelsize=7)
        if ax is axes[0]:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = right.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=7)
    axes[-1].set_xlabel(f"hours from {res.start:%Y-%m-%d %H:%M} UTC")
    what = "electricity price" if focus == "cost" else "carbon intensity"
    fig.suptitle(f"{res.scenario}: {res.policy} — load vs {what} per site")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_policies(metrics: Sequence[Metrics], bounds: Sequence[LpBound], path: Path) -> None:
    """Carbon, cost and average JCT per policy, with the LP bounds where solved."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.5))
    names = [m.policy for m in metrics]
    for ax, vals, title, objective, colour in (
        (a, [m.carbon_kg for m in metrics], "carbon kgCO2e", "carbon", "tab:green"),
        (b, [float(m.cost_cny) for m in metrics], "cost CNY", "cost", "tab:red"),
    ):
        ax.bar(names, vals, color=colour)
        for x in bounds:
            if x.objective == objective and not math.isnan(x.value):
                ax.axhline(x.value, color="black", ls="--", label="LP bound")
                ax.legend(fontsize=7)
        ax.set_title(title)
    c.bar(names, [m.avg_jct_h for m in metrics], color="tab:orange")
    c.set_title("average JCT (h)")
    for ax in (a, b, c):
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(
    out: Path,
    scenario: str,
    source: str,
    results: Sequence[SimResult],
    metrics: Sequence[Metrics],
    bounds: Sequence[LpBound] = (),
    skipped_rows: int = 0,
    notes: Sequence[str] = (),
    wall_s: Mapping[str, float] | None = None,
    focus: str = "carbon",
) -> Path:
    """``report.md`` with the policy table (and each policy's wall time), the LP bounds, the
    comparison with FIFO+backfill, and the plots (``focus``: "carbon" or "cost")."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Simulation report: {scenario}", "", f"Scenario file: `{source}`", ""]
    if skipped_rows:
        lines += [f"Skipped {skipped_rows} malformed trace rows (`--skip-bad-rows`).", ""]
    lines += ["## Policies", "", markdown_table(metrics, wall_s), ""]
    if wall_s:
        lines += ["Wall s: seconds of this machine to simulate the policy (scheduler and simulator together)"
                  + ("; LP: " + ", ".join(f"{k} {v:.1f} s" for k, v in wall_s.items() if k.startswith("lp-"))
                     if any(k.startswith("lp-") for k in wall_s) else "") + ".", ""]
    if bounds:
        lines += ["## LP optimum bound (HiGHS, fluid relaxation; see docs/scheduler.md)", ""]
        lines += ["| objective | value | carbon kgCO2e | cost CNY | energy kWh | classes | variables | step h | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in bounds:
            lines.append(
                f"| {x.objective} | {x.value:,.0f} | {x.carbon_kg:,.0f} | {x.cost_cny:,.0f} | {x.energy_kwh:,.0f} | "
                f"{x.classes} | {x.variables} | {x.step_hours:g} | {x.status} |"
            )
        lines.append("")
    cmp = comparison(metrics, bounds)
    if cmp:
        lines += ["## Against FIFO + EASY backfill", "", *cmp, ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    plot_policies(metrics, bounds, out / "policies.png")
    lines += ["![policies](policies.png)", ""]
    for r in results:
        png = f"sites-{r.policy}.png"
        plot_sites(r, out / png, focus)
        lines += [f"![{r.policy}]({png})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

"""``yungu explain JOB``: the scheduler's choice for a job and the alternatives it beat."""

from __future__ import annotations

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, escape, table

app = typer.Typer(help="Explain a job's placement / 解释作业的调度决策", no_args_is_help=True)


@app.command("explain")
@api_errors
def explain(
    job_id: str = typer.Argument(..., help="job id / 作业 ID"),
    output: Output = OutputOpt,
    url: str | None = typer.Option(None, "--url", envvar="YUNGU_URL"),
    key: str | None = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY"),
) -> None:
    """Show where a job runs (or waits) and why / 显示作业的放置位置及原因."""
    data = ApiClient(url, key).get(f"/jobs/{job_id}/explain")
    if output is Output.json:
        emit_json(data)
        return
    console.print(f"[bold]{escape(data['job_id'])}[/] {escape('[' + data['state'] + ']')} 决策 decision: "
                  f"{escape(data['decision'])}")
    console.print(f"  {escape(data['summary'])}")
    if data.get("weights"):
        console.print("  权重 weights: " + ", ".join(f"{k}={v:g}" for k, v in data["weights"].items()))
    rows = [
        (
            "✔" if a["chosen"] else "",
            a["pool_id"],
            a["start"][:16],
            f"{a['wait_s'] / 3600:.1f}",
            a["cost_cny"],
            f"{a['carbon_kg']:.2f}",
            f"{a['green_share']:.0%}",
            f"{a['latency_ms']:.0f}",
            "yes" if a["room_now"] else "no",
            "; ".join(a["why_lost"]),
        )
        for a in data.get("alternatives", [])
    ]
    if rows:
        table(
            "方案 Options",
            ["", "池 pool", "开始 start", "等待 wait h", "成本 CNY", "碳 kgCO2e", "绿电 green", "时延 ms", "有空 room", "落选原因 why lost"],
            rows,
        )
    for pool, reasons in data.get("filtered", {}).items():
        console.print(f"  [dim]排除 excluded {escape(pool)}: {escape('; '.join(reasons))}[/]")

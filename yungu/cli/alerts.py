"""``yungu alerts``: node silent, power anomaly, pool over capacity / 告警."""

from __future__ import annotations

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, emit_json, table

app = typer.Typer(help="Alerts / 告警", no_args_is_help=True)


@app.command("list")
@api_errors
def list_alerts(all_: bool = typer.Option(False, "--all", help="include resolved / 包括已恢复"),
                output: Output = OutputOpt, url: str | None = typer.Option(None, "--url", envvar="YUNGU_URL"),
                key: str | None = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY")) -> None:  # fmt: skip
    """List alerts (re-evaluated now) / 列出告警."""
    items = ApiClient(url, key).get("/api/v1/alerts", params={"include_resolved": all_})["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("告警 Alerts", ["kind 类型", "subject 对象", "severity 级别", "since 起始", "message 说明"],
          [[a["kind"], a["subject"], a["severity"], a["first_seen"], a["message"]] for a in items])  # fmt: skip

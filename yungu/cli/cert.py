"""``yungu cert show|verify|export|issue``: green-power traceability certificates / 绿电溯源证书."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from yungu.adapters.certs import to_html, verify
from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, fail, table

app = typer.Typer(help="Green-power certificates / 绿电溯源证书", no_args_is_help=True)
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY")


@app.command()
@api_errors
def issue(job: str = typer.Option(None, "--job"), tenant: str = typer.Option(None, "--tenant"),
          month: str = typer.Option(None, "--month", help="YYYY-MM"), output: Output = OutputOpt,
          url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:  # fmt: skip
    """Issue a certificate for a job, or for a tenant-month / 为作业或租户月度签发证书."""
    c = ApiClient(url, key)
    if job:
        cert = c.post(f"/api/v1/certs/jobs/{job}")
    elif tenant and month:
        cert = c.post(f"/api/v1/certs/tenants/{tenant}/{month}")
    else:
        fail("give --job, or --tenant and --month / 请指定 --job 或 --tenant 与 --month")
    _show(cert, output)


def _show(cert: dict, output: Output) -> None:  # type: ignore[type-arg]
    if output is Output.json:
        emit_json(cert)
        return
    b = cert["body"]
    t = b["totals"]
    table(f"证书 Certificate {b['id']}", ["field 字段", "value 值"], [
        ["kind 类型", f"{b['kind']} {b['subject']}"], ["tenant 租户", b["tenant_id"]], ["issued 签发", b["issued_at"]],
        ["energy 能耗 kWh", t["facility_kwh"]], ["matched green 小时匹配绿电 kWh", f"{t['matched_green_kwh']} ({t['matched_share']})"],
        ["carbon location 碳排放(位置) g", t["location_carbon_g"]], ["carbon market 碳排放(市场) g", t["market_carbon_g"]],
        ["flags 标记", f"energy {b['flags']['energy']}, signals {b['flags']['signals']}"],
        ["key id 密钥", cert["signature"]["key_id"]],
    ])  # fmt: skip


@app.command()
@api_errors
def show(
    cert_id: str, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt
) -> None:
    """Show a certificate / 查看证书."""
    _show(ApiClient(url, key).get(f"/api/v1/certs/{cert_id}"), output)


@app.command("verify")
@api_errors
def verify_cmd(
    file: Path,
    public_key: str = typer.Option(
        None, "--public-key", help="trusted platform key (base64); default: ask the platform"
    ),
    offline: bool = typer.Option(
        False, "--offline", help="check integrity with the embedded key only / 仅离线校验完整性"
    ),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
) -> None:
    """Verify a certificate file's Ed25519 signature / 校验证书签名."""
    try:
        cert = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"cannot read certificate {file}: {exc} / 无法读取证书")
    trusted = public_key
    if trusted is None and not offline:
        trusted = ApiClient(url, key).get("/api/v1/certs-public-key")["public_key"]
    ok, reason = verify(cert, trusted)
    if not ok:
        fail(f"INVALID 无效: {reason}", code=3)
    console.print(
        f"[green]VALID 有效[/green]: {reason}" + (" (integrity only / 仅完整性)" if trusted is None else "")
    )


@app.command()
@api_errors
def export(cert_id: str, out: Path = typer.Option(..., "--out", "-f"), fmt: str = typer.Option("json", "--format", help="json or html"),
           url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:  # fmt: skip
    """Export a certificate as JSON (verifiable) or printable HTML (print to PDF) / 导出证书."""
    cert = ApiClient(url, key).get(f"/api/v1/certs/{cert_id}")
    if fmt == "json":
        out.write_text(json.dumps(cert, ensure_ascii=False, indent=2), encoding="utf-8")
    elif fmt == "html":
        out.write_text(to_html(cert), encoding="utf-8")
    else:
        fail("--format must be json or html / 格式须为 json 或 html")
    console.print(f"wrote 已写入 {out}")

"""``yungu bill ...``: balances, usage, invoices, period close / 账单、用量、发票、结账."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, table

app = typer.Typer(help="Billing and ledger / 计费与账本", no_args_is_help=True)
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY")


@app.command()
@api_errors
def balance(account: str = typer.Argument(None, help="account id; default: all visible / 账户 ID"),
            output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Account balances / 账户余额."""
    c = ApiClient(url, key)
    rows: list[dict[str, Any]] = [c.get(f"/ledger/accounts/{account}")] if account else c.get("/ledger/accounts")
    if output is Output.json:
        emit_json(rows)
        return
    table("账户 Accounts", ["account 账户", "kind 类型", "balance 余额", "available 可用", "pending 冻结", "credit 授信"],
          [[r["id"], r["kind"], f"{r['balance']} {r['currency']}", r["available"], r["pending_debits"],
            r["credit_limit"] if r["credit_limit"] is not None else "∞"] for r in rows])


@app.command()
@api_errors
def topup(tenant: str, amount: str, payment_id: str = typer.Option(..., "--id", help="bank reference / 银行流水号"),
          reason: str = typer.Option(..., "--reason", help="why (kept in the audit log), e.g. the bank transfer "
                                     "it records / 原因（记入审计日志）"),
          output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Record a tenant's payment into its wallet (safe to repeat with the same --id) / 充值."""
    r = ApiClient(url, key).post(f"/ledger/tenants/{tenant}/topup",
                                 {"id": payment_id, "amount": amount, "reason": reason})
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"已入账 Credited: {tenant} 余额 balance {r['balance']} {r['currency']}")


@app.command()
@api_errors
def run(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Meter, rate and book finished jobs now / 立即计量、计价、记账."""
    r = ApiClient(url, key).post("/billing/run")
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"计量 metered {r['metered']}, 记账 booked {r['booked']}, 过期释放 expired {r['expired']}")


@app.command()
@api_errors
def usage(tenant: str = typer.Option(None, "--tenant"), period: str = typer.Option(None, "--period", help="YYYY-MM"),
          output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Usage records, each traceable to its ledger transfer / 用量记录."""
    params = {k: v for k, v in (("tenant", tenant), ("period", period)) if v}
    rows = ApiClient(url, key).get("/billing/usage", params=params)
    if output is Output.json:
        emit_json(rows)
        return
    table("用量 Usage", ["usage 用量", "job 作业", "pool 资源池", "device-h 卡时", "kWh", "amount 金额", "period 账期",
                       "late 补记", "invoice 发票"],
          [[r["id"], r["job_id"], r["pool_id"], round(r["device_seconds"] / 3600, 4), r["facility_kwh"], r["amount"],
            r["booked_period"], r["late_from"] or "", r["invoice"] or ""] for r in rows])


@app.command()
@api_errors
def close(period: str, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Close a period and issue its invoices (idempotent) / 结账并开票."""
    r = ApiClient(url, key).post(f"/billing/periods/{period}/close")
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"账期 {period} 已结 closed; 发票 invoices: {', '.join(r['invoices']) or '无 none'}")


@app.command()
@api_errors
def invoices(tenant: str = typer.Option(None, "--tenant"), period: str = typer.Option(None, "--period"),
             output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List invoices / 发票列表."""
    params = {k: v for k, v in (("tenant", tenant), ("period", period)) if v}
    rows = ApiClient(url, key).get("/billing/invoices", params=params)
    if output is Output.json:
        emit_json(rows)
        return
    table("发票 Invoices", ["number 发票号码", "period 账期", "buyer 购买方", "net 金额", "tax 税额", "total 价税合计"],
          [[r["number"], r["period"], r["buyer"]["name"], r["total_net"], r["total_tax"], r["total_gross"]]
           for r in rows])


@app.command()
@api_errors
def invoice(number: str, html: Path = typer.Option(None, "--html", help="write printable HTML here / 导出 HTML"),
            output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Show one invoice (数电发票 fields), or save it as printable HTML / 查看或导出发票."""
    c = ApiClient(url, key)
    inv = c.get(f"/billing/invoices/{number}")
    if html:
        page = c.http.get(f"/billing/invoices/{number}/html")
        page.raise_for_status()
        html.write_text(page.text, encoding="utf-8")
        console.print(f"已导出 Saved: {html}")
        return
    if output is Output.json:
        emit_json(inv)
        return
    table(f"发票 Invoice {inv['number']}", ["field 字段", "value 值"], [
        ["buyer 购买方", f"{inv['buyer']['name']} ({inv['buyer']['credit_code']})"],
        ["seller 销售方", f"{inv['seller']['name']} ({inv['seller']['credit_code']})"],
        ["period 账期", inv["period"]], ["issued 开票日期", inv["issued_at"]],
        ["net 金额", inv["total_net"]], ["tax 税额", inv["total_tax"]],
        ["total 价税合计", f"{inv['total_gross']} ({inv['total_gross_capital']})"], ["lines 行数", len(inv["lines"])],
    ])

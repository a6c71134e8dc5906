"""The ``yungu`` command. Every command except ``server`` talks to the HTTP API."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer
import yaml

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, err, escape, fail, table

app = typer.Typer(help="Yungu 云谷 — federated compute-power network / 算力网络调度平台",
                  no_args_is_help=True, pretty_exceptions_enable=False)
admin = typer.Typer(help="Tenants and API keys (admin) / 租户与密钥管理", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants / 租户", no_args_is_help=True)
key_app = typer.Typer(help="API keys / API 密钥", no_args_is_help=True)
admin.add_typer(tenant_app, name="tenant")
admin.add_typer(key_app, name="key")
app.add_typer(admin, name="admin")

from yungu.cli import agent as _agent_cli  # noqa: E402  (issue 4: telemetry and certificates)
from yungu.cli import alerts as _alerts_cli  # noqa: E402
from yungu.cli import cert as _cert_cli  # noqa: E402

app.add_typer(_agent_cli.app, name="agent")
app.add_typer(_cert_cli.app, name="cert")
app.add_typer(_alerts_cli.app, name="alerts")

from yungu.cli import bill as _bill_cli  # noqa: E402  (issue 5: billing, ledger and market)
from yungu.cli import market as _market_cli  # noqa: E402

app.add_typer(_bill_cli.app, name="bill")
app.add_typer(_market_cli.app, name="market")

from yungu.cli import tokens as _tokens_cli  # noqa: E402  (issue 14: the token service)

app.add_typer(_tokens_cli.app, name="tokens")

from yungu.cli import explain as _explain_cli  # noqa: E402  (issue 3: scheduler)
from yungu.cli import sim as _sim_cli  # noqa: E402

app.command("explain")(_explain_cli.explain)

from yungu.cli import screen as _screen_cli  # noqa: E402  (issue 13: big screen)

app.command("screen")(_screen_cli.screen)
app.command("sim")(_sim_cli.sim)

UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL", help="platform URL (default http://127.0.0.1:8600)")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY", help="API key")


def client(url: str | None, key: str | None) -> ApiClient:
    return ApiClient(url, key)


def _spec_from_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}",
             "see docs/jobs.md for the job file format / 作业文件格式见 docs/jobs.md")
    if not isinstance(doc, dict):
        fail(f"{path} must contain a mapping of job fields, got {type(doc).__name__}")
    return doc


@app.command()
@api_errors
def submit(command: str | None = typer.Argument(None, help="shell command to run"),
           file: Path | None = typer.Option(None, "--file", "-f", help="YAML/JSON job file"),
           name: str | None = typer.Option(None, "--name"),
           cpus: int | None = typer.Option(None, "--cpus"),
           memory_gb: int | None = typer.Option(None, "--memory-gb"),
           gpus: int | None = typer.Option(None, "--gpus", help="accelerators per replica"),
           accelerator: list[str] = typer.Option([], "--accelerator", help="accepted accelerator model (repeatable)"),
           replicas: int | None = typer.Option(None, "--replicas", help="gang size"),
           pool: str | None = typer.Option(None, "--pool"),
           priority: int | None = typer.Option(None, "--priority"),
           duration: int | None = typer.Option(None, "--duration", help="estimated duration, seconds"),
           deadline: str | None = typer.Option(None, "--deadline", help="ISO-8601 with zone"),
           objective: str | None = typer.Option(None, "--objective", help="time|cost|green|balanced"),
           max_price: str | None = typer.Option(None, "--max-price", help="CNY per hour"),
           tenant: str | None = typer.Option(None, "--tenant", help="tenant id (admin/operator keys)"),
           idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
           output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Submit a job / 提交作业."""
    body: dict[str, Any] = _spec_from_file(file) if file else {}
    if command:
        body["command"] = command
    if "command" not in body:
        fail("no command given", "yungu submit 'python train.py'  or  yungu submit -f job.yaml")
    res = dict(body.get("resources") or {})
    for k, v in (("cpus", cpus), ("memory_gb", memory_gb), ("accelerators", gpus)):
        if v is not None:
            res[k] = v
    if accelerator:
        res["accelerator_types"] = accelerator
    if res:
        body["resources"] = res
    for k, v in (("name", name), ("replicas", replicas), ("pool", pool), ("priority", priority),
                 ("estimated_duration_s", duration), ("deadline", deadline), ("objective", objective),
                 ("max_price_cny_per_hour", max_price), ("tenant_id", tenant)):
        if v is not None:
            body[k] = v
    body.setdefault("name", body["command"].split()[0][:60] if body["command"].split() else "job")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = client(url, key).post("/jobs", json=body, headers=headers)
    if output is Output.json:
        emit_json(job)
    else:
        console.print(f"[green]已提交 Submitted[/] {job['id']}  state={job['state']}")


STATE_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}


@app.command()
@api_errors
def jobs(state: list[str] = typer.Option([], "--state", help="filter by state (repeatable)"),
         limit: int = typer.Option(20, "--limit"), all_pages: bool = typer.Option(False, "--all"),
         output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List jobs, newest first / 作业列表."""
    c = client(url, key)
    items: list[dict[str, Any]] = []
    cursor = None
    # --all walks every page: show how far it got on stderr (never on stdout, which may be JSON).
    with err.status("获取作业 fetching jobs…", spinner="dots") if all_pages and err.is_terminal else nullcontext() as st:
        while True:
            page = c.get("/jobs", params={"state": state, "limit": limit, **({"cursor": cursor} if cursor else {})})
            items += page["items"]
            cursor = page["next_cursor"]
            if st is not None:
                st.update(f"获取作业 fetching jobs… {len(items):,}")
            if not all_pages or not cursor:
                break
    if output is Output.json:
        emit_json(items)
        return
    table("作业 Jobs", ["ID", "NAME", "STATE", "POOL", "SUBMITTED (UTC)", "EXIT", "REASON"],
          [(j["id"], j["name"], f"[{STATE_STYLE.get(j['state'], 'white')}]{j['state']}[/]", j["pool_id"],
            j["submitted_at"][:19], j["exit_code"], (j["reason"] or "")[:60]) for j in items])


@app.command()
@api_errors
def status(job_id: str, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Show one job and its history / 作业状态."""
    c = client(url, key)
    job = c.get(f"/jobs/{job_id}")
    events = c.get(f"/jobs/{job_id}/events")["items"]
    if output is Output.json:
        emit_json({**job, "events": events})
        return
    console.print(f"[bold]{escape(job['name'])}[/] {job['id']}  [{STATE_STYLE.get(job['state'], 'white')}]{job['state']}[/]"
                  f"  attempt={job['attempt']} pool={job['pool_id']} exit={job['exit_code']}")
    if job["reason"]:
        console.print(f"  原因 reason: {escape(job['reason'])}")
    table("状态变化 Transitions", ["AT (UTC)", "EVENT", "FROM", "TO", "REASON"],
          [(e["at"][:23], e["event"], e["from"], e["to"], e["reason"][:80]) for e in events])


@app.command()
@api_errors
def logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f"),
         stream: str = typer.Option("stdout", "--stream", help="stdout|stderr[:replica]"),
         url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Print a job's log; -f follows it until the job ends / 查看日志."""
    c = client(url, key)
    offset = 0
    while True:
        chunk = c.get(f"/jobs/{job_id}/logs", params={"stream": stream, "offset": offset})
        if chunk["data"]:
            console.out(chunk["data"], end="", highlight=False)
        offset = chunk["next_offset"]
        if not follow or (chunk["eof"] and not chunk["data"]):
            break
        if not chunk["data"]:
            time.sleep(0.5)


@app.command()
@api_errors
def cancel(job_id: str, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Cancel a job (SIGTERM, then SIGKILL after a grace period) / 取消作业."""
    job = client(url, key).post(f"/jobs/{job_id}/cancel")
    if output is Output.json:
        emit_json(job)
    else:
        console.print(f"[yellow]已请求取消 Cancel requested[/] {job['id']} (state={job['state']})")


sites_app = typer.Typer(help="Sites: capacity, load, executor health / 站点", invoke_without_command=True)
app.add_typer(sites_app, name="sites")


@sites_app.callback()
@api_errors
def sites(ctx: typer.Context, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Sites with capacity and load / 站点容量与负载."""
    if ctx.invoked_subcommand:
        return
    items = client(url, key).get("/sites")["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("站点 Sites", ["SITE", "名称", "REGION", "PUE", "CNY/kWh", "GREEN", "DEVICES used/total", "CPUS used/total", "JOBS"],
          [(s["id"], s["name_zh"], s["region_id"], s["pue"], s["electricity_price_cny_per_kwh"],
            f"{s['green_contract_share']:.0%}", f"{s['devices_used']}/{s['devices_total']}",
            f"{s['cpus_used']}/{s['cpus_total']}", s["jobs_running"]) for s in items])


@sites_app.command("check")
@api_errors
def sites_check(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Check every site's executor: reachable? capacity seen vs declared / 检查执行器."""
    items = client(url, key).get("/sites/check")["items"]
    if output is Output.json:
        emit_json(items)
    else:
        table("执行器检查 Executor check", ["SITE", "EXECUTOR", "KIND", "REACHABLE", "DECLARED cpus/devices", "ENGINE SEES", "NOTES"],
              [(i["site_id"], i["executor"], i["executor_kind"], "[green]yes[/]" if i["reachable"] else "[red]NO[/]",
                f"{i['declared']['cpus']}/{i['declared']['devices']}",
                f"cpus={i['engine'].get('cpus')} gpus={i['engine'].get('gpus', '-')} mem={i['engine'].get('memory_gb')}GB",
                "; ".join(map(str, i["engine"].get("warnings", []))) or i["engine"].get("error", "")) for i in items])
    if not all(i["reachable"] for i in items):
        raise typer.Exit(1)


@app.command()
@api_errors
def pools(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Pools with declared capacity (PFLOPS per precision) and load / 资源池."""
    items = client(url, key).get("/pools")["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("资源池 Pools", ["POOL", "CLASS", "ACCEL", "NODES", "DEVICES used/total", "CPUS used/total", "P (prec)", "CNY/dev-h"],
          [(p["id"], f"{p['compute_class_zh']} {p['compute_class']}", p["accelerator"], p["nodes"],
            f"{p['devices_used']}/{p['devices_total']}", f"{p['cpus_used']}/{p['cpus_total']}",
            f"{p['declared_pflops']:,.1f} {p['declared_precision']}", p["price_cny_per_device_hour"]) for p in items])


@tenant_app.command("create")
@api_errors
def tenant_create(name: str, social_credit_code: str = typer.Option("", "--credit-code", help="统一社会信用代码"),
                  prepaid: bool = typer.Option(False, "--prepaid", help="reserve each job's estimated cost at admission / 预付费"),
                  output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Create a tenant / 创建租户."""
    t = client(url, key).post("/admin/tenants", json={"name": name, "social_credit_code": social_credit_code,
                                                      "prepaid": prepaid})
    emit_json(t) if output is Output.json else console.print(f"[green]租户已创建 Tenant created[/] {t['id']} {t['name']}")


@tenant_app.command("list")
@api_errors
def tenant_list(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List tenants / 租户列表."""
    items = client(url, key).get("/admin/tenants")["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("租户 Tenants", ["ID", "NAME", "CREDIT CODE", "CREATED"],
          [(t["id"], t["name"], t["social_credit_code"], t["created_at"][:19]) for t in items])


@key_app.command("create")
@api_errors
def key_create(role: str = typer.Option(..., "--role", help="admin|operator|provider|tenant"),
               tenant: str | None = typer.Option(None, "--tenant", help="tenant id (for tenant keys)"),
               provider: str | None = typer.Option(None, "--provider",
                                                   help="provider name as in the sites' config (provider keys)"),
               name: str = typer.Option("", "--name"),
               output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Create an API key; the secret is shown once / 创建密钥（仅显示一次）."""
    body = {"role": role, "tenant_id": tenant, "name": name} | ({"provider": provider} if provider else {})
    k = client(url, key).post("/admin/keys", json=body)
    if output is Output.json:
        emit_json(k)
    else:
        console.print(f"[green]密钥已创建 Key created[/] {k['id']} role={k['role']}\n  secret (shown once / 仅显示一次): {k['secret']}")


@key_app.command("list")
@api_errors
def key_list(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List API keys (never their secrets) / 密钥列表."""
    items = client(url, key).get("/admin/keys")["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("密钥 API keys", ["ID", "PREFIX", "ROLE", "TENANT", "NAME", "REVOKED"],
          [(k["id"], k["prefix"], k["role"], k["tenant_id"], k["name"], k["revoked"]) for k in items])


@key_app.command("revoke")
@api_errors
def key_revoke(key_id: str, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Revoke an API key / 吊销密钥."""
    client(url, key).delete(f"/admin/keys/{key_id}")
    console.print(f"[yellow]已吊销 Revoked[/] {key_id}")


# Area command groups register here (one line each).


def main() -> None:
    """Entry point without the ``server`` command (that one lives in the composition root)."""
    app()

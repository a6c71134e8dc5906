"""``yungu tokens ...``: models and prices, virtual keys, usage, upstreams / 令牌服务：模型、价格、密钥、用量."""

from __future__ import annotations

from typing import Any

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, fail, table

app = typer.Typer(help="Token service: models, prices, keys, usage / 令牌服务", no_args_is_help=True)
keys_app = typer.Typer(help="Virtual keys with budgets and limits / 虚拟密钥", invoke_without_command=True)
app.add_typer(keys_app, name="keys")
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY")


@app.command()
@api_errors
def models(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Models, their prices per million tokens and serving replicas / 模型与价格."""
    rows = ApiClient(url, key).get("/tokens/models")["items"]
    if output is Output.json:
        emit_json(rows)
        return
    table("模型 Models", ["model 模型", "kind 类型", "input ¥/M 输入", "output ¥/M 输出", "max out 最大输出",
                        "replicas 副本"],
          [[r["model"], r["kind"], r["input_per_million"], r["output_per_million"], r["max_output_tokens"],
            r["replicas"]] for r in rows])


@app.command()
@api_errors
def prices(model: str = typer.Argument(None, help="model to price; omit to list / 模型"),
           input_price: str = typer.Option(None, "--input", help="CNY per million input tokens / 每百万输入价格"),
           output_price: str = typer.Option(None, "--output-price", help="CNY per million output tokens"),
           kind: str = typer.Option("chat", "--kind", help="chat or embeddings"),
           max_output: int = typer.Option(1024, "--max-output", help="cap on max_tokens / 最大输出"),
           output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List prices, or set a model's prices (operator) / 查看或设置价格."""
    c = ApiClient(url, key)
    if model is None:
        models(output, url, key)
        return
    if input_price is None or output_price is None:
        fail("give both --input and --output-price (CNY per million tokens, e.g. 0.5) / 需同时给出输入和输出价格",
             "yungu tokens prices smollm2-135m --input 0.5 --output-price 1.0")
    r = c.put(f"/tokens/models/{model}", {"kind": kind, "input_per_million": input_price,
                                          "output_per_million": output_price, "max_output_tokens": max_output})
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"已定价 Priced {r['model']}: 输入 input {r['input_per_million']} ¥/M, "
                      f"输出 output {r['output_per_million']} ¥/M")


def _key_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["key_id"], r["tenant_id"], r["name"], ",".join(r["models"]) or "*",
             f"{r['budget']}/{r['period']}" if r["budget"] is not None else "none 无",
             r["spent"], r["rpm"] or "", r["tpm"] or "", ",".join(r["regions"]) or "*", r["expires_at"] or ""]
            for r in rows]


KEY_COLS = ["key 密钥", "tenant 租户", "name 名称", "models 模型", "budget 预算", "spent 已用", "rpm", "tpm",
            "regions 区域", "expires 过期"]


@keys_app.callback()
@api_errors
def keys(ctx: typer.Context, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List token keys (a tenant sees its own) / 列出密钥."""
    if ctx.invoked_subcommand is not None:
        return
    rows = ApiClient(url, key).get("/tokens/keys")["items"]
    if output is Output.json:
        emit_json(rows)
    else:
        table("令牌密钥 Token keys", KEY_COLS, _key_rows(rows))


@keys_app.command("create")
@api_errors
def keys_create(tenant: str = typer.Option(..., "--tenant", help="tenant id / 租户 ID"),
                name: str = typer.Option("", "--name"),
                budget: str = typer.Option(None, "--budget", help="CNY per period; without it every call is refused"),
                period: str = typer.Option("month", "--period", help="day, month or total"),
                alert: str = typer.Option(None, "--alert", help="soft alert at this share, e.g. 0.8"),
                rpm: int = typer.Option(None, "--rpm"), tpm: int = typer.Option(None, "--tpm"),
                models_: str = typer.Option("", "--models", help="comma-separated; default all"),
                regions: str = typer.Option("", "--regions", help="data residency, comma-separated"),
                expires: str = typer.Option(None, "--expires", help="ISO time with zone"),
                output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Create a virtual key for a tenant (operator); the secret is shown once / 创建密钥."""
    body: dict[str, Any] = {"tenant_id": tenant, "name": name, "budget": budget, "period": period, "alert_at": alert,
                            "rpm": rpm, "tpm": tpm, "expires_at": expires,
                            "models": [m for m in models_.split(",") if m],
                            "regions": [r for r in regions.split(",") if r]}
    r = ApiClient(url, key).post("/tokens/keys", body)
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"密钥 Key {r['key_id']} 预算 budget {r['budget']}/{r['period']}\n"
                      f"  secret (仅显示一次 shown once): {r['secret']}")


@keys_app.command("budget")
@api_errors
def keys_budget(key_id: str, amount: str = typer.Argument(..., help="CNY per period / 每期预算"),
                alert: str = typer.Option(None, "--alert"), output: Output = OutputOpt,
                url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Change a key's budget (operator) / 修改预算."""
    body: dict[str, Any] = {"budget": amount}
    if alert is not None:
        body["alert_at"] = alert
    r = ApiClient(url, key).request("PATCH", f"/tokens/keys/{key_id}", json=body)
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"已更新 Updated {r['key_id']}: 预算 budget {r['budget']}/{r['period']}, 已用 spent {r['spent']}")


@app.command()
@api_errors
def usage(limit: int = typer.Option(20, "--limit"), output: Output = OutputOpt, url: str | None = UrlOpt,
          key: str | None = KeyOpt) -> None:
    """Recent token usage and totals per model and month / 令牌用量."""
    r = ApiClient(url, key).get("/tokens/usage", params={"limit": limit})
    if output is Output.json:
        emit_json(r)
        return
    table("用量汇总 Usage by model", ["tenant 租户", "model 模型", "period 账期", "requests 请求", "in 输入",
                                     "out 输出", "cost ¥ 费用"],
          [[s["tenant_id"], s["model"], s["billing_period"], s["requests"], s["tokens_in"], s["tokens_out"],
            s["cost"]] for s in r["summary"]])
    table("最近请求 Recent requests", ["request 请求", "model 模型", "replica 副本", "in", "out", "source 来源",
                                      "status 状态", "cost ¥"],
          [[x["request_id"], x["model"], x["replica_id"], x["tokens_in"], x["tokens_out"], x["source"], x["status"],
            x["cost"]] for x in r["items"]])


@app.command()
@api_errors
def upstreams(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Serving replicas, their breakers and load (operator) / 副本与熔断状态."""
    rows = ApiClient(url, key).get("/tokens/upstreams")["items"]
    if output is Output.json:
        emit_json(rows)
        return
    table("副本 Replicas", ["replica 副本", "model 模型", "region 区域", "url", "breaker 熔断", "inflight 在途",
                          "ttfb ms"],
          [[r["id"], r["model"], r["region"], r["url"], r["breaker"], r["inflight"], r["latency_ms"]] for r in rows])

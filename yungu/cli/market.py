"""``yungu market ...``: posted prices, bids and offers, auctions, reservations, price index / 算力交易."""

from __future__ import annotations

from datetime import datetime

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, fail, table

app = typer.Typer(help="Compute market / 算力交易市场", no_args_is_help=True)
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY")


def _product(region: str, klass: str, start: str, end: str, reserve: str) -> dict[str, str]:
    for t in (start, end):
        try:
            if datetime.fromisoformat(t).tzinfo is None:
                fail(f"{t}: add a timezone, e.g. 2026-06-01T00:00+08:00 / 请带时区")
        except ValueError:
            fail(f"{t}: not an ISO time / 不是 ISO 时间", code=2)
    return {"region": region, "accelerator_class": klass, "window_start": start, "window_end": end,
            "reserve_price": reserve}


@app.command()
@api_errors
def prices(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Posted on-demand prices / 按需挂牌价."""
    rows = ApiClient(url, key).get("/market/prices")
    if output is Output.json:
        emit_json(rows)
        return
    table("挂牌价 Posted prices (CNY/卡时)", ["pool 资源池", "region 区域", "class 类型", "accelerator 加速卡", "price 价格"],
          [[r["pool_id"], r["region"], r["class"], r["accelerator"] or "cpu", r["price_cny_per_device_hour"]]
           for r in rows])


@app.command()
@api_errors
def order(side: str = typer.Argument(..., help="bid | ask"), order_id: str = typer.Option(..., "--id"),
          region: str = typer.Option(...), klass: str = typer.Option("intelligent", "--class"),
          start: str = typer.Option(...), end: str = typer.Option(...), quantity: int = typer.Option(...),
          price: str = typer.Option(..., help="CNY per device-hour / 每卡时价格"),
          pool: str = typer.Option("", help="asks: the pool offered"), party: str = typer.Option(""),
          reserve: str = typer.Option("0"), output: Output = OutputOpt, url: str | None = UrlOpt,
          key: str | None = KeyOpt) -> None:
    """Place a bid or an offer for the next call auction / 提交买单或卖单."""
    body = _product(region, klass, start, end, reserve) | {"id": order_id, "side": side, "quantity": quantity,
                                                           "price": price, "pool_id": pool, "party": party}
    r = ApiClient(url, key).post("/market/orders", body)
    if output is Output.json:
        emit_json(r)
    else:
        console.print(f"已提交 Placed {r['side']} {r['id']}: {r['quantity']} @ {r['price']} ({r['product']})")


@app.command("clear")
@api_errors
def clear_auction(region: str = typer.Option(...), klass: str = typer.Option("intelligent", "--class"),
                  start: str = typer.Option(...), end: str = typer.Option(...), reserve: str = typer.Option("0"),
                  output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Run the call auction for one product / 执行集合竞价."""
    r = ApiClient(url, key).post("/market/auctions", _product(region, klass, start, end, reserve))
    if output is Output.json:
        emit_json(r)
        return
    console.print(f"出清价 Clearing price: {r['price'] or '无成交 no trade'}; 成交量 volume {r['volume']} "
                  f"({r['orders']} orders)")
    table("预留 Reservations", ["tenant 租户", "provider 供给方", "pool 资源池", "devices 卡数", "price 价格"],
          [[x["tenant_id"], x["provider"], x["pool_id"], x["devices"], x["price"]] for x in r["reservations"]])


@app.command()
@api_errors
def reservations(at: str = typer.Option(None, help="ISO time; default now"), pool: str = typer.Option(None),
                 output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Capacity reservations in force / 生效中的算力预留."""
    params = {k: v for k, v in (("at", at), ("pool_id", pool)) if v}
    rows = ApiClient(url, key).get("/market/reservations", params=params)
    if output is Output.json:
        emit_json(rows)
        return
    table("预留 Reservations", ["id", "tenant 租户", "pool 资源池", "window 时段", "devices 卡数", "price 价格"],
          [[r["id"], r["tenant_id"], r["pool_id"], f"{r['window_start']} → {r['window_end']}", r["devices"],
            r["price"]] for r in rows])


@app.command()
@api_errors
def index(line: str = typer.Option(None, "--line", help="region/class"), output: Output = OutputOpt,
          url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """The public price index / 算力价格指数."""
    r = ApiClient(url, key).get("/market/index", params={"product_line": line} if line else {})
    if output is Output.json:
        emit_json(r)
        return
    table("价格指数 Price index (CNY/卡时)", ["line 品类", "VWAP 成交均价", "auctions 场次", "last 最新"],
          [[k, v["vwap"], len(v["points"]), v["points"][-1]["price"] if v["points"] else ""] for k, v in r.items()])

"""``yungu peer add|list|remove|check``: peering with other platforms / 对等平台管理.

Peering is mutual: the other platform's operator must add this platform too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, fail, table

app = typer.Typer(help="Peer platforms / 对等平台（互联需双方互相登记）", no_args_is_help=True)
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL", help="platform URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY", help="API key")


@app.command()
@api_errors
def add(peer_id: str = typer.Argument(..., help="the peer's platform id, e.g. yungu-horinger"),
        base_url: str = typer.Argument(..., help="its address, e.g. http://10.1.0.2:8600"),
        public_key: str | None = typer.Option(None, "--public-key", help="its Ed25519 key (base64); "
                                              "fetched from the peer when omitted — compare it with its operator"),
        policy: Path | None = typer.Option(None, "--policy", help="JSON peering policy (docs/federation.md)"),
        latency_ms: int = typer.Option(0, "--latency-ms", help="link round-trip time, for the scheduler"),
        name: str = typer.Option("", "--name"),
        output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Register a peer / 登记对等平台."""
    body: dict[str, Any] = {"id": peer_id, "base_url": base_url, "latency_ms": latency_ms, "name": name}
    if public_key:
        body["public_key"] = public_key
    if policy is not None:
        try:
            body["policy"] = json.loads(policy.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read the policy file {policy}: {exc}", "give a JSON object, see docs/federation.md / "
                 "策略文件须为 JSON")
    doc = ApiClient(url, key).post("/federation/peers", json=body)
    if output is Output.json:
        emit_json(doc)
    else:
        console.print(f"[green]已登记 Added[/] {doc['id']} {doc['base_url']}  key {doc['keys'][0]['keyid']}")
        console.print("对方也须登记本平台 The peer's operator must add this platform too (peering is mutual).")


@app.command("list")
@api_errors
def list_(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """List peers and their health / 列出对等平台."""
    items = ApiClient(url, key).get("/federation/peers")["items"]
    if output is Output.json:
        emit_json(items)
        return
    table("对等平台 Peers", ["id", "state", "url", "latency ms", "offers", "open", "reason"],
          [[p["id"], p["state"], p["base_url"], p["latency_ms"], p["offers"], p["open_delegations"],
            p.get("reason", "")[:60]] for p in items])


@app.command()
@api_errors
def remove(peer_id: str, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Remove a peer / 移除对等平台."""
    ApiClient(url, key).delete(f"/federation/peers/{peer_id}")
    console.print(f"[yellow]已移除 Removed[/] {peer_id}")


@app.command()
@api_errors
def check(peer_id: str, output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """A signed round trip to the peer / 检查对等平台连通与签名."""
    doc = ApiClient(url, key).get(f"/federation/peers/{peer_id}/check")
    if output is Output.json:
        emit_json(doc)
        return
    ok = doc.get("reachable") and doc.get("signed")
    console.print(f"{'[green]OK[/]' if ok else '[red]FAIL[/]'} {peer_id}: state={doc['state']} "
                  f"rtt={doc.get('rtt_ms', '-')} ms offers={doc.get('offers', '-')} {doc.get('error', '')}")
    if not ok:
        raise typer.Exit(1)


@app.command()
def conformance(target: str = typer.Argument(..., help="the platform's base URL, e.g. http://10.1.0.2:8600"),
                admin_key: str | None = typer.Option(None, "--admin-key", envvar="YUNGU_API_KEY",
                                                     help="a Yungu admin key of the target: register the tester")) -> None:
    """Test any implementation of the federation protocol at a URL / 协议一致性测试."""
    from yungu.cli.conformance import run

    ok = run(target, admin_key, typer.echo)
    if not ok:
        raise typer.Exit(1)

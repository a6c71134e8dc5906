"""``yungu platform``: this platform's federation identity / 本平台身份."""

from __future__ import annotations

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import Output, OutputOpt, api_errors, console, emit_json, table

app = typer.Typer(help="This platform's identity and keys / 平台身份与密钥", no_args_is_help=True)
UrlOpt = typer.Option(None, "--url", envvar="YUNGU_URL", help="platform URL")
KeyOpt = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY", help="API key")


@app.command()
@api_errors
def show(output: Output = OutputOpt, url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """Platform id, public keys and peers / 平台 ID、公钥与对等平台."""
    doc = ApiClient(url, key).get("/federation/platform")
    if output is Output.json:
        emit_json(doc)
        return
    console.print(f"[bold]{doc['platform_id']}[/]  {doc['name']}")
    table("密钥 Keys", ["key id", "status", "public key (Ed25519, base64)"],
          [[k["keyid"], k["status"], k["public_key"]] for k in doc["keys"]])
    table("对等平台 Peers", ["id", "state", "url", "offers", "open"],
          [[p["id"], p["state"], p["base_url"], p["offers"], p["open_delegations"]] for p in doc["peers"]])


@app.command("rotate-key")
@api_errors
def rotate_key(url: str | None = UrlOpt, key: str | None = KeyOpt) -> None:
    """New identity key; peers are told, signed with the old one / 轮换密钥."""
    emit_json(ApiClient(url, key).post("/federation/keys/rotate"))

"""``yungu screen``: print the big screen's address and a one-time kiosk sign-in link."""

from __future__ import annotations

from pathlib import Path

import typer

from yungu.cli.client import ApiClient
from yungu.cli.output import api_errors, console, emit_json, fail


@api_errors
def screen(url: str | None = typer.Option(None, "--url", envvar="YUNGU_URL", help="platform URL"),
           key: str | None = typer.Option(None, "--api-key", envvar="YUNGU_API_KEY", help="operator or admin key"),
           data_dir: Path = typer.Option(Path(".yungu"), "--data-dir",
                                         help="where `yungu server` keeps admin.key (used when no key is given)"),
           json_out: bool = typer.Option(False, "--json", help="print JSON / 输出 JSON")) -> None:
    """Print the big screen (大屏) URL and a single-use sign-in link for a kiosk display (valid 10 min).

    打印大屏地址和一次性登录链接（10 分钟内有效，仅可使用一次），供展示屏免键盘登录。
    """
    if not key and (data_dir / "admin.key").exists():
        key = (data_dir / "admin.key").read_text().strip()
    if not key:
        fail("no operator key: set YUNGU_API_KEY or pass --api-key / 缺少运营密钥：请设置 YUNGU_API_KEY",
             "the server prints the admin key at first start and keeps it in .yungu/admin.key")
    api = ApiClient(url, key)
    t = api.post("/session/tickets", params={"next": "/screen"})
    link = api.url + t["path"]
    if json_out:
        emit_json({"screen": api.url + "/screen", "console": api.url + "/", "kiosk_link": link,
                   "expires_in_s": t["expires_in_s"]})
        return
    console.print(f"Big screen 大屏:   {api.url}/screen")
    console.print(f"Console 控制台:    {api.url}/")
    console.print(f"Kiosk link 一次性登录链接 (valid {t['expires_in_s'] // 60} min, single use):")
    print(link)

"""Shared CLI output: Rich tables for people, ``--output json`` for scripts, clear errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from yungu.cli.client import ApiError

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOpt = typer.Option(Output.table, "--output", "-o", help="table or json / 输出格式")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, header_style="bold cyan")
    for c in columns:
        t.add_column(c, overflow="fold")  # ids must stay whole: people paste them into other commands
    for r in rows:
        t.add_row(*["" if v is None else escape(str(v)) for v in r])  # data, never markup
    console.print(t)


def fail(message: str, hint: str = "", code: int = 1) -> None:
    # Messages quote user input and files ("[[pool]] #5: unknown site"): print them as text,
    # never as Rich markup (which would eat anything in square brackets).
    err.print(f"[bold red]错误 Error:[/] {escape(message)}")
    if hint:
        err.print(f"[yellow]提示 Hint:[/] {escape(hint)}")
    raise typer.Exit(code)


def api_errors(fn: F) -> F:
    """Turn API problems into one clear message and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ApiError as exc:
            hint = {401: "set YUNGU_API_KEY (see the key printed by `yungu server`) / 请设置 YUNGU_API_KEY",
                    403: "this key's role may not do that / 当前密钥角色无此权限",
                    404: "check the id with `yungu jobs` / 请用 `yungu jobs` 核对 ID"}.get(exc.status, "")
            fail(f"{exc.title}: {exc.detail}", hint, 2 if 400 <= exc.status < 500 else 1)

    return wrapper  # type: ignore[return-value]

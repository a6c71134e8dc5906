"""The ``yungu`` executable: the CLI plus ``yungu server``, which needs the composition root."""

from __future__ import annotations

from pathlib import Path

import typer

from yungu.cli.main import app
from yungu.cli.output import fail


@app.command()
def server(host: str = typer.Option("127.0.0.1", help="bind address"),
           port: int = typer.Option(8600, help="port"),
           data_dir: Path = typer.Option(Path(".yungu"), "--data-dir", help="database, logs, keys"),
           config: Path | None = typer.Option(None, "--config", help="platform TOML (default: embedded six-region world)"),
           db_url: str | None = typer.Option(None, "--db-url", envvar="YUNGU_DB_URL",
                                             help="postgresql://... (default: SQLite in the data dir)"),
           demo: bool = typer.Option(False, "--demo", help="submit a few demo jobs for the demo-lab tenant"),
           api_only: bool = typer.Option(False, "--api-only",
                                         help="serve the API only: never run the control loop (another server on "
                                              "the same database leads) / 仅提供 API，不运行控制循环")) -> None:
    """Start the platform (API + control loop) / 启动平台."""
    from yungu.app.server import serve
    from yungu.domain.errors import YunguError

    try:
        serve(host, port, data_dir, config, db_url, demo, api_only=api_only)
    except YunguError as exc:
        fail(exc.message, "check the --config file / 请检查配置文件")


@app.command()
def gateway(host: str = typer.Option("127.0.0.1", help="bind address"),
            port: int = typer.Option(8601, help="port"),
            data_dir: Path = typer.Option(Path(".yungu"), "--data-dir", help="the platform's data dir"),
            config: Path | None = typer.Option(None, "--config", help="platform TOML"),
            db_url: str | None = typer.Option(None, "--db-url", envvar="YUNGU_DB_URL", help="postgresql://...")) -> None:
    """Run the token gateway (/v1) as its own process / 独立运行令牌网关."""
    from yungu.app.gateway_server import serve_gateway

    serve_gateway(host, port, data_dir, config, db_url)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``yungu demo ...``: self-contained demonstrations that start real platforms on this machine."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from yungu.cli.output import console, fail

app = typer.Typer(help="Demonstrations / 演示", no_args_is_help=True)


@app.command("federation")
def federation(platforms: int = typer.Option(6, "--platforms", min=2, max=6, help="how many platforms (2..6)"),
               jobs: int = typer.Option(12, "--jobs", min=1, max=2000, help="jobs submitted in Beijing"),
               check: bool = typer.Option(False, "--check", help="self-test: exit non-zero on any failure"),
               data_dir: Path | None = typer.Option(None, "--data-dir", help="keep the platforms' data here"),
               keep: bool = typer.Option(False, "--keep", help="leave the platforms running (Ctrl-C stops them)")) -> None:
    """Six independently run platforms (和京芜贵渝苏), peered; jobs submitted in Beijing run in Horinger.
    六个独立平台互联：北京提交的作业在和林格尔运行，双方记账并清算。"""
    from yungu.cli import federation_demo as fd

    t0 = time.monotonic()
    root = data_dir or Path(tempfile.mkdtemp(prefix="yungu-fed-demo-"))
    ps = fd.make_platforms(root, platforms, {"lease_ttl_s": 20, "renew_every_s": 2, "max_clock_skew_s": 2,
                                             "stop_budget_s": 4, "suspect_after_s": 3})
    origin = ps[0]
    console.print(f"[bold]联邦演示 Federation demo[/]: {len(ps)} platforms under {root}")
    try:
        for p in ps:
            p.start()
        for p in ps:
            p.wait_ready()
        for p in ps:
            console.print(f"  {p.id:18} {p.url}")
        fd.peer_all(ps)
        fd.wait_offers(ps)
        ran = fd.ran_file(root)
        ids = fd.submit_jobs(origin, jobs, ran)
        console.print(f"submitted {len(ids)} jobs at {origin.id} / 已在北京提交 {len(ids)} 个作业")
        done = fd.wait_jobs(origin, ids, timeout=max(60.0, jobs * 0.5))
        fd.wait_receipts(ps, timeout=30)
        period = datetime.now(UTC).astimezone().strftime("%Y-%m")
        from yungu.engines.ledger.rating import period_of

        period = period_of(datetime.now(UTC))
        result = fd.check(ps, origin, ids, done, ran, period)
        for plat, n in sorted(result.where.items()):
            console.print(f"  ran on {plat:18} {n} jobs")
        for prob in result.problems:
            console.print(f"[red]problem:[/] {prob}")
        console.print(f"({time.monotonic() - t0:.1f} s)")
        typer.echo(result.line())
        if check and (result.problems or result.lost or result.duplicated or result.net_fen != 0
                      or result.delegated == 0):
            raise typer.Exit(1)
        if keep:
            console.print("platforms keep running; Ctrl-C stops them / 按 Ctrl-C 停止")
            while True:
                time.sleep(1)
    except RuntimeError as exc:
        fail(str(exc), f"see the logs under {root} / 日志见 {root}")
    except KeyboardInterrupt:
        pass
    finally:
        for p in ps:
            p.stop()
        fd.remove_shared(root)

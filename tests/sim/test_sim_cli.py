"""`yungu sim` end to end on a tiny canonical trace (no shared data needed), and bad input."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from yungu.cli.main import app

SCENARIO = """
[scenario]
name = "tiny"
start = "2023-03-01T00:00:00Z"
round_interval_s = 60
[trace]
format = "canonical"
path = "trace.csv"
[[site]]
id = "a"
electricity_price_cny_per_kwh = "0.5"
[[site]]
id = "b"
electricity_price_cny_per_kwh = "0.9"
[[pool]]
id = "a-a100"
site = "a"
accelerator = "A100"
nodes = 2
price_cny_per_device_hour = "10"
[[pool]]
id = "b-h100"
site = "b"
accelerator = "H100"
nodes = 1
price_cny_per_device_hour = "25"
[run]
policies = ["yungu", "fifo-backfill"]
"""

TRACE = """id,submit_time,duration,num_gpus,cluster,deadline
j1,0,3600,8,a,
j2,60,1800,4,b,14400
j3,120,7200,16,a,
bad,xx,600,1,a,
j4,300,600,1,b,
"""


def test_sim_writes_report_and_counts_skipped_rows(tmp_path: Path):
    (tmp_path / "trace.csv").write_text(TRACE)
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["sim", str(sc), "--out", str(out)])
    assert r.exit_code != 0
    assert "trace.csv:5" in r.output and "submit_time" in r.output
    r = CliRunner().invoke(app, ["sim", str(sc), "--out", str(out), "--skip-bad-rows", "--lp"])
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    assert "Skipped 1 malformed trace rows" in report
    assert "| yungu | 4 | 4 | 0 |" in report and "| fifo-backfill | 4 | 4 | 0 |" in report
    assert "LP optimum bound" in report
    assert (out / "policies.png").stat().st_size > 1000 and (out / "sites-yungu.png").exists()


def test_sim_unknown_policy_and_missing_file(tmp_path: Path):
    (tmp_path / "trace.csv").write_text(TRACE)
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO)
    r = CliRunner().invoke(app, ["sim", str(sc), "--policy", "nope", "--skip-bad-rows"])
    assert r.exit_code != 0 and "unknown policy" in r.output
    r = CliRunner().invoke(app, ["sim", str(tmp_path / "missing.toml")])
    assert r.exit_code != 0 and "cannot read scenario" in r.output

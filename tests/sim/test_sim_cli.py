"""`yungu sim` end to end on a tiny canonical trace (no shared data needed), and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_errors_print_square_brackets_as_written(tmp_path: Path):
    """Messages quote the file ("[[pool]] #3"): printed as text, not eaten as Rich markup."""
    (tmp_path / "trace.csv").write_text(TRACE)
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO + '[[pool]]\nid = "c"\nsite = "zz"\naccelerator = "A100"\nnodes = 1\nprice_cny_per_device_hour = "1"\n')
    r = CliRunner().invoke(app, ["sim", str(sc)])
    assert r.exit_code != 0
    assert "[[pool]] #3: unknown site 'zz'" in " ".join(r.output.split())  # (Rich wraps long lines)


def test_canonical_trace_honours_window_and_clusters(tmp_path: Path):
    from yungu.adapters.traces.scenario import load_scenario

    (tmp_path / "trace.csv").write_text(TRACE.replace("bad,xx,600,1,a,\n", "") + "j5,90000,600,1,a,\n")
    sc = tmp_path / "s.toml"
    body = SCENARIO.replace('path = "trace.csv"', 'path = "trace.csv"\nfrom_s = 60\nto_s = 86400\n[trace.clusters]\na = "b"')
    sc.write_text(body)
    got = load_scenario(sc).scenario.jobs
    # j1 (t=0) before the window, j5 after it, j2/j4 from cluster b (not listed): only j3 stays,
    # submitted 60 s into the window, from the region cluster a maps to.
    assert [(j.id, j.submit_s, j.home) for j in got] == [("j3", 60.0, "b")]


def test_trace_options_a_format_does_not_understand_are_refused(tmp_path: Path):
    from yungu.adapters.traces.scenario import load_scenario
    from yungu.domain.errors import InvalidInput

    (tmp_path / "trace.csv").write_text(TRACE)
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.replace('path = "trace.csv"', 'path = "trace.csv"\ngpu_type_map = { V100 = "A100" }'))
    with pytest.raises(InvalidInput, match="gpu_type_map not understood for format 'canonical'"):
        load_scenario(sc)
    sc.write_text(SCENARIO.replace('path = "trace.csv"', 'path = "trace.csv"\nfrom_s = 100\nto_s = 50'))
    with pytest.raises(InvalidInput, match="from_s < to_s"):
        load_scenario(sc)


def test_report_gives_wall_times_and_plots_the_signal_optimised(tmp_path: Path):
    (tmp_path / "trace.csv").write_text(TRACE.replace("bad,xx,600,1,a,\n", ""))
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.replace("[[site]]\nid = \"a\"", "[[site]]\nid = \"a\"", 1))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["sim", str(sc), "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| policy"))
    assert header.endswith("| wall s |")
    row = next(line for line in report.splitlines() if line.startswith("| yungu |"))
    assert float(row.rstrip(" |").rsplit("|", 1)[1]) >= 0
    assert "wall s" in r.output  # the table printed on the terminal has it too


def test_scenario_may_add_accelerators_and_drop_overlong_jobs(tmp_path: Path):
    from yungu.adapters.traces.scenario import load_scenario
    from yungu.domain.errors import InvalidInput

    (tmp_path / "trace.csv").write_text(TRACE.replace("bad,xx,600,1,a,\n", ""))
    extra = ('[accelerator.T4]\nvendor = "NVIDIA"\nkind = "gpu"\nmemory_gb = 16\ntdp_w = 70\n'
             'tflops = { fp32 = 8.1 }\nsources = ["NVIDIA T4 datasheet"]\n')
    body = SCENARIO.replace('path = "trace.csv"', 'path = "trace.csv"\nmax_duration_s = 3600') + extra
    body = body.replace('accelerator = "H100"', 'accelerator = "T4"')
    sc = tmp_path / "s.toml"
    sc.write_text(body)
    got = load_scenario(sc).scenario
    assert "T4" in got.catalogue and {p.accelerator for p in got.world.pools} == {"A100", "T4"}
    assert sorted(j.id for j in got.jobs) == ["j1", "j2", "j4"]  # j3 (7,200 s) is longer than max_duration_s
    sc.write_text(body.replace("[accelerator.T4]", "[accelerator.A100]"))
    with pytest.raises(InvalidInput, match="A100 already in the catalogue"):
        load_scenario(sc)

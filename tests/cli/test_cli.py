"""The real ``yungu`` command against a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import ServerProcess, run_cli, yungu_exe


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("cli") / "data"
    data.mkdir()
    srv = ServerProcess(data).start()
    yield srv
    srv.stop()


yungu = run_cli


@pytest.fixture(scope="module")
def tenant_key(server: ServerProcess) -> str:
    t = json.loads(yungu(server, "admin", "tenant", "create", "cli-lab", "-o", "json").stdout)
    k = json.loads(yungu(server, "admin", "key", "create", "--role", "tenant", "--tenant", t["id"], "-o", "json").stdout)
    return str(k["secret"])


def wait_state(server: ServerProcess, key: str, job_id: str, states: set[str]) -> dict:
    for _ in range(200):
        job = json.loads(yungu(server, "status", job_id, "-o", "json", key=key).stdout)
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_submit_status_logs_jobs(server: ServerProcess, tenant_key: str) -> None:
    job = json.loads(yungu(server, "submit", "echo hello-cli; echo oops >&2", "--name", "hi", "-o", "json", key=tenant_key).stdout)
    done = wait_state(server, tenant_key, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded" and [e["to"] for e in done["events"]][-1] == "succeeded"
    assert yungu(server, "logs", job["id"], key=tenant_key).stdout.strip() == "hello-cli"
    assert yungu(server, "logs", job["id"], "--stream", "stderr", key=tenant_key).stdout.strip() == "oops"
    table = yungu(server, "jobs", key=tenant_key).stdout
    assert job["id"] in table and "succeeded" in table


def test_jobs_all_walks_every_page_and_keeps_stdout_clean(server: ServerProcess, tenant_key: str) -> None:
    ids = {json.loads(yungu(server, "submit", "true", "--name", f"page{i}", "-o", "json", key=tenant_key).stdout)["id"]
           for i in range(5)}
    one_page = json.loads(yungu(server, "jobs", "--limit", "2", "-o", "json", key=tenant_key).stdout)
    assert len(one_page) == 2
    every = json.loads(yungu(server, "jobs", "--limit", "2", "--all", "-o", "json", key=tenant_key).stdout)
    got = [j["id"] for j in every]
    assert ids <= set(got) and len(got) == len(set(got))  # all pages, nothing twice


def test_logs_follow_streams_until_the_job_ends(server: ServerProcess, tenant_key: str) -> None:
    job = json.loads(yungu(server, "submit", "for i in 1 2 3; do echo line$i; sleep 0.3; done", "-o", "json", key=tenant_key).stdout)
    out = yungu(server, "logs", "-f", job["id"], key=tenant_key).stdout
    assert out.split() == ["line1", "line2", "line3"]


def test_submit_from_yaml_file_and_cancel(server: ServerProcess, tenant_key: str, tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("name: sleeper\ncommand: sleep 60\nresources:\n  cpus: 2\n  memory_gb: 4\npriority: 5\n")
    job = json.loads(yungu(server, "submit", "-f", str(f), "-o", "json", key=tenant_key).stdout)
    assert job["spec"]["resources"]["cpus"] == 2 and job["spec"]["priority"] == 5
    wait_state(server, tenant_key, job["id"], {"running"})
    yungu(server, "cancel", job["id"], key=tenant_key)
    assert wait_state(server, tenant_key, job["id"], {"cancelled", "failed", "succeeded"})["state"] == "cancelled"


def test_sites_and_pools_tables(server: ServerProcess) -> None:
    sites = json.loads(yungu(server, "sites", "-o", "json").stdout)
    assert {s["region_id"] for s in sites} == {"horinger", "beijing", "wuhu", "guizhou", "chongqing", "suzhou"}
    out = yungu(server, "pools").stdout
    assert "horinger-h800" in out and "智算" in out


@pytest.mark.parametrize(("args", "needle"), [
    (("submit", "true", "--cpus", "-3"), "cpus"),
    (("submit", "true", "--pool", "nowhere"), "unknown pool"),
    (("status", "no-such-job"), "no job"),
])
def test_bad_input_gives_a_clear_message_and_exit_2(server: ServerProcess, tenant_key: str, args: tuple, needle: str) -> None:
    r = yungu(server, *args, key=tenant_key, check=False)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_malformed_yaml_and_missing_key(server: ServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    r = yungu(server, "submit", "-f", str(f), check=False)
    assert r.returncode != 0 and "not valid YAML" in r.stderr
    env = {**os.environ, "YUNGU_URL": server.url, "YUNGU_API_KEY": ""}
    r = subprocess.run([yungu_exe(), "jobs"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "YUNGU_API_KEY" in r.stderr


def test_unreachable_platform_is_explained(tmp_path: Path) -> None:
    env = {**os.environ, "YUNGU_URL": "http://127.0.0.1:9", "YUNGU_API_KEY": "x"}
    r = subprocess.run([yungu_exe(), "jobs"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "yungu server" in r.stderr


def test_sites_check_reports_each_executor(server: ServerProcess) -> None:
    items = json.loads(yungu(server, "sites", "check", "-o", "json").stdout)
    assert len(items) == 6 and all(i["reachable"] and i["executor_kind"] == "local" for i in items)
    assert all(i["engine"]["cpus"] >= 1 for i in items)
    assert "REACHABLE" in yungu(server, "sites", "check").stdout

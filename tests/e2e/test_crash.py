"""Crash test: kill -9 the platform at random moments; no job is lost or run twice.

200 short jobs each append their own id to a shared file. The server is killed with
SIGKILL three times at random moments and restarted each time. At the end every job is in
a terminal state and every id appears in the file exactly once.

The world is the embedded default one plus an operator bind mount (the jobs run in the
sandbox, which shows them nothing of the host but what the operator binds: here the
directory of the shared file).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess, default_world_with
from tests.executors.sandbox_env import binds_toml, shared_dir

pytestmark = [pytest.mark.slow]

JOBS = 200


def test_kill_dash_nine_three_times_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    data = tmp_path / "data"
    data.mkdir()
    out = shared_dir("crash") / "ran.txt"
    out.touch()
    out.chmod(0o666)
    world = ["--config", str(default_world_with(tmp_path / "world.toml", binds_toml()))]
    srv = ServerProcess(data, extra=world).start()
    admin = {"Authorization": f"Bearer {srv.admin_key}"}
    tenant = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "crash-lab"}, headers=admin).json()["id"]
    submitted: list[str] = []
    kills_at = sorted(rng.sample(range(20, JOBS), 3))
    for i in range(JOBS):
        body = {"name": f"c{i}", "command": f"sleep 0.{rng.randint(0, 3)}; echo $YUNGU_JOB_ID >> {out}",
                "tenant_id": tenant}
        for _attempt in range(50):  # the server may be down or restarting: retry with the same key
            try:
                r = httpx.post(srv.url + "/api/v1/jobs", json=body,
                               headers={**admin, "Idempotency-Key": f"crash-{i}"}, timeout=5)
                submitted.append(r.json()["id"])
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        if kills_at and i == kills_at[0]:
            kills_at.pop(0)
            time.sleep(rng.uniform(0.0, 0.3))
            srv.kill9()
            srv = ServerProcess(data, port=srv.port, extra=world).start()
    assert len(set(submitted)) == JOBS
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = {}
        page = httpx.get(srv.url + "/api/v1/jobs", params={"limit": 500}, headers=admin).json()["items"]
        states = {j["id"]: j["state"] for j in page}
        if all(s in ("succeeded", "failed", "cancelled") for s in states.values()) and len(states) == JOBS:
            break
        time.sleep(0.5)
    srv.stop()
    assert len(states) == JOBS
    assert set(states.values()) == {"succeeded"}, {s for s in states.values()}
    lines = out.read_text().split()
    assert sorted(lines) == sorted(submitted), "every job ran exactly once"


def test_kill_dash_nine_while_launches_wait_for_the_launcher_runs_each_job_once(tmp_path: Path) -> None:
    """The local executor accepts a launch (its record on disk) before its launcher process
    starts it. A burst of jobs, and ``kill -9`` of the platform at a moment when some are
    accepted and not started: the restart answers them (lost: never started), the loop
    requeues them, and every job runs exactly once."""
    import fcntl
    import threading
    from concurrent.futures import ThreadPoolExecutor

    data = tmp_path / "data"
    data.mkdir()
    out = shared_dir("crash-launch") / "ran.txt"
    out.touch()
    out.chmod(0o666)
    world = ["--config", str(default_world_with(tmp_path / "world.toml", binds_toml()))]
    srv = ServerProcess(data, extra=world).start()
    admin = {"Authorization": f"Bearer {srv.admin_key}"}
    tenant = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "burst-lab"}, headers=admin).json()["id"]
    runs = data / "executors" / "local" / "runs"

    def accepted_not_started() -> list[str]:
        if not runs.is_dir():
            return []
        return [d.name for d in runs.iterdir() if (d / "launch.json").exists()
                and not any((d / f"replica-0.{x}").exists() for x in ("pid", "start", "exit"))]

    up = threading.Event()  # clients wait while the platform is down (they do not flood its start)
    up.set()

    def submit(i: int) -> str:
        body = {"name": f"b{i}", "command": f"echo $YUNGU_JOB_ID >> {out}", "tenant_id": tenant}
        for _attempt in range(100):  # down or restarting: retry with the same key
            up.wait(120)
            try:
                r = httpx.post(srv.url + "/api/v1/jobs", json=body,
                               headers={**admin, "Idempotency-Key": f"burst-{i}"}, timeout=10)
                if r.status_code < 300:
                    return str(r.json()["id"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"job {i} was never accepted")

    n = 120
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(submit, i) for i in range(n)]
        deadline = time.monotonic() + 60
        while not accepted_not_started() and time.monotonic() < deadline:
            time.sleep(0.005)
        up.clear()
        srv.kill9()
        lock = os.open(data / "executors" / "local" / "executor.lock", os.O_RDWR)
        try:  # the old launcher lets go of the data dir once it has seen its platform die
            deadline = time.monotonic() + 20
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(lock, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the launcher outlived its platform"
                    time.sleep(0.05)
        finally:
            os.close(lock)
        window = accepted_not_started()
        assert window, "the kill landed while launches were accepted and not started"
        srv = ServerProcess(data, port=srv.port, extra=world).start(timeout=90)
        up.set()
        ids = [f.result() for f in futures]
    assert len(set(ids)) == n
    deadline = time.monotonic() + 240
    jobs: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        page = httpx.get(srv.url + "/api/v1/jobs", params={"limit": 500}, headers=admin).json()["items"]
        jobs = {j["id"]: j for j in page}
        if len(jobs) == n and all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs.values()):
            break
        time.sleep(0.5)
    srv.stop()
    assert {j["state"] for j in jobs.values()} == {"succeeded"}, {j["state"] for j in jobs.values()}
    assert sorted(out.read_text().split()) == sorted(ids), "every job ran exactly once"
    requeued = {rid.rsplit(".", 1)[0] for rid in window}
    assert all(int(jobs[j]["attempt"]) >= 1 for j in requeued if j in jobs), "never started: requeued under a new id"

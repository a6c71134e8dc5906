"""Crash test: kill -9 the platform at random moments; no job is lost or run twice.

200 short jobs each append their own id to a shared file. The server is killed with
SIGKILL three times at random moments and restarted each time. At the end every job is in
a terminal state and every id appears in the file exactly once.

The world is the embedded default one plus an operator bind mount (the jobs run in the
sandbox, which shows them nothing of the host but what the operator binds: here the
directory of the shared file).
"""

from __future__ import annotations

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

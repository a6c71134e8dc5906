"""The composition root accepts a clock and executors: the shipped world, the real API and
store, a fake engine and a mock clock, driven round by round."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.tenancy import Role
from yungu.testing import FakeCluster, FakeExecutor, MockClock, Script
from yungu.testing.world import T0


def test_build_with_a_mock_clock_and_a_fake_engine(tmp_path: Path) -> None:
    clock = MockClock(T0)
    cluster = FakeCluster(clock, script=lambda launch: Script(run_s=120, stdout=b"done\n"))
    c = build(tmp_path / "data", start_loop=False, clock=clock, executors={"local": FakeExecutor("local", cluster)},
              lease_ttl_s=3600)
    try:
        assert c.role == "standby" and not c.reconciler.running  # start_loop=False: it did not compete
        _, admin = c.store.create_key(c.ids.new(), Role.ADMIN, None, "a", clock.now())
        h = {"Authorization": f"Bearer {admin}"}
        with TestClient(create_app(c)) as http:
            tenant = http.post("/api/v1/admin/tenants", json={"name": "lab"}, headers=h).json()["id"]
            jid = http.post("/api/v1/jobs", json={"name": "j", "command": "train", "tenant_id": tenant,
                                                  "resources": {"cpus": 2}}, headers=h).json()["id"]
            c.reconciler.run_once()  # without the lease it decides, but acts on no executor
            assert http.get(f"/api/v1/jobs/{jid}", headers=h).json()["state"] == "scheduled"
            assert cluster.submits == []
            c.leader.tick()  # alone, it takes the lease (and starts the loop: stopped to drive it by hand)
            assert c.role == "leader"
            for _ in range(500):  # the take-over thread opens the executors, then starts the loop
                if c.reconciler.running:
                    break
                time.sleep(0.01)
            c.reconciler.stop()
            c.reconciler.run_once()
            job = http.get(f"/api/v1/jobs/{jid}", headers=h).json()
            assert job["state"] == "running" and job["submitted_at"] == T0.isoformat()
            clock.jump(120)
            c.reconciler.run_once()
            job = http.get(f"/api/v1/jobs/{jid}", headers=h).json()
            assert job["state"] == "succeeded"
            assert job["started_at"] == T0.isoformat() and job["finished_at"] == clock.now().isoformat()
            assert http.get(f"/api/v1/jobs/{jid}/logs", headers=h).json()["data"] == "done\n"
            assert cluster.submits == [f"{jid}.0"]
    finally:
        c.close()
        cluster.close()


def test_a_standby_serves_logs_of_local_runs_from_the_shared_run_dirs(tmp_path: Path) -> None:
    from yungu.adapters.executors.standby import StandbyLocal
    from yungu.ports.executor import ExecError, ExecErrorCode, LogChunk

    runs = tmp_path / "runs" / "job-1.0"
    runs.mkdir(parents=True)
    (runs / "replica-0.stdout.log").write_bytes(b"hello\n")
    sb = StandbyLocal("local", tmp_path)
    chunk = sb.logs("job-1.0")
    assert isinstance(chunk, LogChunk) and chunk.data == b"hello\n" and chunk.eof
    assert isinstance(sb.logs("../etc"), ExecError)
    for got in (sb.status("job-1.0"), sb.cancel("job-1.0"), sb.list_active(), sb.observe(["job-1.0"])["job-1.0"]):
        assert isinstance(got, ExecError) and got.code is ExecErrorCode.UNREACHABLE  # the leader's
    assert sb.check()["reachable"] is False

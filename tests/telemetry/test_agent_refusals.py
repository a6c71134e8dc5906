"""One sample the platform refuses (403: it names a job this node may not meter) never holds
back the others: the agent bisects the batch, drops only the refused sample and delivers the
rest. Real processes: ``yungu server`` with the embedded world and the real agent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess
from yungu.adapters.store.db import create_engine
from yungu.adapters.telemetry.agent import Agent, AgentConfig
from yungu.adapters.telemetry.store import TelemetryStore

pytestmark = pytest.mark.slow


def test_a_refused_sample_is_dropped_alone(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        admin = {"Authorization": f"Bearer {srv.admin_key}"}
        r = httpx.post(srv.url + "/api/v1/telemetry/nodes", json={"node_id": "agent-r", "pool_id": "horinger-cpu"},
                       headers=admin)
        assert r.status_code == 201, r.text
        key = r.json()["node_key"]
        t = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "lab-r"}, headers=admin).json()
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        job = httpx.post(srv.url + "/api/v1/jobs", json={"name": "later", "command": "true", "earliest_start": later,
                                                          "tenant_id": t["id"]}, headers=admin)
        assert job.status_code == 201, job.text
        agent = Agent(AgentConfig(srv.url, "agent-r", key, tmp_path / "agent", batch=16, timeout_s=5.0))
        for _ in range(10):
            agent.record()
        # Doctor the 4th buffered sample: it claims CPU time for a job no executor runs.
        rows = agent.buffer.oldest(100)
        bad = rows[3]
        bad["jobs"] = [{"job_id": job.json()["id"], "cpu_seconds": 1.0, "gpus": [], "cores": 1}]
        agent.buffer.ack([int(bad["seq"])])
        agent.buffer.put(bad)
        sent = agent.flush(max_batches=100, force=True)
        assert len(agent.buffer) == 0, "nothing may stay buffered behind a refused sample"
        assert sent == 10
        agent.close()
    finally:
        srv.stop()
    store = TelemetryStore(create_engine(f"sqlite:///{tmp_path / 'data' / 'yungu.db'}"))
    seqs = store.seqs("agent-r")
    assert seqs == [int(s["seq"]) for s in rows if s["seq"] != bad["seq"]], json.dumps(seqs)

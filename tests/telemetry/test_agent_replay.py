"""The agent keeps sampling while the platform is down; after restart nothing is lost or doubled.

Real processes: ``yungu server`` as an OS process (SIGKILLed mid-run and restarted on the
same port and data directory), and the real agent (psutil sampling, on-disk buffer, HTTP).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess
from yungu.adapters.store.db import create_engine
from yungu.adapters.telemetry.agent import Agent, AgentConfig
from yungu.adapters.telemetry.store import TelemetryStore

pytestmark = pytest.mark.slow


def test_buffer_and_replay_across_platform_crash(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        admin = {"Authorization": f"Bearer {srv.admin_key}"}
        r = httpx.post(
            srv.url + "/api/v1/telemetry/nodes",
            json={"node_id": "agent-1", "pool_id": "horinger-cpu"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        key = r.json()["node_key"]
        agent = Agent(
            AgentConfig(
                srv.url,
                "agent-1",
                key,
                tmp_path / "agent",
                interval_s=0.05,
                batch=50,
                timeout_s=1.0,
                max_backoff_s=0.5,
                send_interval_s=0.2,
            )
        )
        stop = threading.Event()
        th = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
        th.start()
        time.sleep(1.5)
        srv.kill9()  # platform down: the agent keeps sampling into its buffer
        down_at = agent.buffer._next
        time.sleep(2.0)
        assert len(agent.buffer) > 0, "samples taken while the platform was down must be buffered"
        assert agent.buffer._next > down_at + 10, "sampling must not stop while the platform is down"
        srv.start()
        time.sleep(3.0)
        stop.set()
        th.join(timeout=30)
        agent.flush(max_batches=1000, force=True)
        produced = agent.buffer._next
        assert len(agent.buffer) == 0
        agent.close()
    finally:
        srv.stop()
    store = TelemetryStore(create_engine(f"sqlite:///{tmp_path / 'data' / 'yungu.db'}"))
    seqs = store.seqs("agent-1")
    assert seqs == list(range(produced)), "every sample exactly once, no gaps"
    assert store.counters().get("accepted") == produced


def test_agent_restart_never_reuses_a_seq(tmp_path: Path) -> None:
    from yungu.adapters.telemetry.buffer import SampleBuffer

    b = SampleBuffer(tmp_path / "b.db")
    first = [b.next_seq() for _ in range(5)]
    b.close()  # crash: the reservation survives
    b2 = SampleBuffer(tmp_path / "b.db")
    nxt = b2.next_seq()
    assert nxt > max(first)


def test_agent_sends_columns_and_splits_a_batch_the_platform_finds_too_large(tmp_path: Path) -> None:
    """A 413 never acknowledges (drops) samples: the agent halves the batch and sends again."""
    import json

    sizes: list[int] = []
    got: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        assert "columns" in body, "the agent sends the column form"
        n = len(body["columns"]["seq"])
        if len(req.content) > 20_000:
            return httpx.Response(413, json={"title": "Request body too large"})
        sizes.append(n)
        got.extend(body["columns"]["seq"])
        return httpx.Response(200, json={"accepted": n, "duplicates": 0, "quarantined": 0})

    agent = Agent(
        AgentConfig("http://platform", "n1", "k", tmp_path, batch=400, use_rapl=False, use_nvml=False)
    )
    agent._client = httpx.Client(base_url="http://platform", transport=httpx.MockTransport(handler))
    for _ in range(300):
        agent.record()
    agent.flush(max_batches=100, force=True)
    assert sorted(got) == list(range(300)) and len(agent.buffer) == 0
    assert max(sizes) < 300
    agent.close()

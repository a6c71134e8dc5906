"""Preemption on the live platform: a real ``yungu server``, its loop and local processes.

One pool of 8 devices. A priority-0 job holds all 8 and checkpoints: on SIGTERM it saves
its step to ``$YUNGU_CHECKPOINT_DIR`` and exits. (Jobs run in the default job sandbox, where
that directory is the job's own, bound at ``/checkpoint``.) A priority-10 job arrives: within a few
seconds the low job is stopped (SIGTERM, grace), requeued as attempt 1, the high job runs
on the freed devices, and afterwards the low job resumes from its checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = [pytest.mark.slow]

WORLD = """
[platform]
id = "yungu-preempt-test"
name = "preemption test"
[executor.local]
type = "local"
[[region]]
id = "horinger"
name = "Horinger"
home = true
[[site]]
id = "dc"
region = "horinger"
name = "dc"
lat = 40.4
lon = 111.8
executor = "local"
[[pool]]
id = "gpu8"
site = "dc"
compute_class = "intelligent"
accelerator = "A100"
accelerators_per_node = 8
nodes = 1
cpus_per_node = 16
memory_gb_per_node = 64
price_cny_per_device_hour = "10"
"""

# Counts to 60 in steps of 0.1 s; SIGTERM saves the step and exits; a new attempt resumes.
TRAINER = r"""
ck="$YUNGU_CHECKPOINT_DIR/step"; n=0
[ -f "$ck" ] && n=$(cat "$ck")
echo "attempt $YUNGU_REQUEST_ID resumes from $n"
trap 'echo $n > "$ck"; echo "checkpointed at $n"; exit 0' TERM
while [ "$n" -lt 60 ]; do n=$((n+1)); sleep 0.1; done
echo "trained to $n"
"""


def _get(srv: ServerProcess, path: str, h: dict[str, str]) -> Any:
    return httpx.get(srv.url + "/api/v1" + path, headers=h, timeout=10).json()


def _wait(srv: ServerProcess, h: dict[str, str], jid: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = _get(srv, f"/jobs/{jid}", h)
        if pred(job) or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_a_high_priority_job_preempts_a_running_one_within_seconds(tmp_path: Path) -> None:
    cfg = tmp_path / "world.toml"
    cfg.write_text(WORLD)
    data = tmp_path / "data"
    data.mkdir()
    srv = ServerProcess(data, extra=["--config", str(cfg)]).start(timeout=180)  # slow when the machine is busy
    try:
        h = {"Authorization": f"Bearer {srv.admin_key}"}
        tenant = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "lab"}, headers=h).json()["id"]
        gpus = {"cpus": 1, "memory_gb": 1, "accelerators": 8}
        low = httpx.post(srv.url + "/api/v1/jobs", headers=h, json={
            "name": "trainer", "command": TRAINER, "priority": 0, "resources": gpus, "tenant_id": tenant}).json()["id"]
        assert _wait(srv, h, low, lambda j: j["state"] == "running")["state"] == "running"
        time.sleep(1.5)  # let it make some progress
        t0 = time.monotonic()
        high = httpx.post(srv.url + "/api/v1/jobs", headers=h, json={
            "name": "urgent", "command": "echo high ran on $YUNGU_DEVICES; sleep 1", "priority": 10,
            "resources": gpus, "tenant_id": tenant}).json()["id"]
        got = _wait(srv, h, high, lambda j: j["state"] in ("running", "succeeded"), timeout=30)
        took = time.monotonic() - t0
        assert got["state"] in ("running", "succeeded"), got
        assert took < 10, f"the high-priority job took {took:.1f}s to start"
        print(f"\nhigh-priority job running {took:.2f}s after submission")

        lj = _get(srv, f"/jobs/{low}", h)
        assert lj["attempt"] >= 1, lj
        events = [(e["event"], e["to"]) for e in _get(srv, f"/jobs/{low}/events", h)["items"]]
        assert ("preempt", "preempted") in events and ("requeue", "queued") in events, events
        assert _wait(srv, h, high, lambda j: j["state"] == "succeeded")["state"] == "succeeded"
        done = _wait(srv, h, low, lambda j: j["state"] in ("succeeded", "failed"), timeout=60)
        assert done["state"] == "succeeded" and done["attempt"] == 1, (done["state"], done["reason"])
        log = _get(srv, f"/jobs/{low}/logs", h)["data"]
        resumed = int(log.split("resumes from ")[1].split()[0])
        assert resumed > 0, log  # attempt 1 started from the checkpoint attempt 0 saved
        assert "trained to 60" in log
    finally:
        srv.stop()

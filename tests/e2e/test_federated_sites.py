"""One platform, two kinds of site: a local one and a real Slurm cluster.

A job pinned to the Slurm site's pool really runs under Slurm through the whole platform
(API -> loop -> SlurmExecutor -> sbatch). When a site's engine is unreachable it receives no
new placements, its jobs wait with the reason recorded, and the other sites keep serving.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.executors.slurm_cluster import ClusterStartError, SlurmCluster, start_cluster
from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.tenancy import Role

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

WORLD = """
[platform]
id = "yungu-test"
name = "test"
[executor.local]
type = "local"
[executor.hpc]
type = "slurm"
slurm_conf = "{conf}"
command_timeout_s = 5
[[region]]
id = "horinger"
name = "Horinger"
home = true
[[site]]
id = "local-dc"
region = "horinger"
name = "local"
lat = 40.4
lon = 111.8
executor = "local"
[[site]]
id = "hpc-dc"
region = "horinger"
name = "hpc"
lat = 40.4
lon = 111.8
executor = "hpc"
[[pool]]
id = "local-cpu"
site = "local-dc"
compute_class = "general"
nodes = 1
cpus_per_node = 8
memory_gb_per_node = 8
[[pool]]
id = "hpc-cpu"
site = "hpc-dc"
compute_class = "supercomputing"
nodes = 2
cpus_per_node = 4
memory_gb_per_node = 3
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except (ClusterStartError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the Slurm test cluster could not start (install slurm-wlm and munge; run as root): {exc}")
    yield cluster
    cluster.stop()


def _wait(http: TestClient, h: dict[str, str], jid: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/api/v1/jobs/{jid}", headers=h).json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_slurm_site_runs_jobs_and_an_unreachable_site_does_not_stop_the_others(slurm: SlurmCluster, tmp_path: Path) -> None:
    cfg = tmp_path / "world.toml"
    cfg.write_text(WORLD.format(conf=slurm.conf))
    c = build(tmp_path / "data", config_path=cfg)
    try:
        _, admin = c.store.create_key(c.ids.new(), Role.ADMIN, None, "a", c.clock.now())
        t = c.store.create_tenant(c.ids.new(), "lab", c.clock.now())
        h = {"Authorization": f"Bearer {admin}"}
        with TestClient(create_app(c)) as http:
            body = {"name": "mpi", "command": "echo rank=$YUNGU_REPLICA", "pool": "hpc-cpu", "replicas": 2,
                    "resources": {"cpus": 4, "memory_gb": 1}, "tenant_id": t.id}
            jid = http.post("/api/v1/jobs", json=body, headers=h).json()["id"]
            job = _wait(http, h, jid, {"succeeded", "failed"})
            assert job["state"] == "succeeded", job
            log = http.get(f"/api/v1/jobs/{jid}/logs", headers=h).json()["data"]
            assert "rank=0" in log
            check = {i["site_id"]: i for i in http.get("/api/v1/sites/check", headers=h).json()["items"]}
            assert check["hpc-dc"]["reachable"] and check["hpc-dc"]["engine"]["cpus"] == 8

            slurm.stop()  # the engine goes away
            stuck = http.post("/api/v1/jobs", json={**body, "name": "waits"}, headers=h).json()["id"]
            ok = http.post("/api/v1/jobs", json={"name": "local", "command": "echo fine", "pool": "local-cpu",
                                                 "tenant_id": t.id}, headers=h).json()["id"]
            assert _wait(http, h, ok, {"succeeded", "failed"})["state"] == "succeeded"
            time.sleep(2)
            # Its launch was tried and may have got through: it stays placed and is retried with
            # the same request id; the loop marked the site down, so nothing new goes there.
            waiting = http.get(f"/api/v1/jobs/{stuck}", headers=h).json()
            assert waiting["state"] == "scheduled" and "dispatch retrying" in waiting["reason"], waiting
            later = http.post("/api/v1/jobs", json={**body, "name": "later"}, headers=h).json()["id"]
            time.sleep(2)
            queued = http.get(f"/api/v1/jobs/{later}", headers=h).json()
            assert queued["state"] == "queued" and "site hpc-dc unreachable" in queued["reason"], queued
            check = {i["site_id"]: i for i in http.get("/api/v1/sites/check", headers=h).json()["items"]}
            assert not check["hpc-dc"]["reachable"] and check["local-dc"]["reachable"]
    finally:
        c.close()

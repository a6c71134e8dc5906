"""``yungu server --api-only``: an API server that never runs the control loop.

A leader and an API-only server on one database (and, on one machine, one data dir): the
API-only one takes submissions and answers status reads while the leader's loop runs the
jobs; with the leader stopped it still never takes the lease (a standby would within 3.5 s)
and keeps accepting submissions, which the next leader runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = [pytest.mark.timeout(600)]


def _role(srv: ServerProcess) -> str:
    return str(httpx.get(srv.url + "/api/v1/health", timeout=5).json()["role"])


def _until_done(srv: ServerProcess, job: str, key: str, within_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    while True:
        got = httpx.get(srv.url + f"/api/v1/jobs/{job}", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert got.status_code == 200, got.text
        body: dict[str, object] = got.json()
        if body["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_api_only_server_serves_while_the_leader_runs_the_loop_and_never_takes_the_lease(
        tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if store == "postgresql" else None
    data = tmp_path / "data"
    data.mkdir()
    api = ServerProcess(data, db_url=url, extra=["--api-only"]).start(timeout=180)  # first: the lease is free
    leader = ServerProcess(data, db_url=url).start(timeout=180)
    try:
        assert _role(api) == "api-only" and _role(leader) == "leader"
        admin = {"Authorization": f"Bearer {api.admin_key}"}
        tenant = httpx.post(api.url + "/api/v1/admin/tenants", json={"name": "lab"}, headers=admin).json()["id"]
        key = httpx.post(api.url + "/api/v1/admin/keys", json={"role": "tenant", "tenant_id": tenant},
                         headers=admin).json()["secret"]
        th = {"Authorization": f"Bearer {key}"}
        r = httpx.post(api.url + "/api/v1/jobs", json={"name": "a", "command": "echo hi"}, headers=th)
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        done = _until_done(api, job, key)  # the leader's loop ran it; the api-only server reads it
        assert done["state"] == "succeeded", done
        assert httpx.get(api.url + "/api/v1/jobs/nope", headers=th).status_code == 404
        assert httpx.get(api.url + "/api/v1/health").json()["reconciler_rounds"] == 0  # no loop here

        leader.stop()  # releases the lease: a standby would take it at once
        time.sleep(5)
        assert _role(api) == "api-only"
        r = httpx.post(api.url + "/api/v1/jobs", json={"name": "b", "command": "true"}, headers=th)
        assert r.status_code == 201, r.text  # accepted while nobody leads
        later = r.json()["id"]
        assert _until_done(api, later, key, within_s=3)["state"] == "pending"  # and nobody runs it
        leader = ServerProcess(data, port=leader.port, db_url=url).start(timeout=180)
        assert _role(leader) == "leader"
        assert _until_done(api, later, key)["state"] == "succeeded"
    finally:
        leader.stop()
        api.stop()

"""The jobs API through the real app, store, control loop and local executor."""

from __future__ import annotations

import pytest

from tests.api.conftest import Platform

TERMINAL = {"succeeded", "failed", "cancelled"}


def test_submit_runs_a_real_process_and_serves_its_log(platform: Platform) -> None:
    _, h = platform.tenant("lab")
    r = platform.http.post("/api/v1/jobs", json={"name": "hello", "command": "echo 你好 $YUNGU_JOB_ID"}, headers=h)
    assert r.status_code == 201, r.text
    job = platform.wait(r.json()["id"], h, TERMINAL)
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    log = platform.http.get(f"/api/v1/jobs/{job['id']}/logs", headers=h).json()
    assert log["data"].strip() == f"你好 {job['id']}"
    events = platform.http.get(f"/api/v1/jobs/{job['id']}/events", headers=h).json()["items"]
    assert [e["to"] for e in events][:2] == ["queued", "scheduled"] and events[-1]["to"] == "succeeded"


def test_failure_exit_code_is_recorded(platform: Platform) -> None:
    _, h = platform.tenant("lab")
    jid = platform.http.post("/api/v1/jobs", json={"name": "f", "command": "exit 3"}, headers=h).json()["id"]
    job = platform.wait(jid, h, TERMINAL)
    assert job["state"] == "failed" and job["exit_code"] == 3 and "3" in job["reason"]


def test_cancel_stops_a_running_job(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    jid = p.http.post("/api/v1/jobs", json={"name": "s", "command": "sleep 60"}, headers=h).json()["id"]
    assert p.wait(jid, h, {"running"})["state"] == "running"
    assert p.http.post(f"/api/v1/jobs/{jid}/cancel", headers=h).status_code == 202
    assert p.wait(jid, h, TERMINAL)["state"] == "cancelled"


def test_a_tenant_never_sees_or_touches_another_tenants_jobs(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, alice = p.tenant("alice")
    _, bob = p.tenant("bob")
    jid = p.http.post("/api/v1/jobs", json={"name": "a", "command": "sleep 5"}, headers=alice).json()["id"]
    for method, path in (("get", f"/api/v1/jobs/{jid}"), ("get", f"/api/v1/jobs/{jid}/logs"),
                         ("get", f"/api/v1/jobs/{jid}/events"), ("post", f"/api/v1/jobs/{jid}/cancel")):
        r = getattr(p.http, method)(path, headers=bob)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert p.http.get("/api/v1/jobs", headers=bob).json()["items"] == []
    assert p.http.get("/api/v1/jobs", headers=alice).json()["items"][0]["id"] == jid
    assert not p.c.store.get(jid).cancel_requested


def test_idempotency_key_replays_and_conflicts(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    hk = {**h, "Idempotency-Key": "abc-1"}
    a = p.http.post("/api/v1/jobs", json={"name": "x", "command": "true"}, headers=hk)
    b = p.http.post("/api/v1/jobs", json={"name": "x", "command": "true"}, headers=hk)
    assert (a.status_code, b.status_code) == (201, 200) and a.json()["id"] == b.json()["id"]
    c = p.http.post("/api/v1/jobs", json={"name": "x", "command": "false"}, headers=hk)
    assert c.status_code == 409 and c.json()["code"] == "conflict"
    assert len(p.http.get("/api/v1/jobs", headers=h).json()["items"]) == 1


BAD = [
    ({"name": "x", "command": "true", "resources": {"cpus": -1}}, 422, "cpus"),
    ({"name": "x", "command": "true", "resources": {"accelerators": 100000}}, 422, "accelerators"),
    ({"name": "x", "command": "true", "resources": {"cpus": "four"}}, 422, "cpus"),
    ({"name": "x", "command": "true", "pool": "mars-1"}, 422, "unknown pool"),
    ({"name": "x", "command": "true", "resources": {"accelerator_types": ["TPUv9"]}}, 422, "unknown accelerator"),
    ({"name": "x", "command": "true", "max_price_cny_per_hour": 1.5}, 422, "decimal string"),
    ({"name": "x", "command": "true", "deadline": "2026-11-23T08:00:00"}, 422, "time zone"),
    ({"name": "x", "command": "true", "surprise": 1}, 422, "surprise"),
    ({"name": "x"}, 422, "command"),
    ({"name": "x", "command": "true", "replicas": 0}, 422, "replicas"),
    ({"name": "x", "command": "true", "objective_weights": {"speed": 1}}, 422, "unknown objective weight"),
    ({"name": "x", "command": "true", "objective_weights": {"cost": -1}}, 422, "objective weight"),
]


@pytest.mark.parametrize(("body", "status", "needle"), BAD)
def test_bad_specs_get_problem_json_and_write_nothing(sqlite_platform: Platform, body: dict, status: int, needle: str) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    r = p.http.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= problem.keys() and needle in r.text
    assert p.c.store.counts() == {}


def test_malformed_json_oversized_body_and_bad_credentials(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    r = p.http.post("/api/v1/jobs", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    big = b'{"name":"x","command":"' + b"a" * (2 << 20) + b'"}'
    r = p.http.post("/api/v1/jobs", content=big, headers={**h, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    assert p.http.get("/api/v1/jobs").status_code == 401
    r = p.http.get("/api/v1/jobs", headers={"Authorization": "Bearer yg_wrong"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert p.c.store.counts() == {}


def test_roles_are_enforced(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    assert p.http.post("/api/v1/admin/tenants", json={"name": "evil"}, headers=h).status_code == 403
    assert p.http.post("/api/v1/admin/keys", json={"role": "admin"}, headers=h).status_code == 403
    assert p.http.get("/api/v1/admin/keys", headers=h).status_code == 403
    r = p.http.post("/api/v1/admin/tenants", json={"name": "new-lab"}, headers=p.admin)
    assert r.status_code == 201


def test_revoked_key_stops_working_at_once(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    tid, _ = p.tenant("lab")
    k = p.http.post("/api/v1/admin/keys", json={"role": "tenant", "tenant_id": tid}, headers=p.admin).json()
    h = {"Authorization": f"Bearer {k['secret']}"}
    assert p.http.get("/api/v1/jobs", headers=h).status_code == 200
    assert p.http.delete(f"/api/v1/admin/keys/{k['id']}", headers=p.admin).status_code == 204
    assert p.http.get("/api/v1/jobs", headers=h).status_code == 401


def test_pagination_walks_every_job_once(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    ids = {p.http.post("/api/v1/jobs", json={"name": f"j{i}", "command": "true"}, headers=h).json()["id"] for i in range(12)}
    seen, cursor = [], None
    while True:
        page = p.http.get("/api/v1/jobs", params={"limit": 5, **({"cursor": cursor} if cursor else {})}, headers=h).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 12


def test_gang_gets_distinct_devices_and_pools_show_load(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    body = {"name": "g", "command": "echo $YUNGU_DEVICES; sleep 3", "replicas": 2,
            "resources": {"cpus": 8, "memory_gb": 64, "accelerators": 4, "accelerator_types": ["H100"]}}
    jid = p.http.post("/api/v1/jobs", json=body, headers=h).json()["id"]
    job = p.wait(jid, h, {"running"})
    assert job["pool_id"] == "suzhou-h100"
    devs = [(*r["devices"], r["node"]) for r in job["allocation"]["replicas"]]
    assert len(set(devs)) == 2 and all(len(d) == 5 for d in devs)
    pool = next(x for x in p.http.get("/api/v1/pools", headers=h).json()["items"] if x["id"] == "suzhou-h100")
    assert pool["devices_used"] == 8 and pool["jobs"] == 1


def test_job_no_pool_could_ever_run_is_refused_at_submit_with_reasons(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    _, h = p.tenant("lab")
    body = {"name": "huge", "command": "true", "resources": {"accelerators": 16}}
    r = p.http.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert "no pool can ever run this job" in r.json()["detail"] and "16 devices" in r.json()["detail"]
    assert p.http.get("/api/v1/jobs", headers=h).json()["items"] == []  # nothing stored


def test_openapi_is_served(sqlite_platform: Platform) -> None:
    spec = sqlite_platform.http.get("/api/v1/openapi.json").json()
    assert "/api/v1/jobs" in spec["paths"] and "/api/v1/pools" in spec["paths"]

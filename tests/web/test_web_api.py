"""The endpoints behind the console and big screen, on the real platform (container, control
loop, local executor) behind the real app with the web router mounted: sessions and CSRF,
quotes that submit nothing, live logs over SSE, the overview's figures and time ranges."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yungu import web
from yungu.api.app import create_app
from yungu.api.sessions import COOKIE
from yungu.app.container import Container, build
from yungu.domain.tenancy import Role


class World:
    def __init__(self, c: Container, http: TestClient) -> None:
        self.c, self.http = c, http
        now = c.clock.now()
        _, self.admin_key = c.store.create_key(c.ids.new(), Role.ADMIN, None, "admin", now)
        self.tenant = c.store.create_tenant(c.ids.new(), "lab-a", now)
        _, self.tenant_key = c.store.create_key(c.ids.new(), Role.TENANT, self.tenant.id, "a", now)

    def bearer(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def sign_in(self, key: str) -> str:
        r = self.http.post("/api/v1/session", json={"api_key": key})
        assert r.status_code == 201, r.text
        return str(r.json()["csrf_token"])


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    c = build(tmp_path / "data")
    app = create_app(c)
    web.mount(app)
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield World(c, http)
    c.close()


JOB = {"name": "hi", "command": "echo 你好 console; sleep 0.2; echo bye", "estimated_duration_s": 30}


def test_sign_in_sets_a_locked_down_cookie_and_csrf_guards_unsafe_requests(w: World) -> None:
    assert w.http.get("/api/v1/session").json() == {"signed_in": False}
    assert w.http.post("/api/v1/session", json={"api_key": "yg_wrong"}).status_code == 401
    r = w.http.post("/api/v1/session", json={"api_key": w.tenant_key})
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and f"{COOKIE}=" in cookie
    assert w.tenant_key not in cookie and w.tenant_key not in r.text  # the key is never echoed
    csrf = r.json()["csrf_token"]
    assert w.http.get("/api/v1/whoami").json()["role"] == "tenant"  # cookie alone is enough to read
    refused = w.http.post("/api/v1/jobs", json=JOB)
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_refused"
    assert w.http.post("/api/v1/jobs", json=JOB, headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    assert w.http.get("/api/v1/jobs").json()["items"] == []  # nothing was written
    assert w.http.post("/api/v1/jobs", json=JOB, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert w.http.delete("/api/v1/session").status_code == 403  # sign-out needs the token too
    assert w.http.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert w.http.get("/api/v1/whoami").status_code == 401


def test_sign_in_from_another_origin_is_refused(w: World) -> None:
    r = w.http.post("/api/v1/session", json={"api_key": w.tenant_key}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    ok = w.http.post("/api/v1/session", json={"api_key": w.tenant_key}, headers={"Origin": "http://127.0.0.1"})
    assert ok.status_code == 201


def test_revoking_the_key_ends_its_sessions(w: World) -> None:
    key, secret = w.c.store.create_key(w.c.ids.new(), Role.TENANT, w.tenant.id, "short-lived", w.c.clock.now())
    w.sign_in(secret)
    assert w.http.get("/api/v1/whoami").status_code == 200
    assert w.http.delete(f"/api/v1/admin/keys/{key.id}", headers=w.bearer(w.admin_key)).status_code == 204
    assert w.http.get("/api/v1/whoami").status_code == 401


def test_kiosk_ticket_is_single_use_and_operator_only(w: World) -> None:
    assert w.http.post("/api/v1/session/tickets", headers=w.bearer(w.tenant_key)).status_code == 403
    t = w.http.post("/api/v1/session/tickets", headers=w.bearer(w.admin_key)).json()
    r = w.http.get(t["path"], follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/screen" and COOKIE in r.headers["set-cookie"]
    assert w.http.get("/api/v1/overview").status_code == 200  # the kiosk's session reads the screen
    w.http.cookies.clear()
    assert w.http.get(t["path"], follow_redirects=False).status_code == 401


def test_quote_lists_options_and_submits_nothing(w: World) -> None:
    h = w.bearer(w.tenant_key)
    q = w.http.post("/api/v1/quote", json={**JOB, "objective": "green"}, headers=h)
    assert q.status_code == 200, q.text
    body = q.json()
    assert body["submitted"] is False and len(body["alternatives"]) >= 2
    assert sum(a["chosen"] for a in body["alternatives"]) == 1
    for a in body["alternatives"]:
        assert {"pool_id", "region_id", "platform_id", "start", "cost_cny", "carbon_kg", "green_share"} <= a.keys()
    assert w.http.get("/api/v1/jobs", headers=h).json()["items"] == []
    only = w.http.post("/api/v1/quote", json={**JOB, "regions": ["suzhou"]}, headers=h).json()
    assert only["alternatives"] and {a["region_id"] for a in only["alternatives"]} == {"suzhou"}
    bad = w.http.post("/api/v1/quote", json={**JOB, "regions": ["atlantis"]}, headers=h)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
    # confirming = submitting pinned to the chosen option's pool
    chosen = next(a for a in body["alternatives"] if a["chosen"])
    job = w.http.post("/api/v1/jobs", json={**JOB, "pool": chosen["pool_id"]}, headers=h).json()
    assert job["spec"]["pool"] == chosen["pool_id"]


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def test_log_stream_follows_a_job_to_its_end(w: World) -> None:
    h = w.bearer(w.tenant_key)
    job = w.http.post("/api/v1/jobs", json=JOB, headers=h).json()
    seen: list[tuple[str, dict[str, Any]]] = []
    with w.http.stream("GET", f"/api/v1/jobs/{job['id']}/logs/stream", headers=h) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for ev in _sse(r.iter_lines()):
            seen.append(ev)
            if ev[0] == "end":
                break
    log = "".join(d["data"] for e, d in seen if e == "log")
    assert "你好 console" in log and "bye" in log
    assert seen[-1][1]["state"] == "succeeded"
    assert [d["state"] for e, d in seen if e == "state"][-1] == "succeeded"
    other = w.c.store.create_tenant(w.c.ids.new(), "lab-b", w.c.clock.now())
    _, other_key = w.c.store.create_key(w.c.ids.new(), Role.TENANT, other.id, "b", w.c.clock.now())
    assert w.http.get(f"/api/v1/jobs/{job['id']}/logs/stream", headers=w.bearer(other_key)).status_code == 404
    # no node agent in this world: the energy report is "not yet", not an error
    e = w.http.get(f"/api/v1/jobs/{job['id']}/energy", headers=h).json()
    assert e["available"] is False and e["state"] == "succeeded"
    assert w.http.get(f"/api/v1/jobs/{job['id']}/energy", headers=w.bearer(other_key)).status_code == 404


def test_overview_figures_say_how_they_were_obtained_and_match_capacity(w: World) -> None:
    h = w.bearer(w.admin_key)
    ov = w.http.get("/api/v1/overview", headers=h).json()
    cap = w.http.get("/api/v1/capacity", headers=h).json()
    assert ov["capacity"]["classes"] == cap["classes"]
    hohhot = ov["capacity"]["classes"]["intelligent"]["declared_pflops"]
    assert hohhot > 1000 and ov["capacity"]["classes"]["general"]["precision"] == "fp64"
    for key in ("capacity", "utilisation", "power", "energy", "pue", "green", "carbon", "jobs", "flows", "activity"):
        assert ov[key]["method"] in ("declared", "measured", "modelled", "none"), key
    assert len(ov["green"]["forecast"]) == 48 and 0 <= ov["green"]["now"] <= 1
    assert len(ov["regions"]) == 6 and sum(r["home"] for r in ov["regions"]) == 1
    assert w.http.get("/api/v1/overview", headers=w.bearer(w.tenant_key)).status_code == 403
    bad = w.http.get("/api/v1/overview", params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                     headers=h)
    assert bad.status_code == 422
    assert w.http.get("/api/v1/overview", params={"start": "2026-01-01T00:00:00"}, headers=h).status_code == 422


def test_flows_go_from_the_origin_region_to_where_the_job_runs(w: World) -> None:
    h = w.bearer(w.tenant_key)
    job = w.http.post("/api/v1/jobs", json={**JOB, "pool": "suzhou-cpu", "labels": {"origin": "beijing"}},
                      headers=h).json()
    deadline = time.monotonic() + 20
    while w.http.get(f"/api/v1/jobs/{job['id']}", headers=h).json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    flows = w.http.get("/api/v1/flows", headers=w.bearer(w.admin_key)).json()
    assert {"from": "beijing", "to": "suzhou", "running": 0, "finished": 1} in flows["arcs"]


def test_usage_summary_and_orders_are_scoped_to_the_tenant(w: World) -> None:
    s = w.http.get("/api/v1/usage/summary", headers=w.bearer(w.tenant_key)).json()
    assert s["tenant_id"] == w.tenant.id and s["spend"]["currency"] == "CNY"
    assert w.http.get("/api/v1/market/orders", headers=w.bearer(w.tenant_key)).json()["items"] == []
    assert w.http.get("/api/v1/policies", headers=w.bearer(w.tenant_key)).status_code == 403
    assert w.http.get("/api/v1/policies", headers=w.bearer(w.admin_key)).json()["scheduler"] == "yungu-green"


def test_pages_and_assets_are_served_with_csp_and_gzip(w: World) -> None:
    for path in ("/", "/screen"):
        r = w.http.get(path)
        assert r.status_code == 200 and '<meta charset="utf-8">' in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
    r = w.http.get("/static/console.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["content-type"].startswith("text/javascript")
    again = w.http.get("/static/console.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert w.http.get("/static/nope.js").status_code == 404
    assert w.http.get("/static/index.html").status_code == 404  # pages only at their own paths


def test_sessions_expire_when_idle_and_tickets_expire() -> None:
    from yungu.api.sessions import IDLE_S, MAX_AGE_S, TICKET_TTL_S, SessionStore
    from yungu.domain.tenancy import Principal

    now = [1000.0]
    store = SessionStore(clock=lambda: now[0])
    p = Principal("k1", Role.TENANT, "t1")
    sid, s = store.create(p)
    now[0] += IDLE_S - 1
    assert store.get(sid) is s  # used just in time: the idle clock restarts
    now[0] += IDLE_S + 1
    assert store.get(sid) is None
    sid, _ = store.create(p)
    for _ in range(int(MAX_AGE_S // 3600) + 1):  # used every hour, still capped at MAX_AGE_S
        now[0] += 3600
        store.get(sid)
    assert store.get(sid) is None
    t = store.ticket(p)
    now[0] += TICKET_TTL_S + 1
    assert store.redeem(t) is None
    assert store.get("not-a-session") is None

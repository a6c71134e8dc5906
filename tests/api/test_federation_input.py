"""The federation routes answer what the OpenAPI document says, and bad input is a 4xx problem.

Regression tests for what schemathesis (``test_schemathesis.py``) found once the federation
routes landed: the signed protocol's 401 was undocumented, ``Allow`` on
``/api/v1/federation/clearing/run`` named a GET it does not take, and ``POST
/api/v1/federation/peers`` with a control character in ``base_url`` was a 500. The platform is
real (container over SQLite, the FastAPI app in-process); no control loop runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from yungu.adapters.federation.httpsig import Signer
from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.tenancy import Role

PROBLEM = "application/problem+json"


@dataclass
class Fed:
    http: TestClient
    admin: dict[str, str]
    db: Path
    now: Any

    def counts(self) -> dict[str, int]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: int(db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}
        finally:
            db.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    data = tmp_path_factory.mktemp("hostile-fed") / "data"
    c = build(data, start_loop=False)
    assert c.federation is not None, "the embedded world runs federation"
    _, key = c.store.create_key(c.ids.new(), Role.ADMIN, None, "admin", c.clock.now())
    try:
        with TestClient(create_app(c), raise_server_exceptions=False) as http:
            yield Fed(http, {"Authorization": f"Bearer {key}"}, data / "yungu.db", c.clock.now)
    finally:
        c.close()


def _is_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == PROBLEM, r.headers
    p: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "code"} <= p.keys() and p["status"] == status
    assert "Traceback" not in r.text and "incident" not in p
    return p


def test_every_signed_protocol_route_documents_and_answers_401(fed: Fed) -> None:
    doc = fed.http.get("/api/v1/openapi.json").json()
    signed = [(path, m) for path, item in doc["paths"].items() if path.startswith("/federation/v1/")
              for m in item if path != "/federation/v1/platform"]
    assert len(signed) >= 14, signed
    for path, method in signed:
        responses = doc["paths"][path][method]["responses"]
        assert {"401", "404", "409", "422"} <= responses.keys(), (method, path, sorted(responses))
        assert PROBLEM in responses["401"]["content"], (method, path)
        r = fed.http.request(method.upper(), path.replace("{request_id}", "job-1.0"))
        p = _is_problem(r, 401)
        assert p["code"] == "signature_refused" and str(r.status_code) in responses, (method, path)


def test_a_request_signed_by_a_stranger_is_a_signed_401_problem(fed: Fed) -> None:
    """Signed answers to refused requests are problems too (they were served as application/json)."""
    priv = Ed25519PrivateKey.generate()
    stranger = Signer(lambda: "stranger#0000", lambda _k: priv, lambda _k: None, fed.now)
    url = "http://testserver/federation/v1/offers"
    r = fed.http.get(url, headers=stranger.sign_request("GET", url, b""))
    p = _is_problem(r, 401)
    assert p["code"] == "signature_refused" and "signature" in r.headers


def test_allow_on_clearing_run_names_only_post(fed: Fed) -> None:
    doc = fed.http.get("/api/v1/openapi.json").json()
    assert set(doc["paths"]["/api/v1/federation/clearing/run"]) == {"post"}
    for method in ("OPTIONS", "GET", "PUT", "DELETE"):
        r = fed.http.request(method, "/api/v1/federation/clearing/run", headers=fed.admin)
        _is_problem(r, 405)
        assert r.headers["allow"] == "POST", (method, r.headers["allow"])
    # the period route still answers for periods, and refuses a month 13 with a 422 that says so
    assert fed.http.get("/api/v1/federation/clearing/2026-01", headers=fed.admin).json()["period"] == "2026-01"
    assert "period" in _is_problem(fed.http.get("/api/v1/federation/clearing/2026-13", headers=fed.admin),
                                   422)["detail"]


KEY = "FI3ZJlNqkE3u/58oRWCeye6DpDplngoOE+jaXSNeUh0="  # a real Ed25519 public key (base64)

BAD_PEERS: list[tuple[str, Any, str]] = [
    ("control-char-url", {"id": "p1", "base_url": "\x01"}, "base_url"),  # was a 500 (httpx.InvalidURL)
    ("control-char-in-host", {"id": "p1", "base_url": "http://a\x01b", "public_key": KEY}, "base_url"),
    ("space-in-url", {"id": "p1", "base_url": "http://a b:1", "public_key": KEY}, "base_url"),
    ("ftp-url", {"id": "p1", "base_url": "ftp://10.0.0.2", "public_key": KEY}, "base_url"),
    ("no-host", {"id": "p1", "base_url": "http://:8600", "public_key": KEY}, "base_url"),
    ("bad-port", {"id": "p1", "base_url": "http://10.0.0.2:99999", "public_key": KEY}, "base_url"),
    ("credentials", {"id": "p1", "base_url": "http://u:p@10.0.0.2", "public_key": KEY}, "base_url"),
    ("id-upper", {"id": "P1", "base_url": "http://10.0.0.2:8600", "public_key": KEY}, "id"),
    ("id-int", {"id": 7, "base_url": "http://10.0.0.2:8600", "public_key": KEY}, "id"),
    ("key-garbage", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": "%%"}, "public_key"),
    ("key-short", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": "AAAA"}, "32 bytes"),
    ("latency-bool", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "latency_ms": True},
     "latency_ms"),
    ("latency-float", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "latency_ms": 1.5},
     "latency_ms"),
    ("policy-list", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "policy": []}, "policy"),
    ("policy-unknown", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "policy": {"x": 1}},
     "unknown keys"),
    ("unknown-field", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "evil": 1}, "evil"),
    ("name-huge", {"id": "p1", "base_url": "http://10.0.0.2:8600", "public_key": KEY, "name": "n" * 5000}, "name"),
    ("not-an-object", [1, 2], "object"),
    ("fuzz", {"\x19": True, "": {}, "Y": {}, "7-X": 1.66e149, "j": [{"a": None}]}, "id"),
]


@pytest.mark.parametrize(("body", "needle"), [c[1:] for c in BAD_PEERS], ids=[c[0] for c in BAD_PEERS])
def test_bad_peer_is_a_422_problem_and_writes_nothing(fed: Fed, body: Any, needle: str) -> None:
    before, peers = fed.counts(), fed.http.get("/api/v1/federation/peers", headers=fed.admin).json()["items"]
    r = fed.http.post("/api/v1/federation/peers", json=body, headers=fed.admin)
    p = _is_problem(r, 422)
    assert needle.lower() in r.text.lower(), r.text[:500]
    assert p["code"] == "invalid_input"
    assert fed.counts() == before, "a refused peer wrote to the database"
    assert fed.http.get("/api/v1/federation/peers", headers=fed.admin).json()["items"] == peers


def test_a_good_peer_is_still_added(fed: Fed) -> None:
    r = fed.http.post("/api/v1/federation/peers", headers=fed.admin,
                      json={"id": "peer-ok", "base_url": "http://10.0.0.2:8600", "public_key": KEY})
    assert r.status_code == 201, r.text
    assert fed.http.delete("/api/v1/federation/peers/peer-ok", headers=fed.admin).status_code == 204

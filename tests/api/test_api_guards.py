"""Rate limits, the catch-all error handler and the OpenAPI document (issue 10), in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from yungu.api.app import create_app
from yungu.api.ratelimit import RateLimits, TokenBuckets
from yungu.app.container import Container, build
from yungu.domain.errors import InvalidInput
from yungu.domain.tenancy import Role


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Container, TestClient, dict[str, str]]]:
    c = build(tmp_path / "data", start_loop=False)
    limits = RateLimits(key_rate=1.0, key_burst=5, auth_fail_rate=0.01, auth_fail_burst=3)
    _, key = c.store.create_key(c.ids.new(), Role.ADMIN, None, "admin", c.clock.now())
    with TestClient(create_app(c, limits), raise_server_exceptions=False) as http:
        yield c, http, {"Authorization": f"Bearer {key}"}
    c.close()


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [b.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k") == pytest.approx(0.5)  # empty: half a second to the next token
    now[0] += 0.5
    assert b.take("k") == 0.0 and b.take("other") == 0.0  # keys do not share a bucket
    assert TokenBuckets(rate=0, burst=1).take("k") == 0.0  # rate 0: off


def test_per_key_limit_answers_429_with_retry_after(limited: tuple) -> None:
    _, http, admin = limited
    codes = [http.get("/api/v1/regions", headers=admin).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = http.get("/api/v1/regions", headers=admin)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json" and r.json()["code"] == "rate_limited"
    assert http.get("/api/v1/health").status_code == 200  # no credential: not limited per key


def test_failed_authentication_is_limited_per_address(limited: tuple) -> None:
    _, http, admin = limited
    assert http.get("/api/v1/regions", headers=admin).status_code == 200  # a known-good key, cached
    bad = {"Authorization": "Bearer yg_guess"}
    assert [http.get("/api/v1/jobs", headers={**bad, "X-Guess": str(i)}).status_code for i in range(3)] == [401] * 3
    r = http.get("/api/v1/jobs", headers={"Authorization": "Bearer yg_guess2"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["code"] == "rate_limited"
    assert http.get("/api/v1/jobs").status_code == 429  # no key at all is a failed attempt too
    assert http.get("/api/v1/regions", headers=admin).status_code == 200  # a good key is not held up


def test_rate_limits_from_the_environment() -> None:
    assert RateLimits.from_env({}) == RateLimits()
    got = RateLimits.from_env({"YUNGU_RATE_KEY_PER_S": "50", "YUNGU_RATE_AUTH_FAIL_BURST": "0"})
    assert got.key_rate == 50 and got.auth_fail_burst == 0
    for bad in ("-1", "fast", "nan", "inf"):
        with pytest.raises(InvalidInput):
            RateLimits.from_env({"YUNGU_RATE_KEY_PER_S": bad})


def test_a_bug_is_a_generic_500_that_reveals_nothing(limited: tuple, caplog: pytest.LogCaptureFixture) -> None:
    _, http, admin = limited
    app = http.app

    @app.get("/api/v1/_boom")  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("secret internal detail /etc/yungu/db password=hunter2")

    r = http.get("/api/v1/_boom", headers=admin)
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal_error" and r.json()["incident"]
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    assert any("hunter2" in (rec.exc_text or "") or r.json()["incident"] in rec.getMessage()
               for rec in caplog.records)


def test_openapi_documents_problem_answers(limited: tuple) -> None:
    _, http, _ = limited
    doc = http.get("/api/v1/openapi.json").json()
    assert {"type", "title", "status", "detail", "code"} <= set(doc["components"]["schemas"]["Problem"]["required"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    submit = doc["paths"]["/api/v1/jobs"]["post"]["responses"]
    for code in ("401", "403", "404", "405", "409", "413", "422", "429"):
        assert "application/problem+json" in submit[code]["content"], code
    assert "Retry-After" in submit["429"]["headers"] and "Allow" in submit["405"]["headers"]
    assert "402" in doc["paths"]["/api/v1/ledger/transfers"]["post"]["responses"]
    assert doc["paths"]["/api/v1/jobs"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in doc["paths"]["/api/v1/health"]["get"]
    assert doc["paths"]["/api/v1/telemetry/ingest"]["post"]["security"] == [{"nodeKey": []}]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" in op["responses"], f"{method} {path}"

"""The telemetry/energy/certificate/alert API on a real platform (FastAPI app + store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Platform, sqlite_platform  # noqa: F401  (fixture)
from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.clock import FixedClock

# The report below reads the modelled hourly signals of the hours the samples cover, so the
# platform runs on a fixed clock: the test gives the same figures at any wall-clock date and
# hour (it used to read the green share at time.time() - 7200 and failed at hours when the
# contracted green power covered the whole hour, e.g. 06:00 in Asia/Shanghai).
NOW = datetime(2026, 6, 15, 6, 0, tzinfo=UTC)  # 14:00 in Asia/Shanghai


@pytest.fixture
def fixed_platform(tmp_path: Path) -> Iterator[Platform]:
    c = build(tmp_path / "data", clock=FixedClock(NOW))
    with TestClient(create_app(c)) as http:
        yield Platform(c, http)
    c.close()


def _samples(t0: float, n: int, job: str) -> list[dict[str, Any]]:
    return [
        {"seq": i, "ts": t0 + 10 * i, "cpu_utilisation": 0.5, "memory_utilisation": 0.2, "cpu_power_w": 300.0,
         "cpu_method": "modelled", "cpu_idle_w": 100.0, "node_cpu_seconds": 40.0 * i, "cores": 8,
         "jobs": [{"job_id": job, "cpu_seconds": 20.0 * i, "cores": 4}]}
        for i in range(n)
    ]  # fmt: skip


def test_ingest_report_certificate_metrics_alerts(fixed_platform: Platform) -> None:
    p = fixed_platform
    http, admin = p.http, p.admin
    r = http.post("/api/v1/telemetry/nodes", json={"node_id": "n1", "pool_id": "horinger-cpu"}, headers=admin)
    assert r.status_code == 201, r.text
    key = r.json()["node_key"]
    t0 = NOW.timestamp() - 7200
    body = {
        "node_id": "n1",
        "samples": [
            *_samples(t0, 361, "job-x"),
            {"seq": 999, "ts": t0, "cpu_utilisation": 0.5, "cpu_power_w": -1},
        ],
    }
    res = http.post("/api/v1/telemetry/ingest", json=body, headers={"X-Node-Key": key}).json()
    assert res["accepted"] == 361 and res["reasons"] == {"negative_power": 1}
    bad = http.post("/api/v1/telemetry/ingest", json=body, headers={"X-Node-Key": "nope"})
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"

    rep = http.get("/api/v1/energy/jobs/job-x", headers=admin).json()
    # 3600 s at 300 W: dynamic 200 W x half the CPU time + idle 100 W x 4/8 cores = 150 W -> 0.15 kWh
    assert abs(rep["energy"]["it_kwh"] - 0.15) < 1e-6
    assert rep["energy"]["method"] == "modelled"
    site = rep["sites"][0]
    assert site["site_id"] == "horinger-dc1" and abs(site["facility_kwh"] - 0.15 * 1.15) < 1e-6
    assert site["location_based"]["carbon_g"] > site["market_based"]["carbon_g"] > 0  # 82 % contracted green
    assert site["market_based"]["signals"] == "modelled"

    cert = http.post("/api/v1/certs/jobs/job-x", headers=admin).json()
    assert http.post("/api/v1/certs/verify", json=cert, headers=admin).json()["valid"] is True
    cert["body"]["totals"]["facility_kwh"] = "0.000001"
    v = http.post("/api/v1/certs/verify", json=cert, headers=admin).json()
    assert v["valid"] is False and "tampered" in v["reason"]
    assert "绿电溯源证书" in http.get(f"/api/v1/certs/{cert['body']['id']}/html", headers=admin).text

    m = http.get("/metrics").text
    assert 'yungu_node_energy_joules_total{node="n1",pool="horinger-cpu",site="horinger-dc1"}' in m
    assert 'yungu_telemetry_samples_total{outcome="quarantined_negative_power"} 1.0' in m
    assert "yungu_site_pue_ratio" in m

    pts = http.get("/api/v1/telemetry/series", params={"scope": "site", "id": "horinger-dc1", "start": "2020-01-01T00:00:00Z",
                                                        "step": 86400 * 30}, headers=admin)  # fmt: skip
    assert pts.status_code == 422  # too many points is refused, not truncated silently
    alerts = http.get("/api/v1/alerts", params={"silent_after_s": 60}, headers=admin).json()["items"]
    assert [a["kind"] for a in alerts] == ["node_silent"]  # last sample is ~1 h old


def test_ingest_columns_over_http(sqlite_platform: Platform) -> None:  # noqa: F811
    """The column form through the real endpoint: same outcomes; a ragged envelope changes nothing."""
    from yungu.engines.energy.samples import columns_or_none

    p = sqlite_platform
    http, admin = p.http, p.admin
    key = http.post("/api/v1/telemetry/nodes", json={"node_id": "c1", "pool_id": "horinger-cpu"},
                    headers=admin).json()["node_key"]  # fmt: skip
    t0 = time.time() - 600
    rows = _samples(t0, 20, "job-c")
    rows[3]["cpu_power_w"] = -1.0
    rows[5] = {**rows[5], "jobs": []}
    cols = columns_or_none(rows)
    assert cols is not None
    res = http.post(
        "/api/v1/telemetry/ingest", json={"node_id": "c1", "columns": cols}, headers={"X-Node-Key": key}
    )
    assert res.status_code == 200, res.text
    assert res.json()["accepted"] == 19 and res.json()["reasons"] == {"negative_power": 1}, res.json()
    again = http.post(
        "/api/v1/telemetry/ingest", json={"node_id": "c1", "columns": cols}, headers={"X-Node-Key": key}
    )
    assert again.json()["duplicates"] == 19 and again.json()["accepted"] == 0
    ragged = {**cols, "ts": cols["ts"][:-1]}
    bad = http.post(
        "/api/v1/telemetry/ingest", json={"node_id": "c1", "columns": ragged}, headers={"X-Node-Key": key}
    )
    assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith(
        "application/problem+json"
    )
    both = http.post("/api/v1/telemetry/ingest", json={"node_id": "c1", "columns": cols, "samples": rows},
                     headers={"X-Node-Key": key})  # fmt: skip
    assert both.status_code == 422
    q = http.get("/api/v1/telemetry/quarantine", headers=admin).json()
    # the bad sample was sent twice (the resend) and is counted per receipt; nothing else moved
    assert q["counters"]["accepted"] == 19 and q["counters"]["quarantined_negative_power"] == 2

"""Job spec fields change placement end to end (API -> loop -> GreenScheduler -> executor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yungu.api.app import create_app
from yungu.app.container import Container, build
from yungu.domain.tenancy import Role

# Two sites with a real trade-off: cheap but coal-fired, or dear but wind-contracted.
WORLD = """
[platform]
id = "yungu-live-test"
name = "live test"
[executor.local]
type = "local"
[[region]]
id = "north"
name = "North"
home = true
[[region]]
id = "east"
name = "East"
[scheduler.latency_ms]
"north.east" = 30
[[site]]
id = "coal-dc"
region = "east"
name = "coal"
lat = 31.3
lon = 120.6
pue = 1.5
electricity_price_cny_per_kwh = "0.30"
green_contract_share = 0.0
energy_feed = "modelled:cn-js"
[[site]]
id = "wind-dc"
region = "north"
name = "wind"
lat = 40.4
lon = 111.8
pue = 1.1
electricity_price_cny_per_kwh = "0.90"
green_contract_share = 1.0
energy_feed = "modelled:cn-nm"
[[pool]]
id = "coal-a100"
site = "coal-dc"
compute_class = "intelligent"
accelerator = "A100"
accelerators_per_node = 8
nodes = 4
cpus_per_node = 64
memory_gb_per_node = 512
price_cny_per_device_hour = "2.00"
[[pool]]
id = "wind-a100"
site = "wind-dc"
compute_class = "intelligent"
accelerator = "A100"
accelerators_per_node = 8
nodes = 4
cpus_per_node = 64
memory_gb_per_node = 512
price_cny_per_device_hour = "6.00"
"""


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Container, TestClient, dict[str, str], str]]:
    cfg = tmp_path / "world.toml"
    cfg.write_text(WORLD)
    c = build(tmp_path / "data", config_path=cfg)
    _, key = c.store.create_key(c.ids.new(), Role.ADMIN, None, "a", c.clock.now())
    tenant = c.store.create_tenant(c.ids.new(), "lab", c.clock.now())
    with TestClient(create_app(c)) as http:
        yield c, http, {"Authorization": f"Bearer {key}"}, tenant.id
    c.close()


def submit(http: TestClient, h: dict[str, str], tenant: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "j", "command": "sleep 20", "tenant_id": tenant, "estimated_duration_s": 3600,
            "resources": {"cpus": 4, "memory_gb": 32, "accelerators": 4}, **fields}
    r = http.post("/api/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    for _ in range(200):
        job = http.get(f"/api/v1/jobs/{jid}", headers=h).json()
        if job["state"] != "pending" and (job["pool_id"] or job["reason"]):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {jid} was never decided")


@pytest.mark.parametrize(("objective", "pool"), [("cost", "coal-a100"), ("green", "wind-a100")])
def test_objective_decides_the_site(live: tuple, objective: str, pool: str) -> None:
    _, http, h, tenant = live
    job = submit(http, h, tenant, objective=objective)
    assert job["pool_id"] == pool, job
    ex = http.get(f"/api/v1/jobs/{job['id']}/explain", headers=h).json()
    assert ex["source"] == "decision-round"
    chosen = [a for a in ex["alternatives"] if a["chosen"]]
    losers = [a for a in ex["alternatives"] if not a["chosen"]]
    assert chosen[0]["pool_id"] == pool and losers and all(a["why_lost"] for a in losers)


def test_max_price_excludes_dear_pools(live: tuple) -> None:
    _, http, h, tenant = live
    job = submit(http, h, tenant, objective="green", max_price_cny_per_hour="10.00")
    assert job["pool_id"] == "coal-a100", job  # the wind pool costs 4 x 6 = 24 CNY/h


def test_accelerators_that_no_pool_has_are_refused_at_submit_with_reasons(live: tuple) -> None:
    _, http, h, tenant = live
    r = http.post("/api/v1/jobs", headers=h, json={
        "name": "j", "command": "true", "tenant_id": tenant,
        "resources": {"cpus": 4, "memory_gb": 32, "accelerators": 4, "accelerator_types": ["H100"]}})
    assert r.status_code == 422 and "H100" in r.json()["detail"], r.text


def test_earliest_start_defers_and_deadline_bounds_the_wait(live: tuple) -> None:
    c, http, h, tenant = live
    later = datetime.now(UTC) + timedelta(hours=2)
    job = submit(http, h, tenant, earliest_start=later.isoformat(), deadline=(later + timedelta(hours=6)).isoformat())
    assert job["state"] == "queued" and job["pool_id"] is None and job["reason"].startswith("waiting")
    plan = c.reconciler.last_plan
    assert plan is not None
    (defer,) = [d for d in plan.defers if d.job_id == job["id"]]
    assert defer.until is not None and later <= defer.until <= later + timedelta(hours=5)

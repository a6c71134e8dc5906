"""A matched trade becomes a capacity reservation the scheduler honours: the buyer's jobs get
the reserved devices; other tenants' jobs cannot take them while the window lasts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.api.conftest import Platform

GPU_JOB = {"command": "sleep 30", "pool": "suzhou-h100", "resources": {"cpus": 4, "memory_gb": 16, "accelerators": 8}}


def state(p: Platform, jid: str) -> dict:
    return p.http.get(f"/api/v1/jobs/{jid}", headers=p.admin).json()


def test_reserved_devices_go_to_the_buyer_only(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    buyer = p.http.post("/api/v1/admin/tenants", json={"name": "buyer"}, headers=p.admin).json()["id"]
    other = p.http.post("/api/v1/admin/tenants", json={"name": "other"}, headers=p.admin).json()["id"]
    now = datetime.now(UTC)
    product = {"region": "suzhou", "accelerator_class": "intelligent",
               "window_start": (now - timedelta(minutes=1)).isoformat(),
               "window_end": (now + timedelta(hours=1)).isoformat()}
    # suzhou-h100 has 24 nodes x 8 = 192 devices: the buyer reserves 184 of them (23 nodes).
    ask = {**product, "id": "ask-1", "side": "ask", "party": "Suzhou Cloud", "quantity": 184, "price": "10.00",
           "pool_id": "suzhou-h100"}
    bid = {**product, "id": "bid-1", "side": "bid", "party": buyer, "quantity": 184, "price": "11.00"}
    for order in (ask, bid):
        r = p.http.post("/api/v1/market/orders", json=order, headers=p.admin)
        assert r.status_code == 201, r.text
    cleared = p.http.post("/api/v1/market/auctions", json=product, headers=p.admin).json()
    assert cleared["volume"] == 184 and cleared["reservations"][0]["tenant_id"] == buyer

    others = [p.http.post("/api/v1/jobs", json={**GPU_JOB, "name": f"o{i}", "tenant_id": other},
                          headers=p.admin).json()["id"] for i in range(2)]
    time.sleep(1.0)
    states = [state(p, j)["state"] for j in others]
    # Only the one unreserved node (8 devices) is open to other tenants.
    assert sorted(states) == ["queued", "running"], states
    mine = p.http.post("/api/v1/jobs", json={**GPU_JOB, "name": "b", "tenant_id": buyer}, headers=p.admin).json()["id"]
    for _ in range(50):
        if state(p, mine)["state"] == "running":
            break
        time.sleep(0.1)
    assert state(p, mine)["state"] == "running"
    assert [state(p, j)["state"] for j in others].count("queued") == 1  # still waiting

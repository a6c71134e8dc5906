"""The console and the big screen see the peers (issue 13 x issue 12), in process: two
platforms' composition roots (SQLite, their real federation services, a mock clock, fake
executors), no network. Beijing holds Horinger's offers; a quote there lists Horinger's pool
beside Beijing's own, the tenant may keep or drop the peer, confirming a peer's option pins
the job to that platform, and the overview names the peer and its state (no keys, no URLs); token receipts from the peer are
verified with the key the peering holds and booked into its clearing account."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.federation.test_peer_executor import HR, _platform
from yungu.api.app import create_app
from yungu.app.container import Container
from yungu.domain.errors import InvalidInput
from yungu.domain.tenancy import Role
from yungu.engines.federation import health as H
from yungu.engines.gateway.pricing import Price
from yungu.engines.gateway.receipts import clearing_account, make_receipt
from yungu.testing import MockClock
from yungu.testing.world import T0

GPU_JOB = {"name": "train", "command": "true", "estimated_duration_s": 600, "objective": "cost",
           "resources": {"cpus": 1, "memory_gb": 1, "accelerators": 4}}


@pytest.fixture
def beijing(tmp_path: Path) -> Iterator[tuple[Container, TestClient, dict[str, str], dict[str, str], Container]]:
    clock = MockClock(T0)
    bj = _platform(tmp_path, "beijing", "horinger", clock)
    hr = _platform(tmp_path, "horinger", "beijing", clock)
    try:
        assert bj.federation is not None and hr.federation is not None
        bj.federation.add_peer(HR, "http://127.0.0.1:9", hr.federation.identity.public_key_b64, latency_ms=12)
        caller = bj.federation.peers_map()[HR]
        assert bj.federation.receive_offers(caller, hr.federation.host.offer_set(clock.now())) > 0
        bj.federation.set_health(HR, H.reconciled(bj.federation.health(HR)), None)
        now = clock.now()
        tenant = bj.store.create_tenant(bj.ids.new(), "lab-bj", now)
        _, tkey = bj.store.create_key(bj.ids.new(), Role.TENANT, tenant.id, "t", now)
        _, okey = bj.store.create_key(bj.ids.new(), Role.OPERATOR, None, "o", now)
        with TestClient(create_app(bj), base_url="http://127.0.0.1") as http:
            yield bj, http, {"Authorization": f"Bearer {tkey}"}, {"Authorization": f"Bearer {okey}"}, hr
    finally:
        bj.close()
        hr.close()


def test_a_quote_lists_the_peers_capacity_beside_ours_and_the_tenant_can_drop_it(beijing) -> None:  # type: ignore[no-untyped-def]
    bj, http, tenant, _, _ = beijing
    here = bj.world.platform_id
    r = http.post("/api/v1/quote", json=GPU_JOB, headers=tenant)
    assert r.status_code == 200, r.text
    options = r.json()["alternatives"]
    platforms = {a["platform_id"] for a in options}
    assert HR in platforms, options
    remote = [a for a in options if a["platform_id"] == HR]
    assert all(a["pool_id"].startswith(f"{HR}/") and a["region_id"] for a in remote)
    only_us = http.post("/api/v1/quote", json={**GPU_JOB, "platforms": [here]}, headers=tenant).json()
    assert {a["platform_id"] for a in only_us["alternatives"]} <= {here}
    only_peer = http.post("/api/v1/quote", json={**GPU_JOB, "platforms": [HR]}, headers=tenant).json()
    assert only_peer["alternatives"] and {a["platform_id"] for a in only_peer["alternatives"]} == {HR}


def test_confirming_a_peers_option_pins_the_job_to_that_platform(beijing) -> None:  # type: ignore[no-untyped-def]
    """What the console's confirm button sends for a peer's option (console.js): the pin label,
    not the peer's pool id (which is not ours to name)."""
    bj, http, tenant, _, _ = beijing
    body = {**GPU_JOB, "labels": {"via": "console", "federation.pin": f"platform:{HR}"}}
    r = http.post("/api/v1/jobs", json=body, headers=tenant)
    assert r.status_code in (200, 201), r.text
    assert http.post("/api/v1/jobs", json={**GPU_JOB, "pool": f"{HR}/horinger-gpu"},
                     headers=tenant).status_code == 422  # a peer's pool id is refused with a reason
    bj.reconciler.may_act = lambda: True  # driven by hand, the only process: no lease to hold
    bj.reconciler.run_once()
    job = bj.store.get(r.json()["id"])
    assert job.allocation is not None and job.allocation.pool_id.startswith(f"{HR}/"), (job.state, job.reason)


def test_the_overview_names_each_peer_and_its_state_without_keys(beijing) -> None:  # type: ignore[no-untyped-def]
    _, http, _, operator, _ = beijing
    ov = http.get("/api/v1/overview", headers=operator)
    assert ov.status_code == 200, ov.text
    [peer] = ov.json()["peers"]
    assert peer["id"] == HR and peer["state"] == "healthy" and peer["offers"] > 0
    assert "keys" not in peer and "base_url" not in peer


def test_a_peers_token_receipt_is_accepted_and_booked_into_the_federation_clearing(beijing) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.5 over a real peering: Horinger signs a receipt for tokens its replica served to
    Beijing; Beijing verifies it with the key it holds for Horinger from the peering and books it
    into the same per-peer clearing account as delegated compute. A receipt Beijing did not get
    from a peer (an unknown server) is refused."""
    bj, _, _, _, hr = beijing
    assert bj.tokens is not None and hr.tokens is not None
    price = Price(Decimal("2.00"), Decimal("4.00"))
    r = make_receipt(request_id="req-1", server=HR, client=bj.world.platform_id, model="smollm2", tokens_in=500_000,
                     tokens_out=250_000, counted=False, price=price, served_at="2026-03-10T04:00:00+00:00",
                     period="2026-03")
    body, sig = hr.tokens.receipts.issue(r)
    bj.tokens.receipts.accept(body, sig)
    assert bj.tokens.receipts.book() > 0
    assert bj.ledger.ledger.account(clearing_account(HR))[1].posted != 0
    with pytest.raises(InvalidInput):
        bj.tokens.receipts.accept({**body, "server": "yungu-nowhere"}, sig)

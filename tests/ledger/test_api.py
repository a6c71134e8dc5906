"""The ledger, billing and market API behind the real app (SQLite platform)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from yungu.api.app import create_app
from yungu.app.container import build
from yungu.domain.tenancy import Role


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Any, dict[str, str], str, dict[str, str]]]:
    c = build(tmp_path / "data", start_loop=False)
    with TestClient(create_app(c)) as http:
        _, admin = c.store.create_key(c.ids.new(), Role.ADMIN, None, "admin", c.clock.now())
        t = c.store.create_tenant(c.ids.new(), "acme", c.clock.now(), "91110000MA01ABCD2X")
        _, tkey = c.store.create_key(c.ids.new(), Role.TENANT, t.id, "acme", c.clock.now())
        yield http, c, {"Authorization": f"Bearer {admin}"}, t.id, {"Authorization": f"Bearer {tkey}"}
    c.close()


def test_topup_transfer_errors_and_tenant_visibility(api) -> None:  # type: ignore[no-untyped-def]
    http, _c, admin, tid, tenant = api
    r = http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-1", "amount": "100.00", "reason": "bank transfer"}, headers=admin)
    assert r.status_code == 201 and r.json()["balance"] == "100.00"
    # replay: same result; different body: 409; float: refused; too many decimals: refused
    assert http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-1", "amount": "100.00", "reason": "bank transfer"},
                     headers=admin).json()["balance"] == "100.00"
    assert http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-1", "amount": "99", "reason": "bank transfer"},
                     headers=admin).status_code == 409
    assert http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-2", "amount": 1.5, "reason": "bank transfer"},
                     headers=admin).status_code == 422
    assert http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-3", "amount": "1.001", "reason": "bank transfer"},
                     headers=admin).status_code == 422
    over = http.post("/api/v1/ledger/transfers", headers=admin, json={
        "id": "x1", "debit_account": f"tenant:{tid}:wallet", "credit_account": "sys:cny:revenue", "amount": "100.01",
        "reason": "manual correction"})
    assert over.status_code == 402 and over.json()["code"] == "insufficient_funds"  # an overdraft is not a 429
    mine = http.get("/api/v1/ledger/accounts", headers=tenant).json()
    assert {a["id"] for a in mine} == {f"tenant:{tid}:wallet", f"tenant:{tid}:arrears"}
    assert http.get("/api/v1/ledger/accounts/sys:cny:revenue", headers=tenant).status_code == 403
    assert http.post("/api/v1/ledger/transfers", headers=tenant, json={"id": "x"}).status_code == 403
    batch = http.post("/api/v1/ledger/batches", headers=admin, json={"linked": True, "reason": "escrow", "transfers": [
        {"id": "b1", "debit_account": f"tenant:{tid}:wallet", "credit_account": "sys:cny:escrow", "amount": "60"},
        {"id": "b2", "debit_account": f"tenant:{tid}:wallet", "credit_account": "sys:cny:escrow", "amount": "60"}]})
    assert [x["result"] for x in batch.json()] == ["linked_failed", "exceeds_limit"]
    assert http.get(f"/api/v1/ledger/accounts/tenant:{tid}:wallet", headers=tenant).json()["balance"] == "100.00"


def test_market_auction_reservations_index_and_sla(api) -> None:  # type: ignore[no-untyped-def]
    http, c, admin, tid, tenant = api
    pool = c.world.pools[0].id
    start = datetime(2026, 6, 1, tzinfo=UTC)
    product = {"region": "bj", "accelerator_class": "intelligent", "window_start": start.isoformat(),
               "window_end": (start + timedelta(hours=8)).isoformat(), "reserve_price": "1.00"}
    assert http.post("/api/v1/market/orders", headers=tenant, json=product | {
        "id": "bid-1", "side": "bid", "quantity": 4, "price": "9.00"}).status_code == 201
    assert http.post("/api/v1/market/orders", headers=tenant, json=product | {
        "id": "bid-low", "side": "bid", "quantity": 4, "price": "0.50"}).status_code == 422  # below reserve
    assert http.post("/api/v1/market/orders", headers=tenant, json=product | {
        "id": "ask-t", "side": "ask", "quantity": 4, "price": "5", "pool_id": pool}).status_code == 403
    assert http.post("/api/v1/market/orders", headers=admin, json=product | {
        "id": "ask-1", "side": "ask", "party": "acme-idc", "quantity": 3, "price": "6.00", "pool_id": pool}
    ).status_code == 201
    res = http.post("/api/v1/market/auctions", headers=admin, json=product).json()
    # 4 wanted at <= 9.00, 3 offered at >= 6.00: demand exceeds supply, so the bid sets the price
    assert (res["price"], res["volume"]) == ("9.00", 3)
    assert http.post("/api/v1/market/auctions", headers=admin, json=product).json()["volume"] == 0
    at = (start + timedelta(hours=1)).isoformat()
    resv = http.get("/api/v1/market/reservations", params={"at": at}, headers=tenant).json()
    assert [(r["pool_id"], r["devices"], r["price"]) for r in resv] == [(pool, 3, "9.00")]
    idx = http.get("/api/v1/market/index").json()
    assert idx["bj/intelligent"]["vwap"] == "9.00"
    sla = {"id": "res1", "tenant_id": tid, "provider": "acme-idc", "period": "2026-06", "up_seconds": 980,
           "total_seconds": 1000, "charge": "180.00", "target": "0.999", "reason": "outage 2026-06-03"}
    first = http.post("/api/v1/market/sla-credits", headers=admin, json=sla).json()
    assert first == {"availability": "0.98", "credit": "45.00", "result": "ok"}
    assert http.post("/api/v1/market/sla-credits", headers=admin, json=sla).json()["result"] == "exists"
    st = http.post("/api/v1/clearing/statements", headers=admin, json={"period": "2026-06", "obligations": [
        {"debtor": "gz", "creditor": "bj", "amount": "10.00"}, {"debtor": "bj", "creditor": "gy", "amount": "4.00"},
        {"debtor": "gy", "creditor": "gz", "amount": "4.00"}]}).json()
    assert st["body"]["positions"] == {"bj": 600, "gy": 0, "gz": -600} and st["transfers"] == 1
    me = c.world.platform_id
    ok = http.post("/api/v1/clearing/verify", headers=admin, json={
        "body": st["body"] | {"positions": {me: 0}}, "signatures": st["signatures"],
        "public_keys": {me: st["public_key"]}})
    assert ok.status_code == 422  # a changed body no longer matches the signature


def test_invoice_json_and_printable_html(api) -> None:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    from yungu.api.routes.ledger import services
    from yungu.control.billing import UsageRow
    from yungu.engines.ledger.rating import Usage

    http, c, admin, tid, tenant = api
    http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "pay-9", "amount": "1000", "reason": "bank transfer"}, headers=admin)
    start = datetime(2026, 5, 3, tzinfo=UTC)
    u = Usage("usage:jobX.0", tid, "jobX", c.world.pools[0].id, "acme-idc", start, start + timedelta(hours=1), 7200,
              Decimal("2"), Decimal("1.5"))
    services(c).billing.add_usage([UsageRow(u, 123_45, "2026-05", "2026-05", "", False, None, "pool")])
    assert http.post("/api/v1/billing/run", headers=admin).json()["booked"] == 1
    assert http.post("/api/v1/billing/run", headers=admin).json()["booked"] == 0
    number = http.post("/api/v1/billing/periods/2026-05/close", headers=admin).json()["invoices"][0]
    inv = http.get(f"/api/v1/billing/invoices/{number}", headers=tenant).json()
    assert inv["buyer"] == {"name": "acme", "credit_code": "91110000MA01ABCD2X"}
    assert (inv["total_gross"], inv["total_gross_capital"]) == ("123.45", "壹佰贰拾叁元肆角伍分")
    assert inv["total_net"] == "116.46" and inv["total_tax"] == "6.99"
    page = http.get(f"/api/v1/billing/invoices/{number}/html", headers=tenant)
    assert page.status_code == 200 and "usage:jobX.0" in page.text and "壹佰贰拾叁元肆角伍分" in page.text
    wallet = http.get(f"/api/v1/ledger/accounts/tenant:{tid}:wallet", headers=tenant).json()
    assert wallet["balance"] == "876.55"
    other = c.store.create_tenant(c.ids.new(), "other", c.clock.now())
    _, okey = c.store.create_key(c.ids.new(), Role.TENANT, other.id, "other", c.clock.now())
    assert http.get(f"/api/v1/billing/invoices/{number}", headers={"Authorization": f"Bearer {okey}"}).status_code == 403

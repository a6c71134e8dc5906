"""Federation state on SQLite and PostgreSQL: migration 0005, idempotent rows, leases that only grow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from yungu.adapters.federation.store import FederationStore, PeerRecord
from yungu.adapters.store.db import create_engine, migrate
from yungu.engines.federation.policy import PeeringPolicy

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def outbound(rid: str, lease: datetime) -> dict[str, object]:
    return {"request_id": rid, "job_id": rid.split(".")[0], "attempt": 0, "peer_id": "yungu-horinger",
            "pool_id": "h-gpu", "tenant_id": "t", "devices": 4, "offered_price": Decimal("9.50"),
            "our_price": Decimal("10.4500"), "offer_id": "o", "launch": "{}", "state": "sent", "phase": "pending",
            "lease_until": lease, "reason": "", "exit_code": None, "started_at": None, "finished_at": None,
            "closed": False, "created_at": T0, "updated_at": T0}


def inbound(key: str, state: str = "active") -> dict[str, object]:
    origin, rid = key.split(":")
    job, att = rid.rsplit(".", 1)
    return {"id": key, "origin": origin, "origin_job_id": job, "attempt": int(att), "local_job_id": "l1",
            "pool_id": "h-gpu", "tenant_id": "t", "tenant_ref": "r", "devices": 4, "offered_price": Decimal("9.5"),
            "state": state, "reason": "", "lease_until": T0, "created_at": T0, "updated_at": T0}


def test_federation_state_round_trips_and_stays_idempotent(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    s = FederationStore(engine)
    s.put_peer(PeerRecord("yungu-horinger", "H", "http://h", ({"keyid": "k", "public_key": "p"},),
                          PeeringPolicy(resale_markup=Decimal("0.2")), 12), T0)
    s.put_peer(PeerRecord("yungu-horinger", "H2", "http://h2", ({"keyid": "k", "public_key": "p"},)), T0)
    (peer,) = s.peers()
    assert peer.name == "H2" and peer.base_url == "http://h2" and peer.state == "healthy"
    s.record_health("yungu-horinger", "healthy", "suspect", T0, "timeout")
    assert s.peer("yungu-horinger").state == "suspect" and s.peer_events("yungu-horinger")[0]["to"] == "suspect"

    s.insert_outbound([outbound("j1.0", T0 + timedelta(seconds=30))])
    s.insert_outbound([outbound("j1.0", T0 + timedelta(seconds=10))])  # a retry never shortens the lease
    assert s.outbound_one("j1.0").lease_until == T0 + timedelta(seconds=30)
    s.extend_leases(["j1.0"], T0 + timedelta(seconds=60))
    s.extend_leases(["j1.0"], T0 + timedelta(seconds=40))
    assert s.outbound_one("j1.0").lease_until == T0 + timedelta(seconds=60)
    assert s.outbound_one("j1.0").offered_price == Decimal("9.50")

    assert s.insert_inbound([inbound("yungu-beijing:j1.0")]) == {"yungu-beijing:j1.0"}
    assert s.insert_inbound([inbound("yungu-beijing:j1.0", "refused")]) == set()  # first writer wins
    assert s.inbound("yungu-beijing:j1.0").state == "active"
    assert [r.attempt for r in s.inbound_for_job("yungu-beijing", "j1")] == [0]

    row = {"receipt_id": "rc:1", "side": "issued", "kind": "compute", "issuer": "yungu-horinger",
           "origin": "yungu-beijing", "request_id": "j1.0", "period": "2026-12", "amount_fen": 3800, "body": "{}",
           "signature": "s", "booked": False, "acked": False, "created_at": T0}
    assert s.add_receipt(row) and not s.add_receipt(row)
    assert not s.add_receipt({**row, "receipt_id": "rc:2"})  # one receipt per (side, issuer, request)
    assert s.add_receipt({**row, "side": "received"})
    s.mark_receipts("issued", ["rc:1"], booked=True)
    assert [r.booked for r in s.receipts(side="issued")] == [True]
    engine.dispose()

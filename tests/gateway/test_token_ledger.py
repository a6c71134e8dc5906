"""Token usage into the ledger on the device-hour path, exactly once and exact to the fen;
token receipts booked between two platforms' ledgers (two real databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ledger.billing_world import WORLD
from yungu.adapters.gateway.billing import Receipts, TokenBilling
from yungu.adapters.gateway.store import TokenStore, UsageRecord
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.signing import public_b64
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts
from yungu.adapters.store import tables as _tables  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.system import Ids
from yungu.control.billing import BillingLoop, wallet
from yungu.domain.clock import FixedClock
from yungu.domain.errors import InvalidInput
from yungu.engines.gateway.pricing import Price, units_to_fen_rounded
from yungu.engines.gateway.receipts import clearing_account, make_receipt, peer_provider
from yungu.engines.ledger import Account, AccountKind, Transfer

PRICE = Price(Decimal("3.0000"), Decimal("9.0000"))


class Platform:
    def __init__(self, path: Path, name: str = "yungu-test") -> None:
        self.engine = create_engine(f"sqlite:///{path}")
        migrate(self.engine)
        self.clock = FixedClock(datetime(2026, 3, 10, 4, 0, tzinfo=UTC))
        self.ids = Ids()
        self.ledger = LedgerStore(self.engine, self.clock)
        ensure_system_accounts(self.ledger)
        self.billing = BillingStore(self.engine, self.clock)
        self.loop = BillingLoop(self.ledger, self.billing, WORLD, self.clock)
        self.tokens = TokenStore(self.engine)
        self.token_billing = TokenBilling(self.tokens, self.billing, self.ids.new, self.clock)
        self.name = name

    def usage(self, n: int, tenant: str = "t1", tin: int = 1234, tout: int = 567, provider: str = "acme-idc",
              platform: str = "") -> list[UsageRecord]:
        recs = [UsageRecord(f"req_{self.ids.new()}", "k1", tenant, "m", "chat", "r1", platform, provider, "bj-1/a100",
                            tin + i, tout + 2 * i, "backend", PRICE, PRICE.cost(tin + i, tout + 2 * i), "ok",
                            "2026-03", "2026-03", self.clock.now()) for i in range(n)]
        assert self.tokens.add_usage(recs) == n
        return recs

    def bill(self) -> None:
        self.token_billing.run_once()
        while self.loop.book():
            pass

    def balance(self, account: str) -> int:
        return self.ledger.account(account)[1].posted


def topup(p: Platform, tenant: str, fen: int) -> None:
    p.ledger.open_accounts([Account(wallet(tenant), AccountKind.TENANT_WALLET, "CNY", 0, tenant, "wallet")])
    assert p.ledger.submit([Transfer(f"topup-{tenant}", "sys:cny:external", wallet(tenant), fen, "CNY")])[0].ok


def test_token_usage_is_booked_once_to_the_fen_with_sub_fen_costs_carried(tmp_path: Path) -> None:
    p = Platform(tmp_path / "a.db")
    topup(p, "t1", 100_000)
    recs = p.usage(7)
    p.bill()
    p.bill()  # a second pass books nothing more
    exact = sum(r.cost_units for r in recs)
    assert 100_000 - p.balance(wallet("t1")) == units_to_fen_rounded(exact)
    recs += p.usage(5)  # a later batch: only the change of the rounded cumulative sum is booked
    p.bill()
    assert 100_000 - p.balance(wallet("t1")) == units_to_fen_rounded(sum(r.cost_units for r in recs))
    assert p.billing.unbooked(1000) == []
    assert p.tokens.add_usage(recs) == 0  # the same request ids again: ignored (exactly once)


def test_a_crash_between_batching_and_handing_hands_the_batch_once(tmp_path: Path) -> None:
    p = Platform(tmp_path / "a.db")
    topup(p, "t1", 100_000)
    recs = p.usage(40, tin=100_000, tout=50_000)
    assert p.tokens.make_batches(p.ids.new, p.clock.now())  # ... and the process dies here
    p.bill()
    p.bill()
    assert 100_000 - p.balance(wallet("t1")) == units_to_fen_rounded(sum(r.cost_units for r in recs))


def test_a_tenant_without_wallet_funds_owes_arrears(tmp_path: Path) -> None:
    p = Platform(tmp_path / "a.db")
    recs = p.usage(3, tenant="t2", tin=1_000_000, tout=1_000_000)
    p.bill()
    fen = units_to_fen_rounded(sum(r.cost_units for r in recs))
    assert fen > 0 and p.balance("tenant:t2:arrears") == -fen


def test_receipts_are_booked_in_both_ledgers_and_mirror_each_other(tmp_path: Path) -> None:
    a, b = Platform(tmp_path / "a.db", "yungu-a"), Platform(tmp_path / "b.db", "yungu-b")
    ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = {"yungu-a": public_b64(ka), "yungu-b": public_b64(kb)}
    ra = Receipts("yungu-a", a.tokens, a.ledger, a.ids.new, a.clock, ka, keys.get)
    rb = Receipts("yungu-b", b.tokens, b.ledger, b.ids.new, b.clock, kb, keys.get, provider="b-idc")
    # A's customer was billed for tokens B's replica served (provider peer-yungu-b on A's side).
    topup(a, "t1", 10_000_000)
    a.usage(20, tin=300_000, tout=200_000, provider=peer_provider("yungu-b"), platform="yungu-b")
    a.bill()
    receipts = [make_receipt(request_id=f"req{i}", server="yungu-b", client="yungu-a", model="m",
                             tokens_in=300_000 + i, tokens_out=200_000 + 2 * i, counted=False, price=PRICE,
                             served_at="2026-03-10T04:00:00+00:00", period="2026-03") for i in range(20)]
    signed = [rb.issue(r) for r in receipts]
    for body, sig in signed:
        ra.accept(json.loads(json.dumps(body)), sig)  # as carried over the wire
        ra.accept(body, sig)  # a duplicate delivery is recorded once
    fen_a, fen_b = ra.book(), rb.book()
    assert ra.book() == 0 and rb.book() == 0  # booked once
    want = units_to_fen_rounded(sum(r.cost_units for r in receipts))
    assert fen_a == fen_b == want > 0
    assert a.balance(clearing_account("yungu-b")) == want  # A owes B (credited)
    assert b.balance(clearing_account("yungu-a")) == -want  # B is owed by A (debited)
    assert b.balance("provider:b-idc:receivable") + b.balance("sys:cny:revenue") == want


@pytest.mark.parametrize("tamper", [{"tokens_out": 1}, {"cost_units": 0}, {"client": "yungu-c"}])
def test_tampered_or_misaddressed_receipts_are_refused(tmp_path: Path, tamper: dict) -> None:
    a, b = Platform(tmp_path / "a.db", "yungu-a"), Platform(tmp_path / "b.db", "yungu-b")
    kb = Ed25519PrivateKey.generate()
    ra = Receipts("yungu-a", a.tokens, a.ledger, a.ids.new, a.clock, Ed25519PrivateKey.generate(),
                  {"yungu-b": public_b64(kb)}.get)
    rb = Receipts("yungu-b", b.tokens, b.ledger, b.ids.new, b.clock, kb, {}.get)
    body, sig = rb.issue(make_receipt(request_id="r1", server="yungu-b", client="yungu-a", model="m", tokens_in=10,
                                      tokens_out=10, counted=True, price=PRICE, served_at="2026-03-10T00:00:00Z",
                                      period="2026-03"))
    with pytest.raises(InvalidInput):
        ra.accept({**body, **tamper}, sig)
    with pytest.raises(InvalidInput):
        ra.accept(body, "AAAA" + sig[4:])
    with pytest.raises(InvalidInput):  # an unknown peer
        Receipts("yungu-a", a.tokens, a.ledger, a.ids.new, a.clock, kb, {}.get).accept(body, sig)
    assert a.tokens.receipts() == []


def test_invoice_carries_the_token_line(tmp_path: Path) -> None:
    p = Platform(tmp_path / "a.db")
    topup(p, "t1", 10_000_000)
    p.usage(3, tin=2_000_000, tout=1_000_000)
    p.bill()
    p.clock.set(datetime(2026, 4, 2, tzinfo=UTC) + timedelta(hours=1))
    (inv,) = p.loop.close_period("2026-03")
    (line,) = inv.lines
    assert line.unit == "百万tokens" and line.spec.startswith("tokens m:") and line.quantity == Decimal("9.000009")

"""Market API: posted prices, orders, call auctions, reservations, price index, SLA credits,
and signed cross-platform clearing statements."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from yungu.adapters.ledger.market_store import Reservation
from yungu.adapters.ledger.signing import canonical
from yungu.adapters.ledger.store import raise_for
from yungu.adapters.store.ledger_tables import clearing_statements
from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.routes.ledger import STAFF, Currency, LedgerId, Reason, audit, minor, money, services
from yungu.api.schemas import IsoTime, Money, Period, Ratio
from yungu.control.billing import receivable, wallet
from yungu.domain.errors import Forbidden, InvalidInput
from yungu.domain.tenancy import Principal, Role
from yungu.engines.ledger import Account, AccountKind, Transfer
from yungu.engines.ledger.clearing import minimal_settlements, net_positions
from yungu.engines.market import Order, Product
from yungu.engines.market.index import vwap
from yungu.engines.market.sla import SlaContract, availability, sla_credit

router = APIRouter(tags=["market"])


MAX_WINDOW = timedelta(days=366)


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(min_length=1, max_length=64)
    accelerator_class: str = Field(min_length=1, max_length=64)
    window_start: IsoTime
    window_end: IsoTime
    reserve_price: Money = "0"

    @model_validator(mode="after")
    def _window(self) -> Any:
        for t in (self.window_start, self.window_end):
            if t.tzinfo is None:
                raise ValueError("window times need a timezone (UTC) / 时间需带时区")
        if not self.window_start < self.window_end or self.window_end - self.window_start > MAX_WINDOW:
            raise ValueError("the window must end after it starts, within a year / 时间窗无效")
        return self

    def build(self) -> Product:
        return Product(self.region, self.accelerator_class, self.window_start, self.window_end,
                       minor(self.reserve_price, "CNY"))


class OrderIn(ProductIn):
    id: LedgerId
    side: Literal["bid", "ask"]
    party: str = Field("", max_length=200)
    quantity: int = Field(ge=1, le=1_000_000, strict=True)
    price: Money = Field(description="CNY per device-hour: max for bids, min for asks")
    pool_id: str = Field("", max_length=128)


class SlaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: LedgerId
    tenant_id: str = Field(min_length=1, max_length=64)
    provider: str = Field(min_length=1, max_length=200)
    period: Period
    up_seconds: int = Field(ge=0, le=10**9, strict=True)
    total_seconds: int = Field(ge=1, le=10**9, strict=True)
    charge: Money
    target: Ratio = "0.999"
    reason: Reason


class Obligation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    debtor: str = Field(min_length=1, max_length=200)
    creditor: str = Field(min_length=1, max_length=200)
    amount: Money


class StatementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    period: Period
    currency: Currency = "CNY"
    obligations: list[Obligation] = Field(max_length=10_000)


def reservation_json(r: Reservation) -> dict[str, Any]:
    return {"id": r.id, "auction_id": r.auction_id, "tenant_id": r.tenant_id, "provider": r.provider,
            "pool_id": r.pool_id, "window_start": r.window_start.isoformat(), "window_end": r.window_end.isoformat(),
            "devices": r.devices, "price": money(r.price_fen)}


@router.get("/market/prices")
def posted_prices(request: Request, p: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:
    """On-demand posted prices per pool (CNY per device-hour) / 按需挂牌价."""
    w = container(request).world
    return [{"pool_id": pool.id, "region": w.region_of_pool(pool.id), "class": pool.compute_class.value,
             "accelerator": pool.accelerator, "price_cny_per_device_hour": str(pool.price_cny_per_device_hour)}
            for pool in w.pools]


def provider_pools(c: Any, provider: str) -> set[str]:
    """The pools of the sites whose ``provider`` is ``provider``."""
    sites = {s.id for s in c.world.sites if s.provider == provider}
    return {pool.id for pool in c.world.pools if pool.site_id in sites}


@router.post("/market/orders", status_code=201)
def place(request: Request, body: OrderIn, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    """Tenants bid for themselves; providers ask for their own pools only; staff act for anyone."""
    c = container(request)
    if body.side == "bid":
        if p.role is Role.PROVIDER:
            raise Forbidden("providers ask; tenants bid / 提供方只能挂单卖出")
        if p.role is Role.TENANT and body.party and body.party != p.tenant_id:
            raise Forbidden("a tenant key bids only in its own name / 租户只能以自己的名义出价")
        party = p.tenant_id if p.role is Role.TENANT else body.party
    else:
        if p.role is Role.TENANT:
            raise Forbidden("tenants bid; providers and operators ask / 租户只能出价买入")
        if p.role is Role.PROVIDER:
            if not p.provider or (body.party and body.party != p.provider):
                raise Forbidden("a provider key asks only in its own provider's name / 提供方只能以自己的名义挂单")
            if body.pool_id not in provider_pools(c, p.provider):
                raise Forbidden(f"pool {body.pool_id!r} is not one of this provider's pools / 非本提供方资源池")
            party = p.provider
        else:
            party = body.party or (p.tenant_id or "")
    if body.pool_id and body.pool_id not in {pool.id for pool in c.world.pools}:
        raise InvalidInput(f"unknown pool {body.pool_id!r} / 未知资源池")
    if not party:
        raise InvalidInput("party is required / 需要指定交易方")
    product = body.build()
    o = services(c).market.place(product, body.side, Order(
        body.id, party, body.quantity, minor(body.price, "CNY"), body.pool_id))
    return {"id": o.id, "product": product.key, "side": body.side, "party": party, "quantity": o.quantity,
            "price": money(o.price_fen)}


@router.post("/market/auctions")
def run_auction(request: Request, body: ProductIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    r = services(container(request)).market.run_auction(body.build())
    return {"id": r.id, "product": r.product, "price": None if r.price_fen is None else money(r.price_fen),
            "volume": r.volume, "orders": r.orders, "reservations": [reservation_json(x) for x in r.reservations]}


@router.get("/market/reservations")
def reservations(request: Request, at: IsoTime | None = Query(None, description="ISO 8601 with a zone"),
                 pool_id: str | None = Query(None, max_length=128),
                 p: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:
    c = container(request)
    tenant = None if p.role is not Role.TENANT else p.tenant_id
    return [reservation_json(r) for r in services(c).market.reservations_at(at or c.clock.now(), pool_id, tenant)]


@router.get("/market/index")
def price_index(request: Request, product_line: str | None = Query(None, max_length=200)) -> dict[str, Any]:
    """The public price index (no key needed): clearing prices over time per product line."""
    pts = services(container(request)).market.price_index(product_line)
    lines: dict[str, list[Any]] = {}
    for pt in pts:
        lines.setdefault(pt.product_line, []).append(pt)
    return {line: {"vwap": None if vwap(v) is None else money(vwap(v) or 0),
                   "points": [{"at": x.at.isoformat(), "price": money(x.price_fen), "volume": x.volume} for x in v]}
            for line, v in lines.items()}


@router.post("/market/sla-credits")
def sla(request: Request, body: SlaIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """Measured availability below the contract -> an automatic credit, booked exactly once."""
    c = container(request)
    c.store.tenant(body.tenant_id)  # 404 for an unknown tenant: no wallet is opened for nobody
    s = services(c)
    if body.up_seconds > body.total_seconds:
        raise InvalidInput("up_seconds cannot exceed total_seconds / 可用时长不能超过总时长")
    measured = availability(body.up_seconds, body.total_seconds)
    credit = sla_credit(SlaContract(Decimal(body.target)), measured, minor(body.charge, "CNY"))
    result = "none"

    def book() -> Any:
        s.ledger.open_accounts([Account(receivable(body.provider), AccountKind.PROVIDER_RECEIVABLE, "CNY", None,
                                        body.provider, "provider receivable"),
                                Account(wallet(body.tenant_id), AccountKind.TENANT_WALLET, "CNY", 0, body.tenant_id,
                                        "wallet")])
        out = s.ledger.submit([Transfer(f"sla:{body.id}:{body.period}", receivable(body.provider),
                                        wallet(body.tenant_id), credit, ref=f"sla:{body.id}", memo="SLA credit")])[0]
        raise_for(out)
        return out

    if credit:
        result = audit(request, p, "market.sla_credit", f"sla:{body.id}:{body.period}", body.reason, book).result.value
    return {"availability": str(measured), "credit": money(credit), "result": result}


@router.post("/clearing/statements")
def statement(request: Request, body: StatementIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """Multilateral netting of peer obligations, signed by this platform (Ed25519)."""
    from yungu.adapters.ledger.signing import public_b64, sign, statement_body
    from yungu.adapters.ledger.statement_keys import platform_key

    c = container(request)
    pos = net_positions([(o.debtor, o.creditor, minor(o.amount, body.currency)) for o in body.obligations])
    doc = statement_body(body.period, body.currency, pos)
    key = platform_key(c.data_dir)
    transfers = minimal_settlements(pos)
    sigs = {c.world.platform_id: sign(doc, key)}
    sid = f"stmt:{body.period}:{body.currency}:{hashlib.sha256(canonical(doc)).hexdigest()[:16]}"
    with c.engine.begin() as conn:  # the same statement twice is stored once
        if conn.execute(select(clearing_statements.c.id).where(clearing_statements.c.id == sid)).first() is None:
            conn.execute(clearing_statements.insert().values(
                id=sid, period=body.period, currency=body.currency, body=canonical(doc).decode(),
                signatures=json.dumps(sigs), created_at=c.clock.now()))
    return {"id": sid, "body": doc, "signatures": sigs, "public_key": public_b64(key), "transfers": len(transfers)}


class VerifyIn(BaseModel):
    body: dict[str, Any]
    signatures: dict[str, str]
    public_keys: dict[str, str]


@router.post("/clearing/verify")
def verify_statement(body: VerifyIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """Check that every party of a statement signed exactly this body (422 otherwise)."""
    from yungu.adapters.ledger.signing import verify

    verify(body.body, body.signatures, body.public_keys)
    return {"valid": True, "parties": sorted(body.body.get("positions", {}))}

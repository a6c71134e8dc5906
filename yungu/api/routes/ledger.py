"""Ledger API: accounts, balances, transfers (single, batch, linked), wallet top-ups.

Amounts travel as decimal strings in the currency's major unit ("12.34" CNY); the ledger
keeps integer minor units. A float, or more decimals than the currency allows, is refused
(``schemas.Money``: one parser for every schema). An overdraft answers 402. Every money
movement an operator makes (top-up, transfer, batch) needs a ``reason`` and is written to the
audit log with the caller's key and the outcome (``GET /admin/audit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.market_store import MarketStore
from yungu.adapters.ledger.store import (
    LedgerStore,
    ensure_system_accounts,
    new_accounts_for_tenant,
    raise_for,
)
from yungu.adapters.store.audit_store import AuditLog
from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.schemas import Money
from yungu.control.billing import BillingLoop, Budgets, wallet
from yungu.domain.errors import Forbidden, InvalidInput
from yungu.domain.money import MINOR_UNITS, parse_amount
from yungu.domain.tenancy import Principal, Role
from yungu.engines.ledger import Account, AccountKind, Balance, Recorded, Transfer, TransferKind
from yungu.engines.ledger.invoice import Party
from yungu.engines.ledger.rating import from_minor, to_minor

router = APIRouter(tags=["ledger"])
STAFF = (Role.ADMIN, Role.OPERATOR)


@dataclass
class LedgerServices:
    ledger: LedgerStore
    billing: BillingStore
    market: MarketStore
    budgets: Budgets
    loop: BillingLoop


def services(c: Any) -> LedgerServices:
    """The area's services, built once per container from its engine, clock and world."""
    s = c.extras.get("ledger")
    if s is None:
        ledger = LedgerStore(c.engine, c.clock)
        ensure_system_accounts(ledger)
        billing = BillingStore(c.engine, c.clock)
        def buyers(tenant_id: str) -> Party:  # read at invoice time: tenants created later are found
            t = c.store.tenant(tenant_id)
            return Party(t.name, t.social_credit_code)

        seller = Party(c.world.platform_name, getattr(c.config, "social_credit_code", "") or "")
        loop = BillingLoop(ledger, billing, c.world, c.clock, c.catalogue, seller, buyers)
        s = c.extras["ledger"] = LedgerServices(ledger, billing, MarketStore(c.engine, c.clock), Budgets(ledger), loop)
    return s  # type: ignore[no-any-return]


def minor(value: object, currency: str) -> int:
    return to_minor(parse_amount(value, currency), MINOR_UNITS[currency])


Currency = Literal["CNY", "USD", "EUR", "JPY"]
LedgerId = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=3, max_length=500, pattern=r"\S",
                              description="why this money moves (kept in the audit log) / 原因（记入审计日志）")]
MAX_PENDING_S = 366 * 86400


def audit(request: Request, p: Principal, action: str, subject: str, reason: str, run: Any) -> Any:
    """Run a money movement and write who, why and the outcome to the audit log. A refused
    movement (an error) moved nothing and writes nothing: hostile input changes nothing."""
    c = container(request)
    log = c.extras.get("audit")
    if log is None:
        log = c.extras["audit"] = AuditLog(c.engine)
    out = run()
    res = getattr(out, "result", None) or getattr(out, "code", None)
    outcome = getattr(res, "value", None) or "ok"
    log.record(c.clock.now(), p.key_id, p.role.value, action, subject, reason, str(outcome))
    return out


def money(v: int, currency: str = "CNY") -> str:
    return str(from_minor(v, MINOR_UNITS.get(currency, 2)))


def account_json(a: Account, b: Balance) -> dict[str, Any]:
    c = a.currency
    return {"id": a.id, "kind": a.kind.value, "currency": c, "owner": a.owner, "name": a.name,
            "credit_limit": None if a.credit_limit is None else money(a.credit_limit, c),
            "balance": money(b.posted, c), "available": money(b.available, c),
            "pending_debits": money(b.debits_pending, c), "pending_credits": money(b.credits_pending, c)}


def transfer_json(r: Recorded) -> dict[str, Any]:
    t = r.transfer
    return {"id": t.id, "kind": t.kind.value, "debit_account": r.debit_account, "credit_account": r.credit_account,
            "amount": money(r.amount, t.currency), "currency": t.currency, "pending_id": t.pending_id or None,
            "ref": t.ref, "memo": t.memo, "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "state": r.state.value if r.state else None}


def check_account_access(p: Principal, account: Account) -> None:
    if not p.role.can_see_all_tenants() and account.owner != (p.tenant_id or "\0"):
        raise Forbidden("this account belongs to another party / 无权查看该账户")


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: LedgerId
    kind: AccountKind
    currency: Currency = "CNY"
    credit_limit: Money | None = "0"
    owner: str = Field("", max_length=200)
    name: str = Field("", max_length=200)


class TransferFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: LedgerId
    debit_account: str = Field("", max_length=200)
    credit_account: str = Field("", max_length=200)
    amount: Money = "0"
    currency: Currency = "CNY"
    kind: TransferKind = TransferKind.SINGLE
    pending_id: str = Field("", max_length=200)
    timeout_s: int = Field(0, ge=0, strict=True, le=MAX_PENDING_S, description="pending transfers: expiry, at most a year")
    ref: str = Field("", max_length=500)
    memo: str = Field("", max_length=500)

    def build(self) -> Transfer:
        return Transfer(self.id, self.debit_account, self.credit_account, minor(self.amount, self.currency),
                        self.currency, self.kind, self.pending_id, self.timeout_s, self.ref, self.memo)


class TransferIn(TransferFields):
    reason: Reason


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transfers: list[TransferFields] = Field(min_length=1, max_length=10_000)
    linked: bool = Field(False, strict=True)
    reason: Reason


class TopUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: LedgerId
    amount: Money
    currency: Currency = "CNY"
    reason: Reason = Field(description="e.g. the bank transfer it records / 如：对应的银行转账")


@router.post("/ledger/accounts", status_code=201)
def open_account(request: Request, body: AccountIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    s = services(container(request))
    limit = None if body.credit_limit is None else minor(body.credit_limit, body.currency)
    acc = s.ledger.open_account(Account(body.id, body.kind, body.currency, limit, body.owner, body.name))
    return account_json(*s.ledger.account(acc.id))


@router.get("/ledger/accounts")
def list_accounts(request: Request, owner: str | None = None, p: Principal = Depends(require(*ANY_ROLE))
                  ) -> list[dict[str, Any]]:
    s = services(container(request))
    if not p.role.can_see_all_tenants():
        owner = p.tenant_id or "\0"
    return [account_json(a, b) for a, b in s.ledger.accounts(owner=owner)]


@router.get("/ledger/accounts/{account_id:path}/transfers")
def account_transfers(request: Request, account_id: str, after: str = Query("", max_length=200),
                      limit: int = Query(100, ge=1, le=1000),
                      p: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:
    s = services(container(request))
    check_account_access(p, s.ledger.account(account_id)[0])
    return [transfer_json(r) for r in s.ledger.history(account_id, min(max(limit, 1), 1000), after)]


@router.get("/ledger/accounts/{account_id:path}")
def get_account(request: Request, account_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    s = services(container(request))
    a, b = s.ledger.account(account_id)
    check_account_access(p, a)
    return account_json(a, b)


@router.post("/ledger/transfers", status_code=201)
def create_transfer(request: Request, body: TransferIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    s = services(container(request))
    transfer = body.build()

    def run() -> Any:
        out = s.ledger.submit([transfer])[0]
        raise_for(out)
        return out

    out = audit(request, p, "ledger.transfer", body.id, body.reason, run)
    return transfer_json(s.ledger.get_transfer(body.id)) | {"result": out.result.value}


@router.post("/ledger/batches")
def create_batch(request: Request, body: BatchIn, p: Principal = Depends(require(*STAFF))) -> list[dict[str, Any]]:
    """Per-transfer results (``ok``/``exists`` succeed); ``linked``: all or nothing."""
    s = services(container(request))
    try:
        transfers = [t.build() for t in body.transfers]
    except InvalidInput as exc:
        raise InvalidInput(f"batch refused, nothing applied: {exc.message}") from exc
    outs = audit(request, p, "ledger.batch", f"{len(transfers)} transfers from {transfers[0].id}", body.reason,
                 lambda: s.ledger.submit(transfers, linked=body.linked))
    return [{"id": o.id, "result": o.result.value, "detail": o.detail} for o in outs]


@router.get("/ledger/transfers/{transfer_id:path}")
def get_transfer(request: Request, transfer_id: str, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    return transfer_json(services(container(request)).ledger.get_transfer(transfer_id))


@router.post("/ledger/tenants/{tenant_id}/topup", status_code=201)
def top_up(request: Request, tenant_id: str, body: TopUpIn, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """Record money received from a tenant (bank transfer) into its wallet / 充值."""
    c = container(request)
    c.store.tenant(tenant_id)  # NotFound for an unknown tenant
    s = services(c)
    transfer = Transfer(body.id, f"sys:{body.currency.lower()}:external", wallet(tenant_id),
                        minor(body.amount, body.currency), body.currency, ref=f"topup:{tenant_id}", memo="top-up")
    s.ledger.open_accounts(new_accounts_for_tenant(tenant_id, body.currency))

    def run() -> Any:
        out = s.ledger.submit([transfer])[0]
        raise_for(out)
        return out

    audit(request, p, "ledger.topup", f"{tenant_id}:{body.id}", body.reason, run)
    return account_json(*s.ledger.account(wallet(tenant_id)))


@router.post("/ledger/expire")
def expire(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    return {"expired": [o.id for o in services(container(request)).ledger.expire_due()]}

"""Ledger API: accounts, balances, transfers (single, batch, linked), wallet top-ups.

Amounts travel as decimal strings in the currency's major unit ("12.34" CNY); the ledger
keeps integer minor units. A float, or more decimals than the currency allows, is refused.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from yungu.adapters.ledger.store import new_accounts_for_tenant, raise_for
from yungu.api.deps import ANY_ROLE, container, require
from yungu.control.billing import wallet
from yungu.domain.errors import Forbidden, InvalidInput
from yungu.domain.money import MINOR_UNITS, parse_amount
from yungu.domain.tenancy import Principal, Role
from yungu.engines.ledger import Account, AccountKind, Balance, Recorded, Transfer, TransferKind
from yungu.engines.ledger.rating import from_minor, to_minor

router = APIRouter(tags=["ledger"])
STAFF = (Role.ADMIN, Role.OPERATOR)


def services(c: Any) -> Any:
    """The area's services (``yungu.app.container.LedgerServices``), built by the composition root."""
    return c.ledger


def minor(value: object, currency: str) -> int:
    return to_minor(parse_amount(value, currency), MINOR_UNITS[currency])


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
    id: str
    kind: AccountKind
    currency: str = "CNY"
    credit_limit: str | int | None = "0"
    owner: str = ""
    name: str = ""


class TransferIn(BaseModel):
    id: str
    debit_account: str = ""
    credit_account: str = ""
    amount: str | int = "0"
    currency: str = "CNY"
    kind: TransferKind = TransferKind.SINGLE
    pending_id: str = ""
    timeout_s: int = 0
    ref: str = ""
    memo: str = ""

    def build(self) -> Transfer:
        return Transfer(self.id, self.debit_account, self.credit_account, minor(self.amount, self.currency),
                        self.currency, self.kind, self.pending_id, self.timeout_s, self.ref, self.memo)


class BatchIn(BaseModel):
    transfers: list[TransferIn] = Field(max_length=10_000)
    linked: bool = False


class TopUpIn(BaseModel):
    id: str
    amount: str | int
    currency: str = "CNY"


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
def account_transfers(request: Request, account_id: str, after: str = "", limit: int = 100,
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
    out = s.ledger.submit([body.build()])[0]
    raise_for(out)
    return transfer_json(s.ledger.get_transfer(body.id)) | {"result": out.result.value}


@router.post("/ledger/batches")
def create_batch(request: Request, body: BatchIn, p: Principal = Depends(require(*STAFF))) -> list[dict[str, Any]]:
    """Per-transfer results (``ok``/``exists`` succeed); ``linked``: all or nothing."""
    s = services(container(request))
    try:
        transfers = [t.build() for t in body.transfers]
    except InvalidInput as exc:
        raise InvalidInput(f"batch refused, nothing applied: {exc.message}") from exc
    outs = s.ledger.submit(transfers, linked=body.linked)
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
    s.ledger.open_accounts(new_accounts_for_tenant(tenant_id, body.currency))
    out = s.ledger.submit([Transfer(body.id, f"sys:{body.currency.lower()}:external", wallet(tenant_id),
                                    minor(body.amount, body.currency), body.currency, ref=f"topup:{tenant_id}",
                                    memo="top-up")])[0]
    raise_for(out)
    return account_json(*s.ledger.account(wallet(tenant_id)))


@router.post("/ledger/expire")
def expire(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    return {"expired": [o.id for o in services(container(request)).ledger.expire_due()]}

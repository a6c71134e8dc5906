"""Tenants and API keys (admin only), and ``whoami`` for everyone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.sessions import sessions
from yungu.domain.errors import InvalidInput
from yungu.domain.tenancy import Principal, Role

router = APIRouter(tags=["admin"])


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    social_credit_code: str = Field("", max_length=32)
    prepaid: bool = Field(False, strict=True, description="reserve each job's estimated cost from the wallet at admission")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    tenant_id: str | None = Field(None, min_length=1, max_length=64)
    provider: str | None = Field(None, max_length=200, description="provider keys: the provider they act for "
                                 "(a site's `provider`, see GET /sites)")
    name: str = Field("", max_length=200)


@router.get("/whoami")
async def whoami(p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    return {"key_id": p.key_id, "role": p.role.value, "tenant_id": p.tenant_id, "provider": p.provider}


@router.post("/admin/tenants", status_code=201)
def create_tenant(request: Request, body: TenantIn = Body(...), _p: Principal = Depends(require())) -> dict[str, Any]:
    c = container(request)
    t = c.store.create_tenant(c.ids.new(), body.name, c.clock.now(), body.social_credit_code, body.prepaid)
    return {"id": t.id, "name": t.name, "social_credit_code": t.social_credit_code, "prepaid": t.prepaid,
            "created_at": t.created_at.isoformat()}


@router.get("/admin/tenants")
def list_tenants(request: Request, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    return {"items": [{"id": t.id, "name": t.name, "social_credit_code": t.social_credit_code,
                       "prepaid": t.prepaid, "created_at": t.created_at.isoformat()}
                      for t in container(request).store.tenants()]}


@router.post("/admin/keys", status_code=201)
def create_key(request: Request, body: KeyIn = Body(...), _p: Principal = Depends(require())) -> dict[str, Any]:
    c = container(request)
    if body.role is Role.PROVIDER:
        known = sorted({s.provider for s in c.world.sites})
        if body.provider not in known:
            raise InvalidInput(f"a provider key acts for one provider; give provider, one of {known} / "
                               f"请指定提供方")
        if body.tenant_id:
            raise InvalidInput("a provider key has no tenant / 提供方密钥不属于租户")
    elif body.provider is not None:
        raise InvalidInput("only a provider key names a provider / 只有提供方密钥可指定提供方")
    key, secret = c.store.create_key(c.ids.new(), body.role, body.tenant_id, body.name, c.clock.now(),
                                     provider=body.provider)
    return {"id": key.id, "prefix": key.prefix, "role": key.role.value, "tenant_id": key.tenant_id,
            "provider": key.provider, "name": key.name, "secret": secret,
            "note": "shown once; only its hash is stored / 仅显示一次"}


@router.get("/admin/keys")
def list_keys(request: Request, _p: Principal = Depends(require())) -> dict[str, Any]:
    return {"items": [{"id": k.id, "prefix": k.prefix, "role": k.role.value, "tenant_id": k.tenant_id,
                       "provider": k.provider, "name": k.name, "created_at": k.created_at.isoformat(), "revoked": k.revoked}
                      for k in container(request).store.api_keys()]}


@router.delete("/admin/keys/{key_id}", status_code=204)
def revoke_key(request: Request, key_id: str, _p: Principal = Depends(require())) -> None:
    container(request).store.revoke_key(key_id)
    request.app.state.key_cache.clear()
    sessions(request.app).drop_key(key_id)  # browser sessions signed in with it end too


@router.get("/admin/audit")
def audit_log(request: Request, after: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000),
              _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """Operator money movements: who (key id, role), what, why, and the outcome / 审计日志."""
    from yungu.adapters.store.audit_store import AuditLog

    items = AuditLog(container(request).engine).entries(after, limit)
    return {"items": [{"seq": e.seq, "at": e.at.isoformat(), "key_id": e.key_id, "role": e.role,
                       "action": e.action, "subject": e.subject, "reason": e.reason, "outcome": e.outcome,
                       "detail": e.detail} for e in items],
            "next_after": items[-1].seq if len(items) == limit else None}

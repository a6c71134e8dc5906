"""Tenants and API keys (admin only), and ``whoami`` for everyone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.sessions import sessions
from yungu.domain.tenancy import Principal, Role

router = APIRouter(tags=["admin"])


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    social_credit_code: str = Field("", max_length=32)
    prepaid: bool = Field(False, description="reserve each job's estimated cost from the wallet at admission")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    tenant_id: str | None = None
    name: str = Field("", max_length=200)


@router.get("/whoami")
async def whoami(p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    return {"key_id": p.key_id, "role": p.role.value, "tenant_id": p.tenant_id}


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
    key, secret = c.store.create_key(c.ids.new(), body.role, body.tenant_id, body.name, c.clock.now())
    return {"id": key.id, "prefix": key.prefix, "role": key.role.value, "tenant_id": key.tenant_id,
            "name": key.name, "secret": secret, "note": "shown once; only its hash is stored / 仅显示一次"}


@router.get("/admin/keys")
def list_keys(request: Request, _p: Principal = Depends(require())) -> dict[str, Any]:
    return {"items": [{"id": k.id, "prefix": k.prefix, "role": k.role.value, "tenant_id": k.tenant_id,
                       "name": k.name, "created_at": k.created_at.isoformat(), "revoked": k.revoked}
                      for k in container(request).store.api_keys()]}


@router.delete("/admin/keys/{key_id}", status_code=204)
def revoke_key(request: Request, key_id: str, _p: Principal = Depends(require())) -> None:
    container(request).store.revoke_key(key_id)
    request.app.state.key_cache.clear()
    sessions(request.app).drop_key(key_id)  # browser sessions signed in with it end too

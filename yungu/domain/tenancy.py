"""Tenants, users, API keys and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything, including keys and tenants
    OPERATOR = "operator"  # sees all jobs and pools, sets prices and policies
    PROVIDER = "provider"  # offers capacity, sees its own pools' load
    TENANT = "tenant"  # submits and sees its own tenant's jobs only

    def can_see_all_tenants(self) -> bool:
        return self in (Role.ADMIN, Role.OPERATOR)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    social_credit_code: str = ""  # 统一社会信用代码, for e-invoices
    prepaid: bool = False  # prepaid: jobs reserve their estimated cost at admission; else post-paid


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str  # first characters, shown to humans; the secret is only stored hashed
    role: Role
    tenant_id: str | None
    name: str
    created_at: datetime
    revoked: bool = False
    provider: str | None = None  # provider keys: the provider (``Site.provider``) they act for


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key at the edge."""

    key_id: str
    role: Role
    tenant_id: str | None
    provider: str | None = None  # a provider key acts only for this provider's sites and pools

    def may_act_for_provider(self, provider: str) -> bool:
        return self.role.can_see_all_tenants() or (self.role is Role.PROVIDER and self.provider == provider)

    def may_access_tenant(self, tenant_id: str) -> bool:
        return self.role.can_see_all_tenants() or self.tenant_id == tenant_id

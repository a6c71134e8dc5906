"""Request-scoped dependencies: the container and the authenticated principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from yungu.api.sessions import session_principal
from yungu.domain.errors import Forbidden, Unauthorized
from yungu.domain.tenancy import Principal, Role


def container(request: Request) -> Any:
    """The composition root's ``Container`` (typed loosely: the api layer sits below ``app``)."""
    return request.app.state.container


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not secret:
        sp = session_principal(request)  # the web console's session cookie (issue 13)
        if sp is not None:
            return sp
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' / 缺少 API 密钥")
    cache: dict[str, Principal] = request.app.state.key_cache
    p = cache.get(secret)
    if p is None:
        p = container(request).store.principal(secret)
        if p is None:
            raise Unauthorized("invalid or revoked API key / API 密钥无效或已吊销")
        cache[secret] = p
    return p


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only the given roles (admin is always admitted).

    ``async`` on purpose: a sync dependency costs a thread-pool round trip per request, and
    the key lookup is a dictionary hit after the first request with a key."""
    allowed = set(roles) | {Role.ADMIN}

    async def _dep(request: Request) -> Principal:
        p = principal(request)
        if p.role not in allowed:
            raise Forbidden(f"role {p.role.value!r} may not do this; needs one of {sorted(r.value for r in allowed)}")
        return p

    return _dep


ANY_ROLE = (Role.ADMIN, Role.OPERATOR, Role.PROVIDER, Role.TENANT)

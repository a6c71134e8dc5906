"""Request-scoped dependencies: the container and the authenticated principal.

Authentication takes an API key (``Authorization: Bearer`` or ``X-API-Key``). A failed
attempt (no key, unknown or revoked key) costs the caller's address a token of the
failed-authentication bucket (``ratelimit.Limiter``); an address that has none left gets 429
before its key is looked up. Keys already known good (in the key cache) are not held up by
other failures from the same address (a shared NAT). Another credential (a session cookie)
plugs in at ``_credential``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from yungu.api.ratelimit import client_address
from yungu.api.sessions import session_principal
from yungu.domain.errors import Forbidden, Unauthorized
from yungu.domain.tenancy import Principal, Role


def container(request: Request) -> Any:
    """The composition root's ``Container`` (typed loosely: the api layer sits below ``app``)."""
    return request.app.state.container


def _credential(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def auth_failed(request: Request, message: str) -> Unauthorized:
    """Count a failed authentication against the caller's address; the error to raise."""
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        limiter.auth_failed(client_address(request.scope))
    return Unauthorized(message)


def check_address(request: Request) -> None:
    """429 if the caller's address has used up its failed authentications."""
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        limiter.check_address(client_address(request.scope))


def principal(request: Request) -> Principal:
    secret = _credential(request)
    cache: dict[str, Principal] = request.app.state.key_cache
    p = cache.get(secret) if secret else None
    if p is not None:
        return p
    check_address(request)
    if not secret:
        sp = session_principal(request)  # the web console's session cookie (issue 13)
        if sp is not None:
            return sp
        raise auth_failed(request, "missing API key: send 'Authorization: Bearer <key>' / 缺少 API 密钥")
    if len(secret) > 200:
        raise auth_failed(request, "invalid or revoked API key / API 密钥无效或已吊销")
    p = container(request).store.principal(secret)
    if p is None:
        raise auth_failed(request, "invalid or revoked API key / API 密钥无效或已吊销")
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

    _dep.yungu_roles = frozenset(allowed)  # type: ignore[attr-defined]  # read by openapi.py
    return _dep


ANY_ROLE = (Role.ADMIN, Role.OPERATOR, Role.PROVIDER, Role.TENANT)

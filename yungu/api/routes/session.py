"""Sign-in for the web console: ``/api/v1/session`` (see ``yungu.api.sessions``).

- ``POST /session`` ``{"api_key": "yg_..."}``: checks the key, sets the session cookie, answers
  the role, tenant and the CSRF token. Refused from another origin (login CSRF).
- ``GET /session``: who the cookie belongs to, with the CSRF token (same-origin script only).
- ``DELETE /session``: sign out (needs the CSRF token like every unsafe cookie request).
- ``POST /session/tickets`` (operator key): a single-use kiosk sign-in link for the big screen;
  ``GET /session/redeem?ticket=...`` sets the cookie and redirects to ``/screen``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from yungu.api.deps import container, require
from yungu.api.sessions import (
    COOKIE,
    MAX_AGE_S,
    TICKET_TTL_S,
    Session,
    session_of,
    session_principal,
    sessions,
)
from yungu.domain.errors import Forbidden, NotFound, Unauthorized
from yungu.domain.tenancy import Principal, Role

router = APIRouter(tags=["session"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str = Field(min_length=1, max_length=200)


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:  # not a browser form/fetch from another page (CLI, tests)
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise Forbidden(f"sign-in from another origin ({origin}) is refused / 拒绝跨站登录")


def _body(p: Principal, s: Session, request: Request) -> dict[str, Any]:
    tenant = None
    if p.tenant_id:
        try:
            tenant = container(request).store.tenant(p.tenant_id).name
        except NotFound:  # a deleted tenant: the session still says who it is
            tenant = None
    return {"role": p.role.value, "tenant_id": p.tenant_id, "tenant_name": tenant, "key_id": p.key_id,
            "csrf_token": s.csrf, "max_age_s": MAX_AGE_S,
            "platform_id": container(request).world.platform_id,
            "platform_name": container(request).world.platform_name}


def _set_cookie(resp: Response, request: Request, sid: str) -> None:
    resp.set_cookie(COOKIE, sid, max_age=MAX_AGE_S, path="/", httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")


@router.post("/session", status_code=201)
def sign_in(request: Request, body: SignIn = Body(...)) -> JSONResponse:
    _same_origin(request)
    p = container(request).store.principal(body.api_key.strip())
    if p is None:
        raise Unauthorized("invalid or revoked API key / API 密钥无效或已吊销")
    old = session_of(request)
    if old is not None:  # a fresh id at every sign-in (no session fixation)
        sessions(request.app).drop(old[0])
    sid, s = sessions(request.app).create(p)
    resp = JSONResponse({"signed_in": True, **_body(p, s, request)}, status_code=201, headers={"Cache-Control": "no-store"})
    _set_cookie(resp, request, sid)
    return resp


@router.get("/session")
def current(request: Request) -> JSONResponse:
    """Who the session cookie belongs to (``signed_in: false`` without one: not an error for a page)."""
    found = session_of(request)
    if found is None:
        return JSONResponse({"signed_in": False}, headers={"Cache-Control": "no-store"})
    _, s = found
    return JSONResponse({"signed_in": True, **_body(s.principal, s, request)}, headers={"Cache-Control": "no-store"})


@router.delete("/session", status_code=204)
def sign_out(request: Request) -> Response:
    if session_principal(request) is None:  # checks the CSRF token
        raise Unauthorized("not signed in / 未登录")
    found = session_of(request)
    if found is not None:
        sessions(request.app).drop(found[0])
    resp = Response(status_code=204)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


@router.post("/session/tickets", status_code=201)
def ticket(request: Request, next_path: str = Query("/screen", alias="next", pattern=r"^/(screen)?$"),
           p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """A single-use sign-in link (valid 10 minutes) for a kiosk: ``yungu screen`` prints it."""
    t = sessions(request.app).ticket(p)
    return {"ticket": t, "path": f"/api/v1/session/redeem?ticket={t}&next={next_path}",
            "expires_in_s": TICKET_TTL_S, "role": p.role.value}


@router.get("/session/redeem", include_in_schema=True)
def redeem(request: Request, ticket: str = Query(..., min_length=8, max_length=100),
           next_path: str = Query("/screen", alias="next", pattern=r"^/(screen)?$")) -> Response:
    p = sessions(request.app).redeem(ticket)
    if p is None:
        raise Unauthorized("this sign-in link was used or has expired; run `yungu screen` again / "
                           "登录链接已使用或已过期，请重新运行 yungu screen")
    sid, _ = sessions(request.app).create(p)
    resp = RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store",
                                                                  "Referrer-Policy": "no-referrer"})
    _set_cookie(resp, request, sid)
    return resp

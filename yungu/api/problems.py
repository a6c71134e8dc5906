"""RFC 9457 problem details for every error the API returns.

Every error answer is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and a stable ``code``. A bug (any exception outside the ``YunguError`` tree) is
logged with its traceback and answered with a generic 500 problem that names an incident id
and nothing of the exception: internal text never reaches a client.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from yungu.domain.errors import YunguError

PROBLEM = "application/problem+json"
TYPE_BASE = "https://yungu.dev/problems/"
log = logging.getLogger("yungu.api")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "body_too_large",
              415: "unsupported_media_type", 422: "invalid_input", 429: "rate_limited"}


def problem(status: int, title: str, detail: str, code: str, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=dict(headers or {}))


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route takes at ``path`` (Starlette's own 405 names only the first
    route that matched the path, so a path with GET and POST in two handlers said one)."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        from yungu.api.openapi import api_routes

        routes = [*api_routes(app), *(r for r in app.routes if hasattr(r, "path_regex"))]
        table = app.state.allow_table = [(r.path_regex, frozenset(r.methods or ())) for r in routes]
    methods: set[str] = set()
    for regex, ms in table:
        if regex.match(path):
            methods |= ms
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(YunguError)
    async def _domain(_req: Request, exc: YunguError) -> JSONResponse:
        retry = getattr(exc, "retry_after_s", None)
        return problem(exc.http_status, type(exc).__name__, exc.message, exc.code,
                       headers={"Retry-After": str(retry)} if retry else None,
                       **({"extra": exc.detail} if exc.detail else {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:500],
                   "type": str(e.get("type", ""))} for e in exc.errors()][:50]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(x for x in first["loc"] if x != "body")
        return problem(422, "Invalid request", f"{where}: {first['msg']}" if where else str(first["msg"]),
                       "invalid_input", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_" + str(exc.status_code))
        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(req.app, req.url.path))
        return problem(exc.status_code, title, str(exc.detail), code, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        incident = secrets.token_hex(8)
        log.error("unhandled error %s in %s %s", incident, req.method, req.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return problem(500, "Internal error", f"the platform failed on this request (incident {incident}); it "
                       "is logged for the operator / 平台内部错误，已记录", "internal_error", incident=incident)

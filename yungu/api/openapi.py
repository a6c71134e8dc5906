"""The OpenAPI document states the answers the API really gives.

FastAPI documents only the success answer and a JSON 422 of its own shape. Every error here
is ``application/problem+json`` (``problems.py``), so each operation lists the 4xx answers it
can give, with the ``Problem`` schema: 401/403/429 where a key is required (429 also carries
``Retry-After``), 404 where the path names something, 409 and 413 where a body is sent, 402
where money moves, 405 with ``Allow`` for a method the path does not take, 422 for input that
does not validate. Security schemes say which credential an operation takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from yungu.api.problems import PROBLEM

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details / 错误详情",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "stable machine-readable slug, e.g. invalid_input"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "loc": {"type": "array", "items": {"type": "string"}}, "msg": {"type": "string"},
            "type": {"type": "string"}}}},
        "extra": {"type": "object"},
        "incident": {"type": "string"},
    },
}

WHY = {
    400: "Malformed request / 请求格式错误",
    401: "Missing, unknown or revoked key / 缺少或无效的密钥",
    402: "Not enough funds: the account would pass its credit limit / 余额不足",
    403: "The key's role or owner may not do this / 无权限",
    404: "Not found, or belongs to another tenant / 不存在",
    405: "Method not allowed on this path; `Allow` lists the methods it takes / 方法不允许",
    409: "Conflicts with what exists (an id reused with another body, a state that forbids it) / 冲突",
    413: "Body over 1 MiB (counted as it streams, chunked or not) / 请求体过大",
    422: "Invalid input: the problem says which field and why / 输入无效",
    429: "Over a rate limit; retry after `Retry-After` seconds / 请求过于频繁",
}

MONEY_PATHS = ("/api/v1/ledger/", "/api/v1/billing/", "/api/v1/market/")


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route with its full path (routers included under /api/v1 are expanded:
    recent FastAPI keeps them as included-router entries in ``app.routes``)."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    for r in expand(app.routes) if expand is not None else app.routes:
        if isinstance(getattr(r, "original_route", r), APIRoute):
            yield r


def _requires_key(route: APIRoute) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        d = stack.pop()
        if getattr(d.call, "yungu_roles", None) is not None:
            return True
        stack.extend(d.dependencies)
    return False


def _codes(route: APIRoute, method: str) -> list[int]:
    codes = {405, 422}
    if _requires_key(route) or route.path == "/api/v1/telemetry/ingest":
        codes |= {401, 403, 429}
    if route.dependant.path_params:
        codes.add(404)
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        codes |= {400, 404, 409, 413}
        if route.path.startswith(MONEY_PATHS):
            codes.add(402)
    return sorted(codes)


def _response(code: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": WHY[code],
                           "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if code == 429:
        out["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    if code == 405:
        out["headers"] = {"Allow": {"description": "the methods this path takes", "schema": {"type": "string"}}}
    return out


def build(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    comps["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "API key: Authorization: Bearer yg_..."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "nodeKey": {"type": "apiKey", "in": "header", "name": "X-Node-Key",
                    "description": "telemetry agents: the node key from POST /telemetry/nodes"},
    }
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        item = doc["paths"].get(route.path_format, {})
        for method in route.methods:
            op = item.get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's JSON shape; ours is problem+json
            for code in _codes(route, method):
                responses[str(code)] = _response(code)
            if route.path == "/api/v1/telemetry/ingest":
                op["security"] = [{"nodeKey": []}]
            elif _requires_key(route):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

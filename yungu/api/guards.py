"""ASGI guards in front of every route: body size, NUL bytes, security headers.

Pure ASGI (no per-request task, unlike ``BaseHTTPMiddleware``), so they cost microseconds.

- ``RequestGuard`` refuses a body over ``max_body`` bytes with 413 whether or not it says how
  long it is: a ``Content-Length`` over the limit is refused before anything is read, and a
  ``Transfer-Encoding: chunked`` body is counted as it streams, the request failing as soon as
  it passes the limit (nothing past the limit is buffered, parsed or stored). It refuses NUL
  bytes anywhere in the path, the query or a body (raw, or as the JSON escape ``\\u0000``):
  no field of the platform needs one, PostgreSQL cannot store one in text, and C-level
  consumers (the shell, exec, file names) would silently cut the string there.
- ``SecurityHeaders`` adds ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy`` to
  every response, and a Content-Security-Policy and ``X-Frame-Options`` to HTML ones
  (invoices, certificates, the web console): no framing, no foreign scripts, nothing loaded
  from outside the platform (which works offline anyway).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException

from yungu.api import problems

MAX_BODY_BYTES = 1 << 20

# An escaped NUL in JSON: "\u0000" preceded by an even number of further backslashes (an odd
# number in all, the last one starting the escape). "\\u0000" is the text backslash-u0000.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

CSP_HTML = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# FastAPI's interactive docs page is an inline script that loads Swagger UI from its CDN (so it
# needs a network; the OpenAPI document itself is served locally at /api/v1/openapi.json).
CSP_DOCS = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit: FastAPI lets an
    ``HTTPException`` raised while it reads the body through, and the app answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"bodies are limited to {limit} bytes / 请求体过大")


class NulInBody(HTTPException):
    def __init__(self) -> None:
        super().__init__(422, "NUL bytes are not accepted in any field / 不接受 NUL 字节")


def _query_has_nul(qs: bytes) -> bool:
    return b"\x00" in qs or b"%00" in qs


class RequestGuard:
    def __init__(self, app: Any, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _query_has_nul(scope.get("query_string", b"")):
            await problems.problem(422, "Invalid request", "NUL bytes are not accepted in the path or query / "
                                   "路径或查询参数含 NUL 字节", "nul_byte")(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await problems.problem(413, "Request body too large",
                                       f"bodies are limited to {self.max_body} bytes; got {int(value)}",
                                       "body_too_large")(scope, receive, send)
                return
        limit = self.max_body
        parts: list[bytes] = []
        size = 0

        async def guarded() -> Any:
            nonlocal size
            msg = await receive()
            if msg["type"] == "http.request":
                body = msg.get("body", b"")
                if body:
                    size += len(body)
                    if size > limit:
                        raise BodyTooLarge(limit)
                    prev = parts[-1][-8:] if parts else b""
                    parts.append(body)
                    if b"\x00" in body:
                        raise NulInBody()
                    # cheap test per chunk (with the previous chunk's tail); the exact one only on a hit
                    hit = b"u0000" in prev + body[:16] or b"u0000" in body
                    if hit and _JSON_NUL.search(b"".join(parts)):
                        raise NulInBody()
            return msg

        await self.app(scope, guarded, send)


class SecurityHeaders:
    def __init__(self, app: Any, csp: str = CSP_HTML, per_path: dict[str, str] | None = None) -> None:
        self.app, self.csp = app, csp.encode()
        self.per_path = {k: v.encode() for k, v in (per_path or {"/api/v1/docs": CSP_DOCS}).items()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        csp = self.per_path.get(scope["path"], self.csp)

        async def with_headers(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    extra += [(b"content-security-policy", csp), (b"x-frame-options", b"DENY")]
                headers += [(k, v) for k, v in extra if k not in names]
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, with_headers)

"""Serves ``/`` (console), ``/screen`` (big screen) and ``/static/*`` with strict security headers.

Assets are read once at start, kept with a gzip copy and a content hash (``ETag``); HTML is
revalidated on every load (``no-cache``), assets too, so an upgrade never mixes versions.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

STATIC = Path(__file__).with_name("static")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gz: bytes
    etag: str
    media_type: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    media = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Asset(body, gzip.compress(body, 9, mtime=0), '"' + hashlib.sha256(body).hexdigest()[:20] + '"', media)


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    return {p.name: _load(p) for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")}


ASSETS = load_assets()
router = APIRouter(include_in_schema=False)


def _send(request: Request, a: Asset) -> Response:
    headers = {"ETag": a.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **SECURITY_HEADERS}
    if request.headers.get("if-none-match") == a.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "") and len(a.gz) < len(a.body):
        return Response(a.gz, media_type=a.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(a.body, media_type=a.media_type, headers=headers)


def _page(name: str) -> Any:
    async def page(request: Request) -> Response:
        return _send(request, ASSETS[name])

    return page


router.add_api_route("/", _page("index.html"), methods=["GET", "HEAD"])
router.add_api_route("/screen", _page("screen.html"), methods=["GET", "HEAD"])


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    a = ASSETS.get(name)
    if a is None or name.endswith(".html"):
        return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return _send(request, a)


@router.get("/favicon.ico")
async def favicon(request: Request) -> Response:
    return _send(request, ASSETS["favicon.svg"])


def mount(app: Any) -> None:
    """Add the console and big screen to a FastAPI app (the composition root calls this)."""
    app.include_router(router)

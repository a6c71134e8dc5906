"""The peer HTTP client: every request signed, every response's signature checked.

Expected failures are values for the caller to act on: :class:`PeerUnreachable` (no verified
answer: connection refused, timeout, a broken or unsigned response) and :class:`PeerRefused`
(a verified 4xx/5xx problem answer from the peer).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from yungu.adapters.federation.httpsig import Message, SignatureRefused, Signer


class PeerUnreachable(Exception):
    pass


class PeerRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class PeerClient:
    def __init__(self, peer_id: str, base_url: str, signer: Signer, timeout_s: float = 3.0) -> None:
        self.peer_id = peer_id
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(1.0, timeout_s)),
                                  limits=httpx.Limits(max_keepalive_connections=4, max_connections=8))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        if params:
            url += "?" + str(httpx.QueryParams(params))
        data = b"" if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = self.signer.sign_request(method, url, data)
        try:
            resp = self._http.request(method, url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"{self.peer_id}: {type(exc).__name__}: {exc}") from None
        req = Message(method.upper(), url, dict(headers))
        try:
            self.signer.verify_response(resp.status_code, dict(resp.headers), resp.content, req,
                                        lambda kid: kid.split("#", 1)[0] == self.peer_id)
        except SignatureRefused as exc:
            raise PeerUnreachable(f"{self.peer_id}: {exc.message}") from None
        try:
            doc = json.loads(resp.content) if resp.content else {}
        except ValueError:
            raise PeerUnreachable(f"{self.peer_id}: response is not JSON") from None
        if resp.status_code >= 400:
            raise PeerRefused(resp.status_code, str(doc.get("code", "")), str(doc.get("detail", doc))[:500])
        if not isinstance(doc, dict):
            raise PeerUnreachable(f"{self.peer_id}: response is not a JSON object")
        return doc

    def close(self) -> None:
        self._http.close()


def fetch_identity(base_url: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """``GET /federation/v1/platform`` without verification (to show an operator what to pin)."""
    try:
        r = httpx.get(base_url.rstrip("/") + "/federation/v1/platform", timeout=timeout_s)
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PeerUnreachable(f"{base_url}: {exc}") from None
    if not isinstance(doc, dict):
        raise PeerUnreachable(f"{base_url}: not a Yungu federation endpoint")
    return doc

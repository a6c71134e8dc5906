"""The CLI's HTTP client: the CLI talks to the API only, never to the database."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8600"


class ApiError(Exception):
    """A problem+json answer (or a connection failure), ready to show to a person."""

    def __init__(self, status: int, title: str, detail: str, code: str = "") -> None:
        super().__init__(f"{title}: {detail}")
        self.status, self.title, self.detail, self.code = status, title, detail, code


class ApiClient:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("YUNGU_URL") or DEFAULT_URL).rstrip("/")
        self.key = key or os.environ.get("YUNGU_API_KEY") or ""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.ConnectError as exc:
            raise ApiError(0, "Cannot reach the platform / 无法连接平台",
                           f"{self.url}: {exc}. Is `yungu server` running? Set YUNGU_URL to its address.") from exc
        except httpx.TimeoutException as exc:
            raise ApiError(0, "Timed out / 请求超时", f"{self.url} did not answer in time") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                raise ApiError(r.status_code, body.get("title", "error"), body.get("detail", r.text), body.get("code", ""))
            except ValueError:
                raise ApiError(r.status_code, f"HTTP {r.status_code}", r.text[:500]) from None
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

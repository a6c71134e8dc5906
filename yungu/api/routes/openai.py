"""The OpenAI-compatible token API under ``/v1`` (not ``/api/v1``): chat completions (SSE
streams included), completions, embeddings and models, authenticated with Yungu keys.

A pure ASGI layer in front of the FastAPI app (``OpenAIRoutes``), for two reasons. Speed:
the gateway's budget is a few hundred microseconds per call, and FastAPI's routing,
validation and dependency injection cost more than that. Compatibility: every ``/v1`` error
is in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) rather than the
platform's problem+json, because OpenAI SDKs parse that shape (and retry on 429 with
``Retry-After``); ``/api/v1`` keeps problem+json.

There is no pass-through: a ``/v1`` path that is not listed here answers 404, so no route
(``/v1/responses``, ``/v1/messages``, ...) can reach a model without the budget check in
``TokenService.open``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson

from yungu.adapters.gateway.service import Refusal, TokenService

MAX_BODY = 1 << 20
ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}
JSON = (b"content-type", b"application/json")


async def _send_json(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Any, r: Refusal, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"retry-after", str(r.retry_after).encode())] if r.retry_after else []
    await _send_json(send, r.status, r.body(), headers + (extra or []))


class OpenAIRoutes:
    """ASGI middleware: ``/v1/...`` goes to the token service, everything else to ``app``."""

    def __init__(self, app: Any, service: Callable[[], TokenService | None]) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        svc = self.service()
        if svc is None:
            await _refuse(send, Refusal(503, "server_error", "gateway_disabled",
                                        "the token gateway is not running on this server / 令牌网关未启用"))
            return
        await handle(svc, scope, receive, send)


async def handle(svc: TokenService, scope: dict[str, Any], receive: Any, send: Any) -> None:
    received_at = time.perf_counter()
    path, method = scope["path"], scope["method"]
    auth = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
            break
    endpoint = ROUTES.get(path)
    if path == "/v1/models":
        if method != "GET":
            await _refuse(send, Refusal(405, "invalid_request_error", "method_not_allowed", "use GET /v1/models"))
            return
        key = svc.authorize(auth.decode("latin-1"))
        if isinstance(key, Refusal):
            await _refuse(send, key)
            return
        await _send_json(send, 200, models_body(svc, key.models))
        return
    if endpoint is None:
        await _refuse(send, Refusal(404, "invalid_request_error", "unknown_url",
                                    f"unknown URL {method} {path}; this gateway serves /v1/chat/completions, "
                                    f"/v1/completions, /v1/embeddings and /v1/models / 未知路径"))
        return
    if method != "POST":
        await _refuse(send, Refusal(405, "invalid_request_error", "method_not_allowed", f"use POST {path}"))
        return
    key = svc.authorize(auth.decode("latin-1"))
    if isinstance(key, Refusal):
        await _refuse(send, key)
        return
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        part = msg.get("body", b"")
        size += len(part)
        if size > MAX_BODY:
            await _refuse(send, Refusal(413, "invalid_request_error", "body_too_large",
                                        f"request bodies are limited to {MAX_BODY} bytes / 请求体过大"))
            return
        chunks.append(part)
        more = msg.get("more_body", False)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        await _refuse(send, Refusal(400, "invalid_request_error", "invalid_json",
                                    "the body is not valid JSON / 请求体不是合法的 JSON"))
        return
    if not isinstance(body, dict):
        await _refuse(send, Refusal(400, "invalid_request_error", "invalid_json", "the body must be a JSON object"))
        return
    call = svc.open(key, endpoint, body)
    if isinstance(call, Refusal):
        await _refuse(send, call)
        return
    call.received_at = received_at
    rid = (b"x-request-id", call.request_id.encode())
    if not call.stream:
        status, data, refusal = await svc.complete(call)
        answered = time.perf_counter()
        if refusal is not None:
            await _refuse(send, refusal)
        else:
            await _send_json(send, status, data, [rid])
            svc.record_overhead(call, time.perf_counter() - answered)
        return
    await _stream(svc, call, receive, send, rid)


async def _stream(svc: TokenService, call: Any, receive: Any, send: Any, rid: tuple[bytes, bytes]) -> None:
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    gen = svc.stream(call)
    started = False
    try:
        async for item in gen:
            if isinstance(item, Refusal):  # the gateway refused before anything was sent
                await _refuse(send, item, [rid])
                return
            if isinstance(item, tuple):  # the upstream refused before anything was sent
                await _send_json(send, item[0], item[1], [rid])
                return
            if gone.is_set():
                break
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), rid]})
                await send({"type": "http.response.body", "body": item, "more_body": True})
                if call.first_chunk_at:
                    svc.record_overhead(call, time.perf_counter() - call.first_chunk_at)
                continue
            await send({"type": "http.response.body", "body": item, "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client's socket broke: the generator below settles what was generated
    finally:
        await gen.aclose()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def models_body(svc: TokenService, allowed: tuple[str, ...]) -> bytes:
    svc._maybe_refresh()
    data = []
    served = {r.model for r in svc.replicas}
    for m in svc.models.values():
        if allowed and m.model not in allowed:
            continue
        data.append({"id": m.model, "object": "model", "created": 0, "owned_by": "yungu",
                     "kind": m.kind, "available": m.model in served,
                     "pricing": {"currency": m.price.currency, "prompt_per_million": str(m.price.input_per_m),
                                 "completion_per_million": str(m.price.output_per_m)},
                     "max_output_tokens": m.max_output_tokens})
    return orjson.dumps({"object": "list", "data": data})


def standalone(service: TokenService) -> Any:
    """The gateway as its own ASGI app (``yungu gateway serve``): ``/v1`` only."""

    async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            if scope["path"] == "/health":
                await _send_json(send, 200, b'{"status":"ok"}')
                return
            await _refuse(send, Refusal(404, "invalid_request_error", "unknown_url", "this server serves /v1 only"))

    return OpenAIRoutes(not_found, lambda: service)

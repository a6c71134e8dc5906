"""The token service: every ``/v1`` call goes key -> limits -> route -> budget reservation ->
upstream (with fallbacks behind circuit breakers) -> settlement -> one usage row.

There is one way to reach a model: ``TokenService.open`` (which refuses without a budget,
outside the key's models, past its expiry or over its limits) followed by ``complete`` or
``stream``; the HTTP layer has no other path to an upstream, and no pass-through route.

Metering: the upstream is always asked for usage (``stream_options.include_usage`` and vLLM's
``continuous_usage_stats``, so a stream cut off by the client still carries the backend's own
count up to its last chunk). Where a backend reports nothing, the tokens are counted by the
model's tokenizer through the backend's ``/tokenize`` (``source = "tokenizer"``), and where
even that cannot be reached, by the byte bound (``source = "bound"``, an upper bound). The
reservation is the bound times the dearest candidate's price, and ``max_tokens`` is always
sent capped, so the settled cost never exceeds what was reserved.

Runs on one event loop (the API process's or its own); budgets, buckets and breakers are
plain objects touched only from that loop, so no lock is needed. Usage rows are written by
one writer thread in group commits (exactly once: the request id is the key).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from yungu.adapters.gateway.http1 import GatewayOverloaded, Pool, Response, UpstreamError
from yungu.adapters.gateway.sse import DONE, SSEParser
from yungu.adapters.gateway.store import ModelInfo, TokenStore, UsageRecord
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput
from yungu.domain.tenancy import Principal
from yungu.engines.gateway.breaker import Breaker, BreakerPolicy, BreakerState
from yungu.engines.gateway.budget import Budget, period_key
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.limits import Bucket, retry_after_s
from yungu.engines.gateway.pricing import Price, prompt_token_bound
from yungu.engines.gateway.routing import Load, Preferences, Replica, Route, choose
from yungu.engines.ledger.rating import period_of

log = logging.getLogger("yungu.gateway")

ENDPOINTS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


@dataclass(frozen=True)
class Refusal:
    """An OpenAI-shaped error: HTTP status, error type, code, message (and Retry-After)."""

    status: int
    type: str
    code: str
    message: str
    retry_after: int | None = None
    param: str | None = None

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}})


def invalid(message: str, param: str | None = None) -> Refusal:
    return Refusal(400, "invalid_request_error", "invalid_request", message, param=param)


@dataclass
class Call:
    request_id: str
    key: KeyPolicy
    model: ModelInfo
    endpoint: str
    payload: dict[str, Any]
    stream: bool
    include_usage: bool
    route: Route
    reserved: int
    max_tokens: int
    prompt_bound: int
    budget: Budget
    budget_period: str
    prompt_text: str
    settled: bool = False
    received_at: float = 0.0  # perf_counter when the HTTP layer got the request
    in_gateway_s: float = 0.0  # the gateway's own time: before the upstream call, and after its answer
    first_chunk_at: float = 0.0  # perf_counter when a stream's first upstream bytes arrived


@dataclass
class ReplicaStats:
    inflight: int = 0
    latency_ms: float = 0.0
    tokens_per_s: float = 0.0

    def load(self) -> Load:
        return Load(self.inflight, self.latency_ms, self.tokens_per_s)


class UsageWriter:
    """One thread that writes usage rows in group commits; ``flush`` waits until all are down."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self._q: queue.SimpleQueue[UsageRecord | None] = queue.SimpleQueue()
        self._pending = 0
        self._cv = threading.Condition()
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="yungu-token-usage", daemon=True)
        self._thread.start()

    def put(self, rec: UsageRecord) -> None:
        with self._cv:
            self._pending += 1
        self._q.put(rec)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 2000:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            for attempt in range(20):
                try:
                    self.written += self.store.add_usage(batch)
                    break
                except Exception:  # the database is busy or gone: retry, the ids make it harmless
                    self.failures += 1
                    log.exception("writing %d usage rows failed (attempt %d)", len(batch), attempt + 1)
                    time.sleep(min(2.0, 0.05 * 2 ** attempt))
            with self._cv:
                self._pending -= len(batch)
                self._cv.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self) -> None:
        self.flush()
        self._q.put(None)
        self._thread.join(timeout=5)


class TokenService:
    def __init__(self, store: TokenStore, principals: Callable[[str], Principal | None], clock: Clock,
                 new_id: Callable[[], str], platform_id: str, *, breaker: BreakerPolicy | None = None,
                 monotonic: Callable[[], float] = time.monotonic, refresh_s: float = 2.0,
                 key_ttl_s: float = 10.0) -> None:
        self.store, self.principals, self.clock, self.new_id = store, principals, clock, new_id
        self.platform_id = platform_id
        self.breaker_policy = breaker or BreakerPolicy()
        self.monotonic = monotonic
        self.refresh_s, self.key_ttl_s = refresh_s, key_ttl_s
        self.writer = UsageWriter(store)
        self.models: dict[str, ModelInfo] = {}
        self.replicas: list[Replica] = []
        self.breakers: dict[str, Breaker] = {}
        self.stats: dict[str, ReplicaStats] = {}
        self.pools: dict[str, Pool] = {}
        self.budgets: dict[tuple[str, str], Budget] = {}
        self.rpm: dict[str, Bucket] = {}
        self.tpm: dict[str, Bucket] = {}
        self.alerts: list[dict[str, Any]] = []
        self.overheads: deque[float] = deque(maxlen=200_000)  # ms of the gateway's own time per call
        self._keys: dict[str, tuple[float, KeyPolicy | None]] = {}
        self._refreshed = -1e9
        self.refresh()

    # ------------------------------------------------------------------ state
    def refresh(self) -> None:
        """Reload models, prices and replicas from the store (every ``refresh_s`` on use)."""
        self.models = {m.model: m for m in self.store.models()}
        self.replicas = self.store.upstreams()
        self._refreshed = self.monotonic()

    def _maybe_refresh(self) -> None:
        if self.monotonic() - self._refreshed > self.refresh_s:
            self.refresh()

    def breaker(self, replica_id: str) -> Breaker:
        b = self.breakers.get(replica_id)
        if b is None:
            b = self.breakers[replica_id] = Breaker(self.breaker_policy)
        return b

    def _stats(self, replica_id: str) -> ReplicaStats:
        s = self.stats.get(replica_id)
        if s is None:
            s = self.stats[replica_id] = ReplicaStats()
        return s

    def _pool(self, url: str) -> Pool:
        p = self.pools.get(url)
        if p is None:
            p = self.pools[url] = Pool(url)
        return p

    def forget_key(self, secret_or_all: str | None = None) -> None:
        if secret_or_all is None:
            self._keys.clear()
        else:
            self._keys.pop(secret_or_all, None)

    # ------------------------------------------------------------------ admission
    def authorize(self, authorization: str) -> KeyPolicy | Refusal:
        secret = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if not secret:
            return Refusal(401, "invalid_request_error", "missing_api_key",
                           "send your Yungu key as 'Authorization: Bearer <key>' / 请提供 API 密钥")
        now = self.monotonic()
        hit = self._keys.get(secret)
        if hit is None or now - hit[0] > self.key_ttl_s:
            p = self.principals(secret)
            policy = self.store.key(p.key_id) if p is not None else None
            if p is not None and policy is None:
                policy = KeyPolicy(p.key_id, p.tenant_id or "")  # a key without token policy: no budget
            hit = (now, policy)
            self._keys[secret] = hit
        if hit[1] is None:
            return Refusal(401, "invalid_request_error", "invalid_api_key",
                           "invalid or revoked API key / API 密钥无效或已吊销")
        return hit[1]

    def open(self, key: KeyPolicy, endpoint: str, body: dict[str, Any]) -> Call | Refusal:
        """Validate, check the key and its limits, choose the replicas and reserve the maximum cost."""
        self._maybe_refresh()
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            return invalid("'model' is required", "model")
        now_dt = self.clock.now()
        refusal = key.refusal(model_name, now_dt)
        if refusal is not None:
            status, code, message = refusal
            kind = {401: "invalid_request_error", 403: "permission_error", 429: "insufficient_quota"}[status]
            return Refusal(status, kind, code, message)
        model = self.models.get(model_name)
        if model is None or (model.kind == "embeddings") != (endpoint == "embeddings"):
            return Refusal(404, "invalid_request_error", "model_not_found",
                           f"the model {model_name!r} does not exist or does not serve /{endpoint}; "
                           f"see GET /v1/models / 模型不存在")
        try:
            prompt_text, messages = _prompt(endpoint, body)
            prefs = Preferences.parse(body.get("provider"))
            max_tokens = _max_tokens(endpoint, body, model)
        except InvalidInput as exc:
            return invalid(exc.message)
        stream = bool(body.get("stream", False))
        if endpoint == "embeddings" and stream:
            return invalid("embeddings cannot be streamed", "stream")
        opts = body.get("stream_options")
        if opts is not None and not isinstance(opts, dict):
            return invalid("'stream_options' must be an object", "stream_options")
        include_usage = bool(stream and opts and opts.get("include_usage"))
        mono = self.monotonic()
        if key.rpm:
            b = self.rpm.get(key.key_id)
            if b is None or b.limit_per_min != key.rpm:
                b = self.rpm[key.key_id] = Bucket(key.rpm, 0.0, mono)
            wait = b.admit(mono, 1)
            if wait:
                return Refusal(429, "rate_limit_error", "rate_limit_exceeded",
                               f"requests per minute limit {key.rpm} reached / 每分钟请求数超限",
                               retry_after_s(wait))
        if key.tpm:
            t = self.tpm.get(key.key_id)
            if t is None or t.limit_per_min != key.tpm:
                t = self.tpm[key.key_id] = Bucket(key.tpm, 0.0, mono)
            wait = t.under(mono)
            if wait:
                return Refusal(429, "rate_limit_error", "rate_limit_exceeded",
                               f"tokens per minute limit {key.tpm} reached / 每分钟令牌数超限", retry_after_s(wait))
        opened = {r: BreakerState.OPEN for r, b in self.breakers.items() if b.view(mono) is BreakerState.OPEN}
        route = choose(self.replicas, model_name, prefs, allowed_regions=key.regions, loads=self.stats,
                       breakers=opened, kind="embeddings" if endpoint == "embeddings" else "chat")
        price = route.reserve_price
        if price is None:
            why = "; ".join(f"{k}: {v}" for k, v in sorted(route.excluded.items())) or "no replica serves it"
            return Refusal(503, "server_error", "no_replica_available",
                           f"no replica of {model_name!r} may serve this request now ({why}) / 当前没有可用的副本")
        bound = prompt_token_bound(len(prompt_text.encode()), messages)
        reserved = price.cost(bound, max_tokens)
        pk = period_key(key.period, now_dt)
        budget = self._budget(key, pk)
        request_id = "req_" + self.new_id().replace("-", "")
        st = budget.reserve(request_id, reserved)
        if not st.ok:
            return Refusal(429, "insufficient_quota", "insufficient_quota",
                           f"the key's budget for {pk} cannot cover this request's maximum cost "
                           f"(reserve {reserved / 1e10:.6f} CNY) / 预算不足")
        payload = dict(body)
        payload.pop("provider", None)
        if endpoint != "embeddings":
            payload.pop("max_completion_tokens", None)
            payload["max_tokens"] = max_tokens
        if stream:
            payload["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        return Call(request_id, key, model, endpoint, payload, stream, include_usage, route, reserved, max_tokens,
                    bound, budget, pk, prompt_text)

    def _budget(self, key: KeyPolicy, pk: str) -> Budget:
        b = self.budgets.get((key.key_id, pk))
        if b is None:
            self.writer.flush(5.0)  # rows of this key still queued count as spent
            b = Budget(key.budget_units or 0, pk, self.store.spent(key.key_id, pk), key.alert_units)
            self.budgets[(key.key_id, pk)] = b
        else:
            b.limit, b.alert_at = key.budget_units or 0, key.alert_units
        return b

    # ------------------------------------------------------------------ upstream
    async def _send(self, call: Call) -> tuple[Replica, Response] | Refusal:
        body = orjson.dumps(call.payload)
        path = ENDPOINTS[call.endpoint]
        last_error = "no replica was tried"
        for r in call.route.candidates:
            mono = self.monotonic()
            br = self.breaker(r.id)
            if not br.allows(mono):
                last_error = f"{r.id}: circuit breaker open"
                continue
            st = self._stats(r.id)
            st.inflight += 1
            t0 = time.perf_counter()
            if call.received_at and not call.in_gateway_s:
                call.in_gateway_s = t0 - call.received_at
            try:
                resp = await self._pool(r.url).request("POST", path, body)
            except GatewayOverloaded as exc:
                # The gateway itself is the bottleneck (out of descriptors or ports): the replica
                # is not to blame (no breaker failure) and another replica would fare no better.
                st.inflight -= 1
                log.warning("gateway overloaded, refusing %s: %s", call.request_id, exc)
                return Refusal(503, "server_error", "gateway_overloaded",
                               "the gateway is at its connection capacity; retry after the time in Retry-After "
                               "/ 网关连接已满，请稍后重试", retry_after=1)
            except UpstreamError as exc:
                st.inflight -= 1
                br.record(False, self.monotonic())
                last_error = f"{r.id}: {exc}"
                continue
            if resp.status >= 500 or resp.status == 429:
                with_body = await _drain(resp)
                st.inflight -= 1
                br.record(False, self.monotonic())
                last_error = f"{r.id}: HTTP {resp.status} {with_body[:200]!r}"
                continue
            ttfb = (time.perf_counter() - t0) * 1000  # a fast error must not make a replica look fast
            st.latency_ms = 0.8 * st.latency_ms + 0.2 * ttfb if st.latency_ms else ttfb
            br.record(True, self.monotonic())
            return r, resp
        return Refusal(502, "server_error", "upstream_unavailable",
                       f"every replica failed or is cooling down ({last_error}) / 所有副本均不可用")

    # ------------------------------------------------------------------ one call, not streamed
    async def complete(self, call: Call) -> tuple[int, bytes, Refusal | None]:
        """Run a non-streamed call; returns (HTTP status, body, refusal)."""
        replica: Replica | None = None
        status, data, refusal = 502, b"", None
        tokens: tuple[int, int, str] = (0, 0, "backend")
        ok = "error"
        try:
            sent = await self._send(call)
            if isinstance(sent, Refusal):
                refusal = sent
                return sent.status, sent.body(), sent
            replica, resp = sent
            try:
                data = await resp.read()
            except UpstreamError as exc:
                refusal = Refusal(502, "server_error", "upstream_failed", f"the replica failed mid-response: {exc}")
                self.breaker(replica.id).record(False, self.monotonic())
                return refusal.status, refusal.body(), refusal
            status = resp.status
            if status >= 400:
                return status, data, None  # the upstream refused the request: nothing was generated
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                refusal = Refusal(502, "server_error", "upstream_bad_response", "the replica answered no JSON")
                return refusal.status, refusal.body(), refusal
            usage = obj.get("usage") if isinstance(obj, dict) else None
            if isinstance(usage, dict) and "prompt_tokens" in usage:
                tokens = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), "backend")
            else:
                text = _completion_text(obj)
                tokens = await self._count(call, replica, text)
            ok = "ok"
            return status, data, None
        finally:
            if replica is not None:
                self._stats(replica.id).inflight -= 1
            self._settle(call, replica, tokens, ok if replica is not None else "error")

    # ------------------------------------------------------------------ one call, streamed
    async def stream(self, call: Call) -> AsyncGenerator[bytes | tuple[int, bytes] | Refusal, None]:
        """SSE bytes for the client. Closing the iterator early (the client went away) still
        settles: the tokens are those the backend reported in its last chunk received. Before
        any byte, a ``Refusal`` (the gateway's own) or ``(status, body)`` (the upstream's error)."""
        replica: Replica | None = None
        resp: Response | None = None
        meter: StreamMeter | None = None
        usage: dict[str, Any] | None = None
        parts: list[str] = []
        status = "cut"
        try:
            sent = await self._send(call)
            if isinstance(sent, Refusal):
                yield sent  # the HTTP layer turns this into an error response
                status = "error"
                return
            replica, resp = sent
            if resp.status >= 400:
                status = "error"
                yield (resp.status, await _drain(resp))
                return
            meter = StreamMeter(call.include_usage)
            async for raw in resp.chunks():
                if not call.first_chunk_at:
                    call.first_chunk_at = time.perf_counter()
                out = meter.feed(raw)
                if out:
                    yield out
                if meter.completion_tokens() > call.max_tokens:
                    break  # an upstream ignoring max_tokens is cut at the bound that was reserved
            status = "ok"
            if not meter.done_seen:
                yield DONE
        finally:
            if resp is not None and meter is not None and status == "cut":
                # The client went away: hang up on the upstream (it stops generating) and read
                # what it had already sent, so the last usage it reported is the one billed.
                async for raw in resp.hang_up():
                    meter.feed(raw)
            elif resp is not None:
                resp.release()
            if meter is not None:
                usage, parts = meter.usage, meter.parts
            if replica is not None:
                self._stats(replica.id).inflight -= 1
            if replica is not None and status != "error":
                if usage is not None and "prompt_tokens" in usage:
                    tokens = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                              "backend")
                    self._settle(call, replica, tokens, status)
                else:
                    self._settle_later(call, replica, "".join(parts), status)
            else:
                self._settle(call, replica, (0, 0, "backend"), "error")

    # ------------------------------------------------------------------ metering
    async def _count(self, call: Call, replica: Replica, completion: str) -> tuple[int, int, str]:
        """Tokens counted by the model's tokenizer (the backend's ``/tokenize``), else the bound."""
        try:
            pool = self._pool(replica.url.rsplit("/v1", 1)[0] or replica.url)
            body: dict[str, Any] = {"model": call.model.model}
            if call.endpoint == "chat":
                body["messages"] = call.payload.get("messages")
            else:
                body["prompt"] = call.prompt_text
            a = orjson.loads(await (await pool.request("POST", "/tokenize", orjson.dumps(body), timeout_s=5)).read())
            b = orjson.loads(await (await pool.request("POST", "/tokenize", orjson.dumps(
                {"model": call.model.model, "prompt": completion}), timeout_s=5)).read())
            return int(a["count"]), int(b["count"]), "tokenizer"
        except (UpstreamError, KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return call.prompt_bound, min(call.max_tokens, len(completion.encode())), "bound"

    def _settle_later(self, call: Call, replica: Replica, completion: str, status: str) -> None:
        async def run() -> None:
            self._settle(call, replica, await self._count(call, replica, completion), status)

        try:
            asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no loop (closing): settle at the bound, never for free
            self._settle(call, replica, (call.prompt_bound, min(call.max_tokens, len(completion.encode())), "bound"),
                         status)

    def _settle(self, call: Call, replica: Replica | None, tokens: tuple[int, int, str], status: str) -> None:
        if call.settled:
            return
        call.settled = True
        tin, tout, source = tokens
        price = replica.price if replica is not None else Price(call.model.price.input_per_m,
                                                               call.model.price.output_per_m)
        cost = price.cost(tin, tout) if replica is not None else 0
        over = call.budget.settle(call.request_id, cost)
        if over:
            log.error("request %s cost %d units over its reservation %d", call.request_id, over, call.reserved)
        if call.key.tpm and (tin or tout):
            t = self.tpm.get(call.key.key_id)
            if t is not None:
                t.add(self.monotonic(), tin + tout)
        if call.budget.crossed_alert():
            alert = {"key_id": call.key.key_id, "tenant_id": call.key.tenant_id, "period": call.budget_period,
                     "spent_units": call.budget.spent, "budget_units": call.budget.limit,
                     "at": self.clock.now().isoformat()}
            self.alerts.append(alert)
            log.warning("token budget alert: key %s spent %d of %d units in %s", call.key.key_id,
                        call.budget.spent, call.budget.limit, call.budget_period)
        if replica is None:
            return  # nothing reached a model: no usage row
        now = self.clock.now()
        self.writer.put(UsageRecord(
            call.request_id, call.key.key_id, call.key.tenant_id, call.model.model, call.endpoint, replica.id,
            replica.platform, replica.provider, replica.pool_id, tin, tout, source, price, cost, status,
            call.budget_period, period_of(now), now))

    def record_overhead(self, call: Call, after_s: float) -> None:
        """The gateway's own time for a call: from receiving it to calling the upstream, plus
        from the upstream's answer (first chunk) to handing it to the client."""
        if call.in_gateway_s:
            self.overheads.append((call.in_gateway_s + after_s) * 1000)

    def close(self) -> None:
        self.writer.close()
        for p in self.pools.values():
            p.close()

    def breaker_states(self) -> dict[str, BreakerState]:
        mono = self.monotonic()
        return {r: b.view(mono) for r, b in self.breakers.items()}


class StreamMeter:
    """Reads an upstream's SSE stream on the hot path without decoding every event.

    The bytes are forwarded as they came, except that when the client did not ask for usage
    the usage-only event (``"choices":[]``) is dropped and the per-chunk ``usage`` the gateway
    asked for (vLLM's ``continuous_usage_stats``) is cut out of each event. Only the last event of each read that mentions ``"usage"`` is decoded, to
    keep the backend's latest count; text is kept (for counting) only while no usage was seen."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self._buf = b""
        self.usage: dict[str, Any] | None = None
        self.raw_text: list[bytes] = []
        self.done_seen = False

    def completion_tokens(self) -> int:
        return int((self.usage or {}).get("completion_tokens") or 0)

    def feed(self, raw: bytes) -> bytes:
        buf = self._buf + raw if self._buf else raw
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b""
        done, self._buf = buf[: end + 2], buf[end + 2:]
        i = done.rfind(b'"usage":')
        if i >= 0:
            start = done.rfind(b"data:", 0, i)
            stop = done.find(b"\n\n", i)
            try:
                u = orjson.loads(done[start + 5: stop]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                u = None
            if isinstance(u, dict):
                self.usage = u
        elif self.usage is None:
            self.raw_text.append(done)
        if b"[DONE]" in done:
            self.done_seen = True
        if not self.include_usage and i >= 0:  # the client did not ask for usage: strip it
            done = b"".join(strip_usage(e) for e in done.split(b"\n\n") if e.strip() and b'"choices":[]' not in e)
        return done

    @property
    def parts(self) -> list[str]:
        """The streamed text (decoded only when needed: a backend that reported no usage)."""
        out: list[str] = []
        parser = SSEParser()
        for data in parser.feed(b"".join(self.raw_text) + self._buf + b"\n\n"):
            try:
                ev = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            for ch in (ev.get("choices") or []) if isinstance(ev, dict) else []:
                d = ch.get("delta") or {}
                piece = d.get("content") if isinstance(d, dict) else None
                if piece is None:
                    piece = ch.get("text")
                if piece:
                    out.append(piece)
        return out


def strip_usage(event: bytes) -> bytes:
    """One SSE event without its ``"usage"`` member; byte surgery when usage is the last
    member (vLLM and our servers put it last), a full decode and encode otherwise."""
    i = event.rfind(b',"usage":')
    if i < 0:
        return event + b"\n\n"
    if event.endswith(b"}"):
        try:
            if isinstance(orjson.loads(event[i + 9: -1]), dict):
                return event[:i] + b"}\n\n"
        except orjson.JSONDecodeError:
            pass
    try:
        ev = orjson.loads(event[event.index(b"{"):])
        ev.pop("usage", None)
        return b"data: " + orjson.dumps(ev) + b"\n\n"
    except (ValueError, AttributeError):
        return event + b"\n\n"


async def _drain(resp: Response) -> bytes:
    try:
        return await resp.read()
    except UpstreamError:
        return b""


def _prompt(endpoint: str, body: dict[str, Any]) -> tuple[str, int]:
    """The prompt's text (for the token bound and counting) and its number of messages."""
    if endpoint == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InvalidInput("'messages' must be a non-empty list")
        texts = []
        for m in msgs:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidInput("each message needs a 'role' and a 'content'")
            c = m.get("content")
            texts.append(c if isinstance(c, str) else orjson.dumps(c).decode())
        return "\n".join(texts), len(msgs)
    key = "prompt" if endpoint == "completions" else "input"
    v = body.get(key)
    if isinstance(v, str) and v:
        return v, 1
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        if endpoint == "completions" and len(v) > 1:
            raise InvalidInput("one prompt per request (a list of several is not supported)")
        return "\n".join(v), len(v)
    raise InvalidInput(f"'{key}' must be a non-empty string or list of strings")


def _max_tokens(endpoint: str, body: dict[str, Any], model: ModelInfo) -> int:
    if endpoint == "embeddings":
        return 0
    if body.get("n", 1) not in (1, None):
        raise InvalidInput("n > 1 is not supported; send one request per completion")
    v = body.get("max_completion_tokens", body.get("max_tokens"))
    if v is None:
        return model.max_output_tokens
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidInput("'max_tokens' must be a positive integer")
    return min(v, model.max_output_tokens)


def _completion_text(obj: Any) -> str:
    try:
        ch = obj["choices"][0]
        return str((ch.get("message") or {}).get("content") or ch.get("text") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""

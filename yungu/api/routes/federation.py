"""Federation: the platform-to-platform protocol (``/federation/v1``) and its operator API.

Protocol requests and responses are signed (RFC 9421, Ed25519; see ``docs/federation.md``).
The caller is the platform whose registered key signed the request; everything it may see or
touch is keyed by its id, so another platform's jobs do not exist for it. Operator endpoints
(``/api/v1/federation/...``) take an admin or operator API key like the rest of the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.convertors import Convertor, register_url_convertor

from yungu.adapters.federation.clearing import Clearing
from yungu.adapters.federation.client import PeerRefused, PeerUnreachable, fetch_identity
from yungu.adapters.federation.httpsig import Message, SignatureRefused, _pick
from yungu.adapters.federation.store import PeerRecord
from yungu.api.deps import container, require
from yungu.domain.errors import Conflict, InvalidInput, NotFound, YunguError
from yungu.domain.tenancy import Principal, Role
from yungu.engines.federation.messages import PROTOCOL, items, request_ids, text, when
from yungu.engines.federation.policy import PeeringPolicy

protocol = APIRouter(prefix="/federation/v1", tags=["federation protocol"])
router = APIRouter(tags=["federation"])
STAFF = (Role.ADMIN, Role.OPERATOR)

# What a signed protocol route can answer besides 200 (``openapi.py`` documents each as a problem):
# 401 an unsigned, badly signed, stale or replayed request (``signature_refused``); 404 federation
# off, or a job the caller never delegated; 409 a state that forbids it (clearing books that
# differ); 422 a body the protocol does not accept. POST adds 400/413 (``openapi.py``).
SIGNED: dict[int | str, dict[str, Any]] = {401: {}, 404: {}, 409: {}, 422: {}}
PERIOD_RE = r"[0-9]{4}-[0-9]{2}"


class PeriodConvertor(Convertor[str]):
    """``{period:yungu_period}``: a path segment that looks like ``YYYY-MM``, so that
    ``/federation/clearing/run`` is not also ``GET /federation/clearing/{period}`` (its ``Allow``
    said ``GET, POST``). The month is checked by the route (422, not 404, for ``2026-13``)."""

    regex = PERIOD_RE

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("yungu_period", PeriodConvertor())


def federation(request: Request) -> Any:
    fed = container(request).federation
    if fed is None:
        raise NotFound("federation is not enabled on this platform")
    return fed


def _problem(status: int, code: str, detail: str) -> dict[str, Any]:
    return {"type": f"https://yungu.dev/problems/{code}", "title": code.replace("_", " "), "status": status,
            "detail": detail, "code": code}


async def _signed(request: Request, handle: Callable[[Any, PeerRecord, dict[str, Any]], dict[str, Any]]) -> Response:
    """Verify the caller's signature, run ``handle`` off the event loop, sign the answer."""
    fed = federation(request)
    body = await request.body()
    url = str(request.url)
    status, out = 200, {}
    signed_request = "signature" in {k.lower() for k in request.headers}
    try:
        kid = fed.signer.verify_request(request.method, url, request.headers, body)
        caller = fed.caller(kid)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            raise InvalidInput("body must be JSON") from None
        if not isinstance(doc, dict):
            raise InvalidInput("body must be a JSON object")
        out = await run_in_threadpool(handle, fed, caller, doc)
    except SignatureRefused as exc:
        status, out = 401, _problem(401, "signature_refused", exc.message)
    except YunguError as exc:
        status, out = exc.http_status, _problem(exc.http_status, exc.code, exc.message)
    data = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
    media = "application/problem+json" if status >= 400 else "application/json"
    if not signed_request:
        return Response(data, status_code=status, media_type=media)
    req = Message(request.method, url, _pick(request.headers, ("content-type", "content-digest", "signature-input",
                                                               "signature")))
    try:
        headers = fed.signer.sign_response(status, data, req, media)  # refusals are problems, signed too
    except Exception:  # the request's signature headers were malformed: answer unsigned
        return Response(data, status_code=status, media_type="application/problem+json")
    return Response(data, status_code=status, headers={k: v for k, v in headers.items() if k != "Content-Type"},
                    media_type=headers.get("Content-Type", "application/json"))


# ------------------------------------------------------------------ protocol

@protocol.get("/platform", summary="This platform's identity and public keys (unsigned discovery)")
def platform(request: Request) -> dict[str, Any]:
    fed = federation(request)
    c = container(request)
    return {"platform_id": fed.me, "name": c.world.platform_name, "protocol": PROTOCOL,
            "keys": fed.identity.public_keys(), "regions": [r.id for r in c.world.regions],
            "signature_profile": "RFC 9421, ed25519, tag yungu-fed/1, label yf",
            "lease": {"ttl_s": fed.settings.lease.ttl_s, "renew_every_s": fed.settings.lease.renew_every_s,
                      "max_clock_skew_s": fed.settings.lease.max_skew_s,
                      "stop_budget_s": fed.settings.lease.stop_budget_s},
            "signature_window_s": fed.settings.signature_window_s}


@protocol.get("/offers", summary="Our offers, signed (pull)", responses=SIGNED)
async def get_offers(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: f.host.offer_set(f.clock.now()))


@protocol.post("/offers", summary="A peer pushes its signed offers", responses=SIGNED)
async def post_offers(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {"accepted": f.receive_offers(caller, doc)})


@protocol.post("/delegations", summary="Delegate jobs here (batch; idempotent per origin, job, attempt)", responses=SIGNED)
async def delegations(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "results": f.host.delegate(caller.id, items(doc, "delegations", "body"))})


@protocol.post("/leases", summary="Renew the leases of delegated jobs", responses=SIGNED)
async def leases(request: Request) -> Response:
    def handle(f: Any, caller: PeerRecord, doc: dict[str, Any]) -> dict[str, Any]:
        exp = when(doc, "expires_at", "body")
        assert exp is not None
        return {"results": f.host.renew(caller.id, exp, request_ids(doc, "ids", "body"))}
    return await _signed(request, handle)


@protocol.post("/status", summary="Status of delegated jobs, in a batch; finished ones carry a signed receipt", responses=SIGNED)
async def status(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "statuses": f.host.status(caller.id, request_ids(doc, "ids", "body"))})


@protocol.post("/cancel", summary="Cancel delegated jobs (grace capped by ours)", responses=SIGNED)
async def cancel(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "statuses": f.host.cancel(caller.id, request_ids(doc, "ids", "body"))})


@protocol.post("/reconcile", summary="After a reconnection: keep the live attempts, stop the rest", responses=SIGNED)
async def reconcile(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: f.host.reconcile(caller.id, request_ids(doc, "live", "body")))


@protocol.get("/jobs/{request_id}/logs", summary="Page a delegated job's logs", responses=SIGNED)
async def logs(request: Request, request_id: str, stream: str = Query("stdout", pattern=r"^(stdout|stderr)(:\d+)?$"),
               offset: int = Query(0, ge=0), limit: int = Query(1 << 20, ge=1, le=8 << 20)) -> Response:
    return await _signed(request, lambda f, caller, doc: f.host.logs(caller.id, request_id, stream, offset, limit))


@protocol.post("/receipts/ack", summary="The origin booked these receipts", responses=SIGNED)
async def ack(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {"acked": f.host.ack(caller.id, items(doc, "ids", "body"))})


@protocol.post("/keys", summary="A peer rotated its key (notice signed with the old key)", responses=SIGNED)
async def keys(request: Request) -> Response:
    def handle(f: Any, caller: PeerRecord, doc: dict[str, Any]) -> dict[str, Any]:
        f.learn_key(caller, doc)
        return {"ok": True}
    return await _signed(request, handle)


@protocol.post("/clearing/positions", summary="Co-sign our bilateral position for a period", responses=SIGNED)
async def positions(request: Request) -> Response:
    def handle(f: Any, caller: PeerRecord, doc: dict[str, Any]) -> dict[str, Any]:
        pos = doc.get("position")
        if not isinstance(pos, dict):
            raise InvalidInput("position must be an object")
        return Clearing(f).co_sign(caller.id, pos, text(doc, "signature", "body", max_len=200))
    return await _signed(request, handle)


@protocol.post("/clearing/prepare", summary="Agree positions with every peer; return the co-signed ones", responses=SIGNED)
async def prepare(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "positions": Clearing(f).prepare(text(doc, "period", "body", max_len=7))})


@protocol.post("/clearing/statements/sign", summary="Sign a multilateral statement", responses=SIGNED)
async def sign_statement(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "signature": Clearing(f).sign(doc.get("statement") or {}, items(doc, "positions", "body"))})


@protocol.post("/clearing/statements/final", summary="The statement signed by all: verify and book settlement", responses=SIGNED)
async def final_statement(request: Request) -> Response:
    return await _signed(request, lambda f, caller, doc: {
        "booked": Clearing(f).final(doc.get("statement") or {}, doc.get("signatures") or {},
                                    items(doc, "positions", "body"))})


# ------------------------------------------------------------------ operator API

class PeerIn(BaseModel):
    """A peer to register. Strict: unknown fields, wrong types and odd URLs are a 422 before
    anything is fetched or written."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$", description="the peer's platform id")
    base_url: str = Field(..., min_length=8, max_length=2000, pattern=r"^https?://[!-~]+$",
                          description="where its /federation/v1 lives, e.g. http://10.0.0.2:8600")
    public_key: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9+/]+={0,2}$",
                                   description="its Ed25519 public key (base64); fetched if omitted")
    name: str = Field("", max_length=200)
    latency_ms: int = Field(0, ge=0, le=10_000)
    policy: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            u = urlsplit(v)
            u.port  # noqa: B018 -- raises ValueError on a port that is not a number 0..65535
        except ValueError:
            raise ValueError("base_url must be an http(s) URL such as http://10.0.0.2:8600 / 地址无效") from None
        if u.scheme not in ("http", "https") or not u.hostname or u.username is not None or u.password is not None \
                or u.query or u.fragment:
            raise ValueError("base_url must be an http(s) URL with a host and no credentials, query or fragment, "
                             "such as http://10.0.0.2:8600 / 地址无效")
        return v


@router.get("/federation/platform", summary="This platform's federation identity and peers")
def fed_platform(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    return federation(request).summary()  # type: ignore[no-any-return]


@router.get("/federation/peers")
def list_peers(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    return {"items": federation(request).summary()["peers"]}


@router.post("/federation/peers", status_code=201)
def add_peer(request: Request, body: PeerIn, p: Principal = Depends(require(Role.ADMIN))) -> dict[str, Any]:
    fed = federation(request)
    key = body.public_key
    if not key:
        try:
            ident = fetch_identity(body.base_url)
        except PeerUnreachable as exc:
            raise InvalidInput(f"cannot reach {body.base_url} to fetch its key ({exc}); pass public_key") from None
        if ident.get("platform_id") != body.id:
            raise InvalidInput(f"{body.base_url} is platform {ident.get('platform_id')!r}, not {body.id!r}")
        keys = ident.get("keys")
        first = keys[0] if isinstance(keys, list) and keys and isinstance(keys[0], dict) else {}
        if not isinstance(first.get("public_key"), str):
            raise InvalidInput(f"{body.base_url} published no public key; pass public_key")
        key = first["public_key"]
    rec = fed.add_peer(body.id, body.base_url, key, PeeringPolicy.from_dict(body.policy), body.name, body.latency_ms)
    return rec.to_dict()  # type: ignore[no-any-return]


@router.delete("/federation/peers/{peer_id}", status_code=204)
def remove_peer(request: Request, peer_id: str, p: Principal = Depends(require(Role.ADMIN))) -> Response:
    if not federation(request).remove_peer(peer_id):
        raise NotFound(f"no peer {peer_id}")
    return Response(status_code=204)


@router.get("/federation/peers/{peer_id}/check", summary="Signed round trip to a peer and its health")
def check_peer(request: Request, peer_id: str, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    import time

    fed = federation(request)
    link = fed._links.get(peer_id)
    if link is None:
        raise NotFound(f"no peer {peer_id}")
    t = time.perf_counter()
    out: dict[str, Any] = {"peer": peer_id, "state": fed.health(peer_id).state.value,
                           "events": fed.fed.peer_events(peer_id, 10)}
    try:
        doc = link.client.call("GET", "/federation/v1/offers")
        out.update(reachable=True, signed=True, rtt_ms=round(1000 * (time.perf_counter() - t), 2),
                   offers=len(doc.get("offers", [])), mutual=True)
    except PeerRefused as exc:
        out.update(reachable=True, signed=True, mutual=exc.status != 401, error=str(exc))
    except PeerUnreachable as exc:
        out.update(reachable=False, error=str(exc))
    return out


@router.post("/federation/keys/rotate")
def rotate(request: Request, p: Principal = Depends(require(Role.ADMIN))) -> dict[str, Any]:
    return federation(request).rotate_key()  # type: ignore[no-any-return]


@router.get("/federation/delegations", summary="What we delegated to peers (open, or all)")
def delegations_list(request: Request, all: bool = False, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    rows = federation(request).fed.outbound(open_only=not all)
    return {"items": [{"request_id": r.request_id, "peer": r.peer_id, "pool": r.pool_id, "state": r.state,
                       "phase": r.phase, "lease_until": r.lease_until.isoformat(), "reason": r.reason,
                       "closed": bool(r.closed)} for r in rows[-2000:]]}


@router.get("/federation/hosted", summary="What peers delegated here")
def hosted(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    fed = federation(request)
    rows = fed.fed.inbound_in_states(["active", "refused", "expired", "fenced", "stopped", "done"])
    return {"items": [{"id": r.id, "origin": r.origin, "local_job_id": r.local_job_id, "state": r.state,
                       "reason": r.reason, "pool": r.pool_id} for r in rows[-2000:]]}


@router.get("/federation/receipts")
def receipts(request: Request, period: str | None = None, side: str | None = Query(None, pattern="^(issued|received)$"),
             p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    rows = federation(request).fed.receipts(side=side, period=period)
    return {"items": [{"receipt_id": r.receipt_id, "side": r.side, "issuer": r.issuer, "origin": r.origin,
                       "request_id": r.request_id, "period": r.period, "amount_fen": r.amount_fen,
                       "booked": bool(r.booked), "acked": bool(r.acked)} for r in rows]}


class ClearingIn(BaseModel):
    period: str = Field(..., pattern=r"^\d{4}-\d{2}$")


@router.post("/federation/clearing/run", summary="Coordinate the period's clearing across all peers")
def clearing_run(request: Request, body: ClearingIn, p: Principal = Depends(require(Role.ADMIN))) -> dict[str, Any]:
    fed = federation(request)
    try:
        return Clearing(fed).run(body.period)
    except (PeerUnreachable, PeerRefused) as exc:
        raise Conflict(f"clearing stopped: {exc}") from None


@router.get("/federation/clearing/{period:yungu_period}")
def clearing_get(request: Request, period: str = Path(..., pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$"),
                 p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    fed = federation(request)
    st = fed.fed.statement(period)
    return {"period": period, "positions": [b for b, _ in fed.fed.positions(period)],
            "statement": st[0] if st else None, "signatures": st[1] if st else {}, "state": st[2] if st else None}


@router.get("/federation/books", summary="Ledger balance checks: the sum of all balances, clearing accounts")
def books(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    c = container(request)
    ledger = c.ledger.ledger
    accts = ledger.accounts(currency="CNY")
    total = sum(b.posted for _a, b in accts)
    clearing = {a.id: b.posted for a, b in accts if a.id.startswith("peer:")}
    return {"sum_fen": total, "clearing": clearing, "accounts": len(accts)}


def json_response(doc: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(doc, status_code=status)

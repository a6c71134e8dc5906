"""Token service administration under ``/api/v1/tokens`` (problem+json, like all of /api/v1):
models and prices, upstreams and replicas, virtual keys, usage, budget alerts, receipts.

The token API itself (``/v1/...``, OpenAI's shape) is ``routes/openai.py``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from yungu.api.deps import ANY_ROLE, container, require
from yungu.domain.errors import InvalidInput, NotFound
from yungu.domain.tenancy import Principal, Role
from yungu.engines.gateway.budget import Period
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.pricing import Price, cny_text, cny_to_units, parse_price
from yungu.engines.gateway.routing import Replica

router = APIRouter(tags=["tokens"])


def _tokens(request: Request) -> Any:
    t = container(request).extras.get("tokens")
    if t is None:
        raise NotFound("the token service is not wired on this platform")
    return t


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field("chat", pattern="^(chat|embeddings)$")
    input_per_million: str | int = Field(..., description="CNY per million input tokens, a decimal string")
    output_per_million: str | int = Field(..., description="CNY per million output tokens")
    max_output_tokens: int = Field(1024, ge=1, le=1_000_000)
    description: str = Field("", max_length=400)


class UpstreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
    model: str
    url: str = Field(..., description="base URL of an OpenAI-compatible API, e.g. http://10.0.0.5:8000/v1")
    region: str
    provider: str = Field("upstream", min_length=1, max_length=128)
    platform: str = Field("", description="a peer platform's id when a peer serves it")
    input_per_million: str | int | None = None
    output_per_million: str | int | None = None
    green_share: float = Field(0.0, ge=0, le=1)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: str
    name: str = Field("", max_length=200)
    models: list[str] = Field(default_factory=list, description="allowed models; empty: all")
    budget: str | int | None = Field(None, description="CNY per period; none: every call is refused")
    period: Period = Period.MONTH
    alert_at: str | None = Field(None, description="soft alert at this share of the budget, e.g. '0.8'")
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)
    regions: list[str] = Field(default_factory=list, description="data residency: serve only from these")
    expires_at: datetime | None = None


class KeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: str | int | None = None
    alert_at: str | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    models: list[str] | None = None
    regions: list[str] | None = None
    expires_at: datetime | None = None


def _money(units: int | None) -> str | None:
    return None if units is None else cny_text(units)


def _budget_units(v: str | int | None) -> int | None:
    if v is None:
        return None
    if isinstance(v, float):
        raise InvalidInput("budgets are decimal strings, not floats")
    try:
        d = Decimal(str(v))
    except ArithmeticError as exc:
        raise InvalidInput(f"not a decimal budget: {v!r}") from exc
    if not d.is_finite() or d < 0:
        raise InvalidInput("a budget must be a non-negative decimal / 预算必须为非负数")
    return cny_to_units(d)


def _ratio(v: str | None) -> Decimal | None:
    if v is None:
        return None
    try:
        d = Decimal(v)
    except ArithmeticError as exc:
        raise InvalidInput(f"not a decimal ratio: {v!r}") from exc
    if not (d.is_finite() and 0 < d <= 1):
        raise InvalidInput("alert_at is a share of the budget in (0, 1], e.g. '0.8'")
    return d


def _aware(t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        raise InvalidInput("expires_at needs a time zone, e.g. 2027-01-01T00:00:00+08:00")
    return t


def key_json(t: Any, p: KeyPolicy) -> dict[str, Any]:
    from yungu.engines.gateway.budget import period_key

    pk = period_key(p.period, t.gateway.clock.now())
    b = t.gateway.budgets.get((p.key_id, pk))
    spent = b.spent if b is not None else t.store.spent(p.key_id, pk)
    return {"key_id": p.key_id, "tenant_id": p.tenant_id, "name": p.name, "models": list(p.models),
            "budget": _money(p.budget_units), "period": p.period.value, "current_period": pk,
            "spent": cny_text(spent), "reserved": cny_text(b.reserved) if b else "0",
            "alert_at": None if p.alert_ratio is None else str(p.alert_ratio), "rpm": p.rpm, "tpm": p.tpm,
            "regions": list(p.regions), "expires_at": p.expires_at.isoformat() if p.expires_at else None}


@router.get("/tokens/models")
def list_models(request: Request, _p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    t = _tokens(request)
    served: dict[str, int] = {}
    for r in t.store.upstreams():
        served[r.model] = served.get(r.model, 0) + 1
    return {"items": [{"model": m.model, "kind": m.kind, "currency": m.price.currency,
                       "input_per_million": str(m.price.input_per_m), "output_per_million": str(m.price.output_per_m),
                       "max_output_tokens": m.max_output_tokens, "replicas": served.get(m.model, 0),
                       "description": m.description} for m in t.store.models()]}


@router.put("/tokens/models/{model}")
def set_model(request: Request, model: str, body: ModelIn = Body(...),
              _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    t = _tokens(request)
    price = Price(parse_price(body.input_per_million), parse_price(body.output_per_million))
    m = t.store.set_model(model, body.kind, price, body.max_output_tokens, container(request).clock.now(),
                          body.description)
    t.gateway.refresh()
    return {"model": m.model, "kind": m.kind, "input_per_million": str(m.price.input_per_m),
            "output_per_million": str(m.price.output_per_m), "max_output_tokens": m.max_output_tokens}


@router.get("/tokens/upstreams")
def list_upstreams(request: Request, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    t = _tokens(request)
    states = t.gateway.breaker_states()
    sources = t.store.upstream_sources()
    items = []
    for r in t.store.upstreams():
        st = t.gateway.stats.get(r.id)
        items.append({"id": r.id, "model": r.model, "url": r.url, "region": r.region, "provider": r.provider,
                      "platform": r.platform, "pool_id": r.pool_id, "job_id": r.job_id, "source": sources.get(r.id),
                      "input_per_million": str(r.price.input_per_m), "output_per_million": str(r.price.output_per_m),
                      "breaker": states.get(r.id, "closed"), "inflight": st.inflight if st else 0,
                      "latency_ms": round(st.latency_ms, 2) if st else None})
    return {"items": items}


@router.post("/tokens/upstreams", status_code=201)
def add_upstream(request: Request, body: UpstreamIn = Body(...),
                 _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    t = _tokens(request)
    models = {m.model: m for m in t.store.models()}
    if body.model not in models:
        raise InvalidInput(f"unknown model {body.model!r}: set its price first (PUT /tokens/models/{{model}})")
    if not body.url.startswith("http://"):
        raise InvalidInput("upstream URLs are http://host:port/v1 (the gateway speaks plain HTTP to replicas)")
    own = body.input_per_million is not None or body.output_per_million is not None
    base = models[body.model].price
    price = Price(parse_price(body.input_per_million) if body.input_per_million is not None else base.input_per_m,
                  parse_price(body.output_per_million) if body.output_per_million is not None else base.output_per_m)
    r = Replica(body.id, body.model, body.url.rstrip("/"), body.region, price, body.provider, body.platform, "", "",
                body.green_share, models[body.model].kind)
    t.store.add_upstream(r, "registered", container(request).clock.now(), own_price=own)
    t.gateway.refresh()
    return {"id": r.id, "model": r.model, "url": r.url, "region": r.region}


@router.delete("/tokens/upstreams/{upstream_id}", status_code=204)
def remove_upstream(request: Request, upstream_id: str, _p: Principal = Depends(require(Role.OPERATOR))) -> None:
    t = _tokens(request)
    if not t.store.remove_upstream(upstream_id):
        raise NotFound(f"no upstream {upstream_id!r}")
    t.gateway.refresh()


@router.post("/tokens/keys", status_code=201)
def create_key(request: Request, body: KeyIn = Body(...), _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    c, t = container(request), _tokens(request)
    key, secret = c.store.create_key(c.ids.new(), Role.TENANT, body.tenant_id, body.name or "token key",
                                     c.clock.now())
    p = KeyPolicy(key.id, body.tenant_id, body.name, tuple(body.models), _budget_units(body.budget), body.period,
                  _ratio(body.alert_at), body.rpm, body.tpm, tuple(body.regions), _aware(body.expires_at))
    t.store.set_key(p, c.clock.now())
    return {**key_json(t, p), "secret": secret, "note": "shown once; only its hash is stored / 仅显示一次"}


@router.get("/tokens/keys")
def list_keys(request: Request, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    t = _tokens(request)
    tenant = None if p.role.can_see_all_tenants() else p.tenant_id
    return {"items": [key_json(t, k) for k in t.store.keys(tenant)]}


@router.patch("/tokens/keys/{key_id}")
def patch_key(request: Request, key_id: str, body: KeyPatch = Body(...),
              _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    c, t = container(request), _tokens(request)
    old = t.store.key(key_id)
    if old is None:
        raise NotFound(f"no token key {key_id!r}")
    sent = body.model_fields_set
    p = KeyPolicy(key_id, old.tenant_id, old.name,
                  tuple(body.models) if "models" in sent and body.models is not None else old.models,
                  _budget_units(body.budget) if "budget" in sent else old.budget_units, old.period,
                  _ratio(body.alert_at) if "alert_at" in sent else old.alert_ratio,
                  body.rpm if "rpm" in sent else old.rpm, body.tpm if "tpm" in sent else old.tpm,
                  tuple(body.regions) if "regions" in sent and body.regions is not None else old.regions,
                  _aware(body.expires_at) if "expires_at" in sent else old.expires_at)
    t.store.set_key(p, c.clock.now())
    t.gateway.forget_key()
    return key_json(t, p)


@router.get("/tokens/usage")
def usage(request: Request, limit: int = 100, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    t = _tokens(request)
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be 1..1000")
    tenant = None if p.role.can_see_all_tenants() else p.tenant_id
    t.gateway.writer.flush(5.0)
    rows = t.store.usage(tenant_id=tenant, limit=limit)
    for r in rows:
        r["cost"] = cny_text(r.pop("cost_units"))
        r["created_at"] = r["created_at"].isoformat()
        for k in ("price_in_per_m", "price_out_per_m"):
            r[k] = str(r[k])
    summary = [{**s, "cost": cny_text(int(s.pop("cost_units") or 0)),
                "tokens_in": int(s["tokens_in"] or 0), "tokens_out": int(s["tokens_out"] or 0)}
               for s in t.store.usage_summary(tenant)]
    return {"items": rows, "summary": summary}


@router.get("/tokens/alerts")
def alerts(request: Request, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    t = _tokens(request)
    items = [a for a in t.gateway.alerts if p.role.can_see_all_tenants() or a["tenant_id"] == p.tenant_id]
    return {"items": [{**a, "spent": cny_text(a["spent_units"]),
                       "budget": cny_text(a["budget_units"])} for a in items]}


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipt: dict[str, Any]
    signature: str = Field(..., min_length=1, max_length=128)


@router.post("/tokens/receipts", status_code=201)
def accept_receipt(request: Request, body: ReceiptIn = Body(...),
                   _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """A peer platform hands in a signed receipt for tokens it served for us (federation's entry)."""
    r = _tokens(request).receipts.accept(body.receipt, body.signature)
    return {"id": r.id, "cost": cny_text(r.cost_units), "server": r.server}


@router.get("/tokens/receipts")
def list_receipts(request: Request, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    t = _tokens(request)
    return {"public_key": t.receipts.public_key,
            "items": [{"id": r["id"], "side": r["side"], "peer": r["peer"], "period": r["period"],
                       "cost": cny_text(r["cost_units"]), "booked_batch": r["batch_id"]}
                      for r in t.store.receipts()]}


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(..., min_length=1, description="models its replicas serve (chat first)")
    tenant_id: str = Field(..., description="whose jobs run the replicas (their device-hours are billed to it)")
    min_replicas: int = Field(1, ge=0, le=64)
    max_replicas: int = Field(1, ge=0, le=64)
    cpus: int = Field(1, ge=1, le=1024)
    memory_gb: int = Field(2, ge=0, le=16384)
    accelerators: int = Field(0, ge=0, le=64)
    pool: str | None = None
    command: str | None = Field(None, description="template with {python} {port} {model} {cache_dir}; default: "
                                                  "the CPU model server")


@router.put("/tokens/services/{name}")
def set_service(request: Request, name: str, body: ServiceIn = Body(...),
                _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """An inference service: replica jobs of kind ``inference``, scaled between min and max."""
    from yungu.adapters.gateway.inference import MODEL_SERVER
    from yungu.adapters.gateway.store import Service

    c, t = container(request), _tokens(request)
    c.store.tenant(body.tenant_id)
    if body.min_replicas > body.max_replicas:
        raise InvalidInput("min_replicas must not exceed max_replicas")
    known = {m.model for m in t.store.models()}
    missing = [m for m in body.models if m not in known]
    if missing:
        raise InvalidInput(f"price these models first: {missing} (PUT /tokens/models/{{model}})")
    command = body.command or MODEL_SERVER
    for field in ("{port}",):
        if field not in command:
            raise InvalidInput(f"the command template must contain {field}: the replica's port is chosen at launch")
    s = Service(name, ",".join(body.models), body.tenant_id, body.min_replicas, body.max_replicas, body.cpus,
                body.memory_gb, body.accelerators, body.pool, command)
    t.store.add_service(s, c.clock.now())
    return {"name": s.name, "models": body.models, "min_replicas": s.min_replicas, "max_replicas": s.max_replicas}


@router.get("/tokens/services")
def list_services(request: Request, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    return {"items": [{"name": s.name, "models": s.model.split(","), "tenant_id": s.tenant_id,
                       "min_replicas": s.min_replicas, "max_replicas": s.max_replicas, "cpus": s.cpus,
                       "accelerators": s.accelerators, "pool": s.pool, "command": s.command}
                      for s in _tokens(request).store.services()]}


@router.get("/tokens/overhead")
def overhead(request: Request, reset: bool = False, _p: Principal = Depends(require(Role.OPERATOR))) -> dict[str, Any]:
    """The gateway's own time per call (ms): from receiving the request to calling the upstream,
    plus from the upstream's answer (a stream's first chunk) to handing it to the client."""
    g = _tokens(request).gateway
    xs = sorted(g.overheads)
    if reset:
        g.overheads.clear()

    def pct(p: float) -> float | None:
        return round(xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))], 3) if xs else None

    return {"calls": len(xs), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(xs[-1], 3) if xs else None}

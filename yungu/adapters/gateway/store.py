"""The token service's tables: models and prices, upstreams, inference services, key
policies, usage rows, ledger batches and receipts (SQLite or PostgreSQL, SQLAlchemy Core).

Usage rows are written exactly once: the request id is the primary key and a repeat insert
is ignored. Batches fold unbatched usage into ledger usage records in one transaction that
also stamps the rows, so a crash leaves either the batch and its stamps or neither.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from yungu.adapters.store.gateway_tables import inference_services as S
from yungu.adapters.store.gateway_tables import token_batches as B
from yungu.adapters.store.gateway_tables import token_keys as K
from yungu.adapters.store.gateway_tables import token_models as M
from yungu.adapters.store.gateway_tables import token_receipt_batches as RB
from yungu.adapters.store.gateway_tables import token_receipts as R
from yungu.adapters.store.gateway_tables import token_upstreams as U
from yungu.adapters.store.gateway_tables import token_usage as T
from yungu.domain.errors import InvalidInput, NotFound
from yungu.engines.gateway.budget import Period
from yungu.engines.gateway.keys import KeyPolicy
from yungu.engines.gateway.pricing import Price, units_to_fen_rounded
from yungu.engines.gateway.routing import Replica


@dataclass(frozen=True)
class ModelInfo:
    model: str
    kind: str
    price: Price
    max_output_tokens: int
    description: str = ""


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    key_id: str
    tenant_id: str
    model: str
    endpoint: str
    replica_id: str
    platform: str
    provider: str
    pool_id: str
    tokens_in: int
    tokens_out: int
    source: str  # backend | tokenizer | bound
    price: Price
    cost_units: int
    status: str  # ok | cut | error
    budget_period: str
    billing_period: str
    created_at: datetime

    def row(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "key_id": self.key_id, "tenant_id": self.tenant_id,
                "model": self.model, "endpoint": self.endpoint, "replica_id": self.replica_id,
                "platform": self.platform, "provider": self.provider, "pool_id": self.pool_id,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "source": self.source,
                "price_in_per_m": self.price.input_per_m, "price_out_per_m": self.price.output_per_m,
                "cost_units": self.cost_units, "status": self.status, "budget_period": self.budget_period,
                "billing_period": self.billing_period, "batch_id": None, "created_at": self.created_at}


@dataclass(frozen=True)
class Batch:
    id: str
    tenant_id: str
    provider: str
    model: str
    period: str
    pool_id: str
    rows: int
    tokens_in: int
    tokens_out: int
    units: int
    fen: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Service:
    name: str
    model: str
    tenant_id: str
    min_replicas: int
    max_replicas: int
    cpus: int
    memory_gb: int
    accelerators: int
    pool: str | None
    command: str


_USAGE_COLS = ("request_id", "key_id", "tenant_id", "model", "endpoint", "replica_id", "platform", "provider",
               "pool_id", "tokens_in", "tokens_out", "source", "price_in_per_m", "price_out_per_m", "cost_units",
               "status", "budget_period", "billing_period", "batch_id", "created_at")


class TokenStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    # ------------------------------------------------------------- models and prices
    def set_model(self, model: str, kind: str, price: Price, max_output_tokens: int, now: datetime,
                  description: str = "") -> ModelInfo:
        if not model or len(model) > 128 or any(c.isspace() for c in model):
            raise InvalidInput("a model name is 1..128 characters without spaces / 模型名称不能含空格")
        if kind not in ("chat", "embeddings"):
            raise InvalidInput("model kind must be 'chat' or 'embeddings'")
        if not 1 <= max_output_tokens <= 1_000_000:
            raise InvalidInput("max_output_tokens must be 1..1000000")
        values = {"kind": kind, "input_per_m": price.input_per_m, "output_per_m": price.output_per_m,
                  "currency": price.currency, "max_output_tokens": max_output_tokens, "description": description,
                  "updated_at": now}
        stmt = self._insert(M).values(model=model, **values)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=[M.c.model], set_=values))
        return ModelInfo(model, kind, price, max_output_tokens, description)

    def models(self) -> list[ModelInfo]:
        with self.engine.connect() as c:
            rows = c.execute(select(M).order_by(M.c.model)).all()
        return [ModelInfo(r.model, r.kind, Price(Decimal(r.input_per_m), Decimal(r.output_per_m), r.currency),
                          r.max_output_tokens, r.description) for r in rows]

    # ------------------------------------------------------------- upstreams (replicas)
    def add_upstream(self, r: Replica, source: str, now: datetime, own_price: bool = False) -> None:
        values = {"model": r.model, "url": r.url, "region": r.region, "provider": r.provider, "platform": r.platform,
                  "pool_id": r.pool_id, "job_id": r.job_id, "green_share": r.green_share,
                  "input_per_m": r.price.input_per_m if own_price else None,
                  "output_per_m": r.price.output_per_m if own_price else None, "source": source}
        stmt = self._insert(U).values(id=r.id, created_at=now, **values)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=[U.c.id], set_=values))

    def remove_upstream(self, upstream_id: str) -> bool:
        with self.engine.begin() as c:
            return bool(c.execute(delete(U).where(U.c.id == upstream_id)).rowcount)

    def upstreams(self) -> list[Replica]:
        models = {m.model: m for m in self.models()}
        out = []
        with self.engine.connect() as c:
            for r in c.execute(select(U).order_by(U.c.id)):
                m = models.get(r.model)
                if m is None:
                    continue  # a replica of a model without a price is never routed to
                price = (Price(Decimal(r.input_per_m), Decimal(r.output_per_m), m.price.currency)
                         if r.input_per_m is not None else m.price)
                out.append(Replica(r.id, r.model, r.url, r.region, price, r.provider, r.platform, r.pool_id, r.job_id,
                                   r.green_share, m.kind))
        return out

    def upstream_sources(self) -> dict[str, str]:
        with self.engine.connect() as c:
            return {r.id: r.source for r in c.execute(select(U.c.id, U.c.source))}

    # ------------------------------------------------------------- inference services
    def add_service(self, s: Service, now: datetime) -> None:
        if not 0 <= s.min_replicas <= s.max_replicas <= 64:
            raise InvalidInput("need 0 <= min_replicas <= max_replicas <= 64")
        values = {k: getattr(s, k) for k in ("model", "tenant_id", "min_replicas", "max_replicas", "cpus",
                                             "memory_gb", "accelerators", "pool", "command")}
        stmt = self._insert(S).values(name=s.name, created_at=now, **values)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=[S.c.name], set_=values))

    def services(self) -> list[Service]:
        with self.engine.connect() as c:
            return [Service(r.name, r.model, r.tenant_id, r.min_replicas, r.max_replicas, r.cpus, r.memory_gb,
                            r.accelerators, r.pool, r.command) for r in c.execute(select(S).order_by(S.c.name))]

    # ------------------------------------------------------------- key policies
    def set_key(self, p: KeyPolicy, now: datetime) -> None:
        values = {"tenant_id": p.tenant_id, "name": p.name, "models": json.dumps(list(p.models)),
                  "budget_units": p.budget_units, "period": p.period.value, "alert_ratio": p.alert_ratio,
                  "rpm": p.rpm, "tpm": p.tpm, "regions": json.dumps(list(p.regions)), "expires_at": p.expires_at}
        stmt = self._insert(K).values(key_id=p.key_id, created_at=now, **values)
        with self.engine.begin() as c:
            c.execute(stmt.on_conflict_do_update(index_elements=[K.c.key_id], set_=values))

    def key(self, key_id: str) -> KeyPolicy | None:
        with self.engine.connect() as c:
            r = c.execute(select(K).where(K.c.key_id == key_id)).first()
        return None if r is None else _policy(r)

    def keys(self, tenant_id: str | None = None) -> list[KeyPolicy]:
        q = select(K).order_by(K.c.created_at)
        if tenant_id is not None:
            q = q.where(K.c.tenant_id == tenant_id)
        with self.engine.connect() as c:
            return [_policy(r) for r in c.execute(q)]

    # ------------------------------------------------------------- usage
    def add_usage(self, records: Sequence[UsageRecord]) -> int:
        """Insert usage rows; a request id seen before is ignored (exactly once).

        The gateway's hot path: the driver's executemany with plain tuples, the column types'
        bind processors applied once per distinct value (what the Core layer would store), so
        the writer thread holds the GIL as briefly as it can (the event loop shares it)."""
        if not records:
            return 0
        with self.engine.begin() as c:
            d = c.dialect
            amount: Any = T.c.price_in_per_m.type._cached_bind_processor(d) or (lambda v: v)
            when: Any = T.c.created_at.type._cached_bind_processor(d) or (lambda v: v)
            cache: dict[object, object] = {}

            def conv(fn: Any, v: object) -> object:
                hit = cache.get((fn, v))
                if hit is None:
                    hit = cache[(fn, v)] = fn(v)
                return hit

            rows = [(r.request_id, r.key_id, r.tenant_id, r.model, r.endpoint, r.replica_id, r.platform, r.provider,
                     r.pool_id, r.tokens_in, r.tokens_out, r.source, conv(amount, r.price.input_per_m),
                     conv(amount, r.price.output_per_m), r.cost_units, r.status, r.budget_period, r.billing_period,
                     None, conv(when, r.created_at)) for r in records]
            ph = "?" if d.paramstyle == "qmark" else "%s"
            cols = _USAGE_COLS
            verb = "INSERT OR IGNORE INTO" if d.name == "sqlite" else "INSERT INTO"
            tail = "" if d.name == "sqlite" else " ON CONFLICT (request_id) DO NOTHING"
            res = c.exec_driver_sql(
                f"{verb} token_usage ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))}){tail}", rows)
            return int(res.rowcount or 0)  # executemany: the sum of the rows inserted

    def spent(self, key_id: str, budget_period: str) -> int:
        with self.engine.connect() as c:
            v = c.execute(select(func.coalesce(func.sum(T.c.cost_units), 0)).where(
                and_(T.c.key_id == key_id, T.c.budget_period == budget_period))).scalar()
        return int(v or 0)

    def usage(self, *, tenant_id: str | None = None, key_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(T).order_by(T.c.created_at.desc(), T.c.request_id.desc()).limit(limit)
        if tenant_id is not None:
            q = q.where(T.c.tenant_id == tenant_id)
        if key_id is not None:
            q = q.where(T.c.key_id == key_id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def usage_summary(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        cols = (T.c.tenant_id, T.c.model, T.c.billing_period)
        q = select(*cols, func.count().label("requests"), func.sum(T.c.tokens_in).label("tokens_in"),
                   func.sum(T.c.tokens_out).label("tokens_out"), func.sum(T.c.cost_units).label("cost_units")
                   ).group_by(*cols).order_by(*cols)
        if tenant_id is not None:
            q = q.where(T.c.tenant_id == tenant_id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def totals(self) -> dict[str, int]:
        with self.engine.connect() as c:
            r = c.execute(select(func.count(), func.coalesce(func.sum(T.c.tokens_in), 0),
                                 func.coalesce(func.sum(T.c.tokens_out), 0),
                                 func.coalesce(func.sum(T.c.cost_units), 0))).one()
        return {"requests": int(r[0]), "tokens_in": int(r[1]), "tokens_out": int(r[2]), "cost_units": int(r[3])}

    # ------------------------------------------------------------- ledger batches
    def make_batches(self, new_id: Any, now: datetime, limit: int = 20000) -> list[Batch]:
        """Fold unbatched usage rows into one batch per (tenant, provider, model, period),
        stamping the rows in the same transaction; returns the batches made."""
        made: list[Batch] = []
        with self.engine.begin() as c:
            rows = c.execute(select(T.c.request_id, T.c.tenant_id, T.c.provider, T.c.model, T.c.billing_period,
                                    T.c.pool_id, T.c.tokens_in, T.c.tokens_out, T.c.cost_units, T.c.created_at)
                             .where(T.c.batch_id.is_(None)).order_by(T.c.created_at, T.c.request_id)
                             .limit(limit)).all()
            groups: dict[tuple[str, str, str, str], list[Any]] = {}
            for r in rows:
                groups.setdefault((r.tenant_id, r.provider, r.model, r.billing_period), []).append(r)
            for (tenant, provider, model, period), rs in sorted(groups.items()):
                last = c.execute(select(B.c.seq, B.c.cum_units).where(and_(
                    B.c.tenant_id == tenant, B.c.provider == provider, B.c.model == model, B.c.period == period))
                    .order_by(B.c.seq.desc()).limit(1)).first()
                seq, before = (last.seq + 1, last.cum_units) if last else (1, 0)
                units = sum(r.cost_units for r in rs)
                after = before + units
                fen = units_to_fen_rounded(after) - units_to_fen_rounded(before)
                b = Batch(new_id(), tenant, provider, model, period, rs[0].pool_id, len(rs),
                          sum(r.tokens_in for r in rs), sum(r.tokens_out for r in rs), units, fen,
                          min(r.created_at for r in rs), max(r.created_at for r in rs))
                c.execute(insert(B).values(id=b.id, tenant_id=tenant, provider=provider, model=model, period=period,
                                           seq=seq, rows=b.rows, tokens_in=b.tokens_in, tokens_out=b.tokens_out,
                                           units=units, cum_units=after, fen=fen, pool_id=b.pool_id,
                                           first_at=b.first_at, last_at=b.last_at, handed=False, created_at=now))
                ids = [r.request_id for r in rs]
                for i in range(0, len(ids), 500):
                    c.execute(update(T).where(T.c.request_id.in_(ids[i:i + 500])).values(batch_id=b.id))
                made.append(b)
        return made

    def unhanded_batches(self) -> list[Batch]:
        with self.engine.connect() as c:
            return [Batch(r.id, r.tenant_id, r.provider, r.model, r.period, r.pool_id, r.rows, r.tokens_in,
                          r.tokens_out, r.units, r.fen, r.first_at, r.last_at)
                    for r in c.execute(select(B).where(B.c.handed.is_(False)).order_by(B.c.created_at, B.c.id))]

    def mark_handed(self, batch_ids: Sequence[str]) -> None:
        with self.engine.begin() as c:
            for i in range(0, len(batch_ids), 500):
                c.execute(update(B).where(B.c.id.in_(batch_ids[i:i + 500])).values(handed=True))

    # ------------------------------------------------------------- receipts
    def add_receipt(self, side: str, peer: str, period: str, receipt_id: str, cost_units: int, body: str,
                    signature: str, now: datetime) -> bool:
        stmt = self._insert(R).values(id=receipt_id, side=side, peer=peer, period=period, cost_units=cost_units,
                                      body=body, signature=signature, batch_id=None, created_at=now)
        with self.engine.begin() as c:
            return bool(c.execute(stmt.on_conflict_do_nothing(index_elements=[R.c.id])).rowcount)

    def receipts(self, side: str | None = None) -> list[dict[str, Any]]:
        q = select(R).order_by(R.c.created_at, R.c.id)
        if side:
            q = q.where(R.c.side == side)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def batch_receipts(self, side: str, new_id: Any, now: datetime) -> list[tuple[str, str, str, list[str], int]]:
        """Group unbatched receipts per (peer, period) into batches; returns
        (batch id, peer, period, receipt bodies, cumulative units before)."""
        out = []
        with self.engine.begin() as c:
            rows = c.execute(select(R.c.id, R.c.peer, R.c.period, R.c.body, R.c.cost_units).where(
                and_(R.c.side == side, R.c.batch_id.is_(None))).order_by(R.c.created_at, R.c.id)).all()
            groups: dict[tuple[str, str], list[Any]] = {}
            for r in rows:
                groups.setdefault((r.peer, r.period), []).append(r)
            for (peer, period), rs in sorted(groups.items()):
                last = c.execute(select(RB.c.seq, RB.c.cum_units).where(and_(
                    RB.c.side == side, RB.c.peer == peer, RB.c.period == period)).order_by(RB.c.seq.desc())
                    .limit(1)).first()
                seq, before = (last.seq + 1, last.cum_units) if last else (1, 0)
                after = before + sum(r.cost_units for r in rs)
                bid = new_id()
                c.execute(insert(RB).values(id=bid, side=side, peer=peer, period=period, seq=seq, cum_units=after,
                                            fen=units_to_fen_rounded(after) - units_to_fen_rounded(before),
                                            booked=False, created_at=now))
                c.execute(update(R).where(R.c.id.in_([r.id for r in rs])).values(batch_id=bid))
                out.append((bid, peer, period, [r.body for r in rs], before))
        return out

    def unbooked_receipt_batches(self, side: str) -> list[tuple[str, str, str, list[str], int]]:
        with self.engine.connect() as c:
            bs = c.execute(select(RB).where(and_(RB.c.side == side, RB.c.booked.is_(False)))
                           .order_by(RB.c.created_at, RB.c.id)).all()
            out = []
            for b in bs:
                bodies = [r.body for r in c.execute(select(R.c.body).where(R.c.batch_id == b.id)
                                                    .order_by(R.c.created_at, R.c.id))]
                before = b.cum_units - sum(json.loads(x)["cost_units"] for x in bodies)
                out.append((b.id, b.peer, b.period, bodies, before))
        return out

    def mark_receipt_batch_booked(self, batch_id: str) -> None:
        with self.engine.begin() as c:
            if not c.execute(update(RB).where(RB.c.id == batch_id).values(booked=True)).rowcount:
                raise NotFound(f"no receipt batch {batch_id}")


def _policy(r: Any) -> KeyPolicy:
    return KeyPolicy(r.key_id, r.tenant_id, r.name, tuple(json.loads(r.models)), r.budget_units, Period(r.period),
                     Decimal(r.alert_ratio) if r.alert_ratio is not None else None, r.rpm, r.tpm,
                     tuple(json.loads(r.regions)), r.expires_at)

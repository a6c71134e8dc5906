"""Durable federation state on SQLite / PostgreSQL (tables in ``store/federation_tables.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError

from yungu.adapters.store import federation_tables as ft
from yungu.adapters.store.db import reader
from yungu.engines.federation.policy import PeeringPolicy


@dataclass(frozen=True)
class PeerRecord:
    id: str
    name: str
    base_url: str
    keys: tuple[dict[str, str], ...]
    policy: PeeringPolicy = field(default_factory=PeeringPolicy)
    latency_ms: int = 0
    state: str = "healthy"
    state_since: datetime | None = None
    state_reason: str = ""
    added_at: datetime | None = None

    def public_keys(self) -> list[str]:
        return [k["public_key"] for k in self.keys]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "base_url": self.base_url, "keys": list(self.keys),
                "policy": self.policy.to_dict(), "latency_ms": self.latency_ms, "state": self.state,
                "state_since": self.state_since.isoformat() if self.state_since else None,
                "state_reason": self.state_reason, "added_at": self.added_at.isoformat() if self.added_at else None}


class FederationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = reader(engine)

    # ------------------------------------------------------------- peers
    def _peer(self, r: Row[Any]) -> PeerRecord:
        return PeerRecord(r.id, r.name, r.base_url, tuple(json.loads(r.keys)),
                          PeeringPolicy.from_dict(json.loads(r.policy)), r.latency_ms, r.state, r.state_since,
                          r.state_reason, r.added_at)

    def peers(self) -> list[PeerRecord]:
        with self.reads.connect() as c:
            return [self._peer(r) for r in c.execute(select(ft.fed_peers).order_by(ft.fed_peers.c.id))]

    def peer(self, peer_id: str) -> PeerRecord | None:
        with self.reads.connect() as c:
            r = c.execute(select(ft.fed_peers).where(ft.fed_peers.c.id == peer_id)).first()
        return self._peer(r) if r else None

    def put_peer(self, p: PeerRecord, now: datetime) -> None:
        values = {"name": p.name, "base_url": p.base_url, "keys": json.dumps(list(p.keys)),
                  "policy": json.dumps(p.policy.to_dict()), "latency_ms": p.latency_ms, "updated_at": now}
        with self.engine.begin() as c:
            n = c.execute(update(ft.fed_peers).where(ft.fed_peers.c.id == p.id).values(**values)).rowcount
            if not n:
                c.execute(insert(ft.fed_peers).values(id=p.id, state="healthy", state_since=now, state_reason="",
                                                      added_at=now, **values))

    def set_keys(self, peer_id: str, keys: Sequence[dict[str, str]], now: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(update(ft.fed_peers).where(ft.fed_peers.c.id == peer_id)
                      .values(keys=json.dumps(list(keys)), updated_at=now))

    def remove_peer(self, peer_id: str) -> bool:
        with self.engine.begin() as c:
            return bool(c.execute(delete(ft.fed_peers).where(ft.fed_peers.c.id == peer_id)).rowcount)

    def record_health(self, peer_id: str, before: str, after: str, at: datetime, reason: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(ft.fed_peers).where(ft.fed_peers.c.id == peer_id)
                      .values(state=after, state_since=at, state_reason=reason[:500]))
            c.execute(insert(ft.fed_peer_events).values(peer_id=peer_id, at=at, before=before, after=after,
                                                        reason=reason[:500]))

    def peer_events(self, peer_id: str, limit: int = 50) -> list[dict[str, Any]]:
        e = ft.fed_peer_events
        with self.reads.connect() as c:
            rows = c.execute(select(e).where(e.c.peer_id == peer_id).order_by(e.c.id.desc()).limit(limit)).all()
        return [{"at": r.at.isoformat(), "from": r.before, "to": r.after, "reason": r.reason} for r in rows]

    # ------------------------------------------------------------- outbound (origin side)
    def insert_outbound(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new delegations; one that exists keeps its row but its lease grows."""
        if not rows:
            return
        o = ft.fed_outbound
        with self.engine.begin() as c:
            have = {r.request_id: r.lease_until for r in c.execute(
                select(o.c.request_id, o.c.lease_until).where(o.c.request_id.in_([r["request_id"] for r in rows])))}
            new = [r for r in rows if r["request_id"] not in have]
            if new:
                c.execute(insert(o), new)
            grow = [{"b_id": r["request_id"], "b_lease": r["lease_until"]} for r in rows
                    if r["request_id"] in have and r["lease_until"] > have[r["request_id"]]]
            if grow:
                c.execute(update(o).where(o.c.request_id == bindparam("b_id")).values(lease_until=bindparam("b_lease")),
                          grow)

    def extend_leases(self, request_ids: Sequence[str], until: datetime) -> None:
        if not request_ids:
            return
        o = ft.fed_outbound
        with self.engine.begin() as c:
            for i in range(0, len(request_ids), 500):
                c.execute(update(o).where(and_(o.c.request_id.in_(request_ids[i:i + 500]), o.c.lease_until < until))
                          .values(lease_until=until))

    def update_outbound(self, changes: Sequence[dict[str, Any]]) -> None:
        """Each change names ``request_id`` and the columns to set."""
        if not changes:
            return
        o = ft.fed_outbound
        with self.engine.begin() as c:
            for ch in changes:
                values = {k: v for k, v in ch.items() if k != "request_id"}
                c.execute(update(o).where(o.c.request_id == ch["request_id"]).values(**values))

    def outbound(self, open_only: bool = True, peer_id: str | None = None) -> list[Row[Any]]:
        o = ft.fed_outbound
        q = select(o)
        if open_only:
            q = q.where(o.c.closed.is_(False))
        if peer_id is not None:
            q = q.where(o.c.peer_id == peer_id)
        with self.reads.connect() as c:
            return list(c.execute(q.order_by(o.c.created_at)))

    def outbound_one(self, request_id: str) -> Row[Any] | None:
        o = ft.fed_outbound
        with self.reads.connect() as c:
            return c.execute(select(o).where(o.c.request_id == request_id)).first()

    # ------------------------------------------------------------- inbound (peer side)
    def inbound(self, key: str) -> Row[Any] | None:
        i = ft.fed_inbound
        with self.reads.connect() as c:
            return c.execute(select(i).where(i.c.id == key)).first()

    def inbound_many(self, keys: Sequence[str]) -> dict[str, Row[Any]]:
        i = ft.fed_inbound
        out: dict[str, Row[Any]] = {}
        with self.reads.connect() as c:
            for n in range(0, len(keys), 500):
                out.update((r.id, r) for r in c.execute(select(i).where(i.c.id.in_(keys[n:n + 500]))))
        return out

    def insert_inbound(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert rows whose ids are new; returns the ids this call inserted (a race loser is left out)."""
        if not rows:
            return set()
        i = ft.fed_inbound
        try:
            with self.engine.begin() as c:
                have = {r.id for r in c.execute(select(i.c.id).where(i.c.id.in_([r["id"] for r in rows])))}
                new = [r for r in rows if r["id"] not in have]
                if new:
                    c.execute(insert(i), new)
                return {r["id"] for r in new}
        except IntegrityError:
            done: set[str] = set()
            for r in rows:
                try:
                    with self.engine.begin() as c:
                        c.execute(insert(i).values(**r))
                    done.add(r["id"])
                except IntegrityError:
                    pass
            return done

    def update_inbound(self, changes: Sequence[dict[str, Any]]) -> None:
        if not changes:
            return
        i = ft.fed_inbound
        with self.engine.begin() as c:
            for ch in changes:
                c.execute(update(i).where(i.c.id == ch["id"]).values(**{k: v for k, v in ch.items() if k != "id"}))

    def inbound_in_states(self, states: Iterable[str], origin: str | None = None) -> list[Row[Any]]:
        i = ft.fed_inbound
        q = select(i).where(i.c.state.in_(list(states)))
        if origin is not None:
            q = q.where(i.c.origin == origin)
        with self.reads.connect() as c:
            return list(c.execute(q))

    def inbound_for_jobs(self, origin: str, origin_job_ids: Sequence[str]) -> dict[str, list[Row[Any]]]:
        i = ft.fed_inbound
        out: dict[str, list[Row[Any]]] = {}
        with self.reads.connect() as c:
            for n in range(0, len(origin_job_ids), 500):
                q = select(i).where(and_(i.c.origin == origin, i.c.origin_job_id.in_(list(origin_job_ids[n:n + 500]))))
                for r in c.execute(q):
                    out.setdefault(r.origin_job_id, []).append(r)
        return out

    def inbound_for_job(self, origin: str, origin_job_id: str) -> list[Row[Any]]:
        i = ft.fed_inbound
        with self.reads.connect() as c:
            return list(c.execute(select(i).where(and_(i.c.origin == origin, i.c.origin_job_id == origin_job_id))))

    # ------------------------------------------------------------- receipts
    def add_receipt(self, row: dict[str, Any]) -> bool:
        try:
            with self.engine.begin() as c:
                c.execute(insert(ft.fed_receipts).values(**row))
            return True
        except IntegrityError:
            return False

    def receipt(self, receipt_id: str, side: str) -> Row[Any] | None:
        r = ft.fed_receipts
        with self.reads.connect() as c:
            return c.execute(select(r).where(and_(r.c.receipt_id == receipt_id, r.c.side == side))).first()

    def receipt_for(self, side: str, issuer: str, request_id: str) -> Row[Any] | None:
        r = ft.fed_receipts
        with self.reads.connect() as c:
            return c.execute(select(r).where(and_(r.c.side == side, r.c.issuer == issuer,
                                                  r.c.request_id == request_id))).first()

    def receipts(self, *, side: str | None = None, period: str | None = None, booked: bool | None = None,
                 acked: bool | None = None, limit: int = 100_000) -> list[Row[Any]]:
        r = ft.fed_receipts
        q = select(r)
        for col, v in ((r.c.side, side), (r.c.period, period), (r.c.booked, booked), (r.c.acked, acked)):
            if v is not None:
                q = q.where(col == v)
        with self.reads.connect() as c:
            return list(c.execute(q.order_by(r.c.created_at).limit(limit)))

    def mark_receipts(self, side: str, ids: Sequence[str], **values: Any) -> None:
        if not ids:
            return
        r = ft.fed_receipts
        with self.engine.begin() as c:
            c.execute(update(r).where(and_(r.c.side == side, r.c.receipt_id.in_(list(ids)))).values(**values))

    # ------------------------------------------------------------- clearing
    def put_position(self, period: str, a: str, b: str, body: dict[str, Any], sigs: dict[str, str],
                     now: datetime) -> None:
        p = ft.fed_positions
        with self.engine.begin() as c:
            c.execute(delete(p).where(and_(p.c.period == period, p.c.a == a, p.c.b == b)))
            c.execute(insert(p).values(period=period, a=a, b=b, body=json.dumps(body), signatures=json.dumps(sigs),
                                       created_at=now))

    def positions(self, period: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        p = ft.fed_positions
        with self.reads.connect() as c:
            rows = c.execute(select(p).where(p.c.period == period)).all()
        return [(json.loads(r.body), json.loads(r.signatures)) for r in rows]

    def put_statement(self, period: str, body: dict[str, Any], sigs: dict[str, str], state: str,
                      now: datetime) -> None:
        s = ft.fed_statements
        with self.engine.begin() as c:
            n = c.execute(update(s).where(s.c.period == period).values(
                body=json.dumps(body), signatures=json.dumps(sigs), state=state, updated_at=now)).rowcount
            if not n:
                c.execute(insert(s).values(period=period, body=json.dumps(body), signatures=json.dumps(sigs),
                                           state=state, created_at=now, updated_at=now))

    def statement(self, period: str) -> tuple[dict[str, Any], dict[str, str], str] | None:
        s = ft.fed_statements
        with self.reads.connect() as c:
            r = c.execute(select(s).where(s.c.period == period)).first()
        return (json.loads(r.body), json.loads(r.signatures), r.state) if r else None

"""The ingestion store: validate, de-duplicate, quarantine, insert; roll up; query.

Exactly-once per (node, seq): a batch is checked against the sequence numbers already
stored for its node and inserted in one transaction, so when the platform acknowledges a
batch it is durable, and a resend of an acknowledged or half-acknowledged batch stores
nothing twice. Resends are *counted* (``duplicate_resend``); a reused seq carrying a
different timestamp is *quarantined* (``duplicate_seq_conflict``) because one of the two
readings is wrong and we cannot know which.

Every rejected sample is stored in ``telemetry_quarantine`` with a stable reason slug and
counted in ``telemetry_counters``; nothing bad is stored silently and nothing is dropped
silently. The exception is a batch whose node is unknown or whose key is wrong: it is
answered with its reasons (the API answers 401) and stored nowhere, so that anyone without a
node key cannot fill the database.

Hot path notes (target >= 200,000 samples/s on 2 cores): the validation is a tight loop
over dicts, inserts go through the DB-API ``executemany`` with positional parameters, and
only samples carrying jobs or GPUs serialise a JSON ``detail``.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import numpy as np
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from yungu.adapters.store.telemetry_tables import (
    telemetry_chunks,
    telemetry_counters,
    telemetry_job_samples,
    telemetry_nodes,
    telemetry_quarantine,
    telemetry_rollup_1m,
)
from yungu.adapters.telemetry import chunks
from yungu.domain.errors import Conflict, InvalidInput, NotFound
from yungu.engines.energy.samples import (
    MAX_FUTURE_S,
    MAX_PAST_S,
    NodeSample,
    check_sample,
    column_length,
    columns_to_rows,
    sample_from_dict,
    sample_to_dict,
)

DETAIL_KEYS = ("gpus", "jobs", "cpu_idle_w", "gpu_idle_w", "cores", "node_cpu_seconds", "cpu_method")


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    site_id: str
    pool_id: str
    key_hash: str
    cpu_model: str
    gpu_model: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    quarantined: list[tuple[int | None, str, str]] = field(default_factory=list)  # (seq, reason, detail)
    last_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        reasons = Counter(r for _, r, _ in self.quarantined)
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": len(self.quarantined),
            "reasons": dict(reasons),
            "details": [{"seq": s, "reason": r, "detail": d} for s, r, d in self.quarantined[:50]],
            "last_seq": self.last_seq,
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TelemetryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._nodes: dict[str, NodeInfo] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._pg = engine.dialect.name == "postgresql"
        p = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        verb = "INSERT INTO" if self._pg else "INSERT OR IGNORE INTO"
        tail = " ON CONFLICT DO NOTHING" if self._pg else ""
        self._insert_job_sql = (
            f"{verb} telemetry_job_samples (job_id, node_id, seq, ts_ms) VALUES ({p}, {p}, {p}, {p}){tail}"
        )

    # ---- nodes -------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        site_id: str,
        pool_id: str,
        now: datetime,
        *,
        cpu_model: str = "",
        gpu_model: str = "",
    ) -> str:
        """Register a node and return its agent key (shown once; only the hash is kept)."""
        if not node_id or len(node_id) > 128:
            raise InvalidInput("node id must be 1..128 characters")
        key = "ygn_" + secrets.token_urlsafe(24)
        with self.engine.begin() as c:
            if c.execute(
                select(telemetry_nodes.c.node_id).where(telemetry_nodes.c.node_id == node_id)
            ).first():
                raise Conflict(f"node {node_id!r} is already registered / 节点已注册")
            c.execute(
                telemetry_nodes.insert().values(
                    node_id=node_id, site_id=site_id, pool_id=pool_id, key_hash=hash_key(key),
                    cpu_model=cpu_model, gpu_model=gpu_model, registered_at=now, energy_j=0.0,
                )
            )  # fmt: skip
        return key

    def node(self, node_id: str) -> NodeInfo | None:
        n = self._nodes.get(node_id)
        if n is None:
            with self.engine.connect() as c:
                r = c.execute(select(telemetry_nodes).where(telemetry_nodes.c.node_id == node_id)).first()
            if r is None:
                return None
            n = NodeInfo(r.node_id, r.site_id, r.pool_id, r.key_hash, r.cpu_model, r.gpu_model)
            self._nodes[node_id] = n
        return n

    def authenticate(self, node_id: str, key: str | None) -> NodeInfo | None:
        """The node, if ``key`` is its agent key; None for an unknown node or a wrong key."""
        info = self.node(node_id)
        if info is None or not key or not secrets.compare_digest(info.key_hash, hash_key(key)):
            return None
        return info

    def nodes(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(select(telemetry_nodes).order_by(telemetry_nodes.c.node_id)).all()
        return [
            {
                "node_id": r.node_id, "site_id": r.site_id, "pool_id": r.pool_id, "cpu_model": r.cpu_model,
                "gpu_model": r.gpu_model, "registered_at": r.registered_at.isoformat(),
                "last_seen": None if r.last_seen_ms is None else datetime.fromtimestamp(r.last_seen_ms / 1000, UTC).isoformat(),
                "last_seq": r.last_seq,
            }
            for r in rows
        ]  # fmt: skip

    # ---- ingestion ---------------------------------------------------------------------

    def ingest(self, node_id: str, key: str | None, rows: Sequence[Any], now: datetime) -> IngestResult:
        """Validate and store one agent batch of per-sample objects (the original wire form)."""
        return self._ingest(node_id, key, now, rows=rows)

    def ingest_columns(
        self, node_id: str, key: str | None, cols: dict[str, Any], now: datetime
    ) -> IngestResult:
        """Validate and store one agent batch sent as parallel columns (see ``samples.COLUMN_FIELDS``).

        Same checks, outcomes and guarantees as :meth:`ingest`; rows that fail a vector check
        or carry GPUs/jobs are rebuilt as objects and take the per-sample path, so their
        reasons and quarantine payloads are exactly those of the object form. Columns of
        different lengths are a malformed envelope (``InvalidInput``, nothing stored).
        """
        n = column_length(cols)
        return self._ingest(node_id, key, now, cols=cols, n=n)

    def _ingest(
        self,
        node_id: str,
        key: str | None,
        now: datetime,
        *,
        rows: Sequence[Any] | None = None,
        cols: dict[str, Any] | None = None,
        n: int = 0,
    ) -> IngestResult:
        now_ms = int(now.timestamp() * 1000)
        res = IngestResult()
        quarantine: list[tuple[int, str, int | None, str, str, str]] = []

        def reject(seq: int | None, reason: str, detail: str, payload: Any) -> None:
            res.quarantined.append((seq, reason, detail))
            body = json.dumps(payload, default=str, allow_nan=True)[:4000]
            quarantine.append((now_ms, str(node_id)[:128], seq, reason, detail, body))

        info = self.authenticate(node_id, key)
        if info is None:  # reported to the caller, stored nowhere: unauthenticated input writes nothing
            info = self.node(node_id)
            reason, detail = (
                ("unknown_node", f"node {node_id!r} is not registered")
                if info is None
                else ("bad_key", "the agent key does not match the node's registered key")
            )
            for r in rows if rows is not None else columns_to_rows(cols or {}):
                seq = r.get("seq") if isinstance(r, dict) and isinstance(r.get("seq"), int) else None
                res.quarantined.append((seq, reason, detail))
            return res

        if rows is not None:
            arr, details, jobs = self._validate(info, rows, now_ms, reject)
        else:
            arr, details, jobs = self._validate_columns(info, cols or {}, n, now_ms, reject)
        with self._node_lock(node_id), self.engine.begin() as c:
            fresh = self._dedup(c, node_id, arr, details, res, reject)
            if fresh is not None and jobs:
                keep = {int(x) for x in fresh[0]["seq"]}
                jobs = [j for j in jobs if j[2] in keep]
            self._write(c, res, fresh, jobs, quarantine, node_id)
        return res

    def _node_lock(self, node_id: str) -> threading.Lock:
        with self._lock:
            lk = self._locks.get(node_id)
            if lk is None:
                lk = self._locks[node_id] = threading.Lock()
            return lk

    @staticmethod
    def _vector(cols: dict[str, Any], n: int, node_id: str, now_ms: int) -> tuple[chunks.Chunk, Any]:
        """The checks of ``check_sample`` for plain samples, one numpy pass per field.

        ``cols`` maps wire field names to length-``n`` sequences (absent optional fields
        may be missing). Returns the chunk of rows that pass every check, and the indexes of
        the rest, which the caller sends through the per-sample path for their reasons (a
        column that does not convert at all sends every row there).
        """
        everyone = np.arange(n)
        try:
            seq = np.asarray(cols["seq"])
            if seq.dtype.kind != "i" or seq.shape != (n,):
                return chunks.empty(0), everyone
            ts = np.asarray(cols["ts"], dtype=np.float64) * 1000.0
            cu = np.asarray(cols["cpu_utilisation"], dtype=np.float64)
            cp = np.asarray(cols["cpu_power_w"], dtype=np.float64)
            opt = {
                k: np.asarray(cols[k], dtype=np.float64)
                for k in (
                    "memory_utilisation",
                    "cpu_energy_j",
                    "node_cpu_seconds",
                    "cpu_idle_w",
                    "gpu_idle_w",
                )
                if k in cols
            }
            method = np.asarray(cols["cpu_method"]) if "cpu_method" in cols else None
        except (KeyError, TypeError, ValueError, OverflowError):
            return chunks.empty(0), everyone
        if any(a.shape != (n,) for a in (ts, cu, cp, *opt.values())):
            return chunks.empty(0), everyone
        mu = opt.get("memory_utilisation", np.zeros(n))
        ce = opt.get("cpu_energy_j", np.full(n, np.nan))
        with np.errstate(invalid="ignore"):
            ok = (
                (seq >= 0)
                & np.isfinite(ts) & (ts <= now_ms + MAX_FUTURE_S * 1000) & (ts >= now_ms - MAX_PAST_S * 1000)
                & np.isfinite(cu) & (cu >= 0) & (cu <= 1)
                & np.isfinite(mu) & (mu >= 0) & (mu <= 1)
                & np.isfinite(cp) & (cp >= 0)
                & ~np.isinf(ce) & ~(ce < 0)
            )  # fmt: skip
            for k in ("node_cpu_seconds", "cpu_idle_w", "gpu_idle_w"):
                if k in opt:
                    ok &= np.isfinite(opt[k]) & (opt[k] >= 0)
        nan_ce = np.isnan(ce)
        if "cpu_energy_j" in cols and nan_ce.any():  # an explicit NaN counter is bad, an absent one is fine
            col = cols["cpu_energy_j"]
            ok &= ~(nan_ce & np.array([x is not None for x in col], dtype=bool))
        if method is None:
            modelled = np.ones(n, dtype=np.uint8)
        elif method.shape != (n,) or method.dtype.kind != "U":
            return chunks.empty(0), everyone
        else:
            measured = method == "measured"
            ok &= measured | (method == "modelled")
            modelled = (~measured).astype(np.uint8)
        if "node_id" in cols:
            ok &= np.asarray(cols["node_id"], dtype=object) == node_id
        for k in ("gpus", "jobs"):
            if k in cols:  # samples with GPUs or jobs carry per-device/per-job detail: full path
                ok &= np.fromiter((not x for x in cols[k]), dtype=bool, count=n)
        arr = chunks.empty(int(ok.sum()))
        arr["seq"] = seq[ok]
        arr["ts_ms"] = ts[ok].astype(np.int64)
        arr["cpu_util"], arr["mem_util"], arr["cpu_power_w"] = cu[ok], mu[ok], cp[ok]
        arr["gpu_power_w"], arr["cpu_energy_j"], arr["gpu_energy_j"] = 0.0, ce[ok], np.nan
        arr["modelled"] = modelled[ok]
        return arr, np.flatnonzero(~ok)

    def _validate(
        self, info: NodeInfo, rows: Sequence[Any], now_ms: int, reject: Any
    ) -> tuple[chunks.Chunk, dict[int, dict[str, Any]], list[tuple[Any, ...]]]:
        """Object form: plain samples are turned into columns and checked as a vector."""
        node_id = info.node_id
        simple: list[dict[str, Any]] = []
        other: list[Any] = []
        for r in rows:
            if (
                isinstance(r, dict)
                and not r.get("gpus")
                and not r.get("jobs")
                and r.get("node_id", node_id) == node_id
            ):
                simple.append(r)
            else:
                other.append(r)
        parts: list[chunks.Chunk] = []
        if simple:
            cols: dict[str, Any] = {
                "seq": [r.get("seq") for r in simple],
                "ts": [r.get("ts") for r in simple],
                "cpu_utilisation": [r.get("cpu_utilisation") for r in simple],
                "memory_utilisation": [r.get("memory_utilisation", 0.0) for r in simple],
                "cpu_power_w": [r.get("cpu_power_w") for r in simple],
                "cpu_energy_j": [r.get("cpu_energy_j") for r in simple],
                "cpu_method": [r.get("cpu_method", "modelled") for r in simple],
            }
            for k in ("node_cpu_seconds", "cpu_idle_w", "gpu_idle_w"):
                cols[k] = [r.get(k, 0.0) for r in simple]
            good, bad = self._vector(cols, len(simple), node_id, now_ms)
            parts.append(good)
            other = [simple[i] for i in bad] + other
        return self._slow(node_id, other, now_ms, reject, parts)

    def _validate_columns(
        self, info: NodeInfo, cols: dict[str, Any], n: int, now_ms: int, reject: Any
    ) -> tuple[chunks.Chunk, dict[int, dict[str, Any]], list[tuple[Any, ...]]]:
        """Column form: the vector checks run on the columns as sent; failures become objects."""
        good, bad = self._vector(cols, n, info.node_id, now_ms)
        return self._slow(info.node_id, columns_to_rows(cols, bad.tolist()), now_ms, reject, [good])

    def _slow(
        self, node_id: str, slow: list[Any], now_ms: int, reject: Any, good_parts: list[chunks.Chunk]
    ) -> tuple[chunks.Chunk, dict[int, dict[str, Any]], list[tuple[Any, ...]]]:
        """Full parse and ``check_sample`` reasons, one sample at a time (rare rows only)."""
        details: dict[int, dict[str, Any]] = {}
        jobs: list[tuple[Any, ...]] = []
        extra: list[tuple[Any, ...]] = []
        for r in slow:
            seq = r.get("seq") if isinstance(r, dict) else None
            if not isinstance(r, dict):
                reject(None, "malformed", "sample is not a JSON object", r)
                continue
            try:
                s = sample_from_dict(r if "node_id" in r else {**r, "node_id": node_id})
            except InvalidInput as exc:
                reject(seq if type(seq) is int else None, "malformed", exc.message, r)
                continue
            reasons = check_sample(s, now=now_ms / 1000, known_nodes=(node_id,))
            if reasons:
                reject(s.seq, reasons[0].reason, "; ".join(f"{x.reason}: {x.detail}" for x in reasons), r)
                continue
            extra.append(self._row(s))
            d = sample_to_dict(s)
            details[s.seq] = {k: d[k] for k in DETAIL_KEYS}
            jobs.extend((j.job_id, node_id, s.seq, int(s.ts * 1000)) for j in s.jobs)
        if extra:
            e = chunks.empty(len(extra))
            for i, t in enumerate(extra):
                e[i] = t
            good_parts.append(e)
        good_parts = [p for p in good_parts if len(p)]
        arr = (
            np.concatenate(good_parts)
            if len(good_parts) > 1
            else (good_parts[0] if good_parts else chunks.empty(0))
        )
        return arr, details, jobs

    @staticmethod
    def _row(s: NodeSample) -> tuple[Any, ...]:
        gpu_e = [g.energy_j for g in s.gpus]
        gpu_counter = (
            sum(e for e in gpu_e if e is not None)
            if s.gpus and all(e is not None for e in gpu_e)
            else math.nan
        )
        return (
            s.seq, int(s.ts * 1000), s.cpu_utilisation, s.memory_utilisation, s.cpu_power_w,
            sum(g.power_w for g in s.gpus), math.nan if s.cpu_energy_j is None else s.cpu_energy_j, gpu_counter,
            1 if s.modelled else 0,
        )  # fmt: skip

    def _dedup(
        self,
        c: Connection,
        node_id: str,
        arr: chunks.Chunk,
        details: dict[int, dict[str, Any]],
        res: IngestResult,
        reject: Any,
    ) -> tuple[chunks.Chunk, dict[int, dict[str, Any]]] | None:
        """Drop resends (counted) and conflicting reuse of a seq (quarantined)."""
        if len(arr) == 0:
            return None
        sq = arr["seq"]
        if len(arr) > 1 and not bool(np.all(sq[1:] > sq[:-1])):  # agents send in seq order: usually skipped
            arr = arr[np.argsort(sq, kind="stable")]
        # within the batch
        first = np.ones(len(arr), dtype=bool)
        first[1:] = arr["seq"][1:] != arr["seq"][:-1]
        prev_ts = np.empty(len(arr), dtype=np.int64)
        prev_ts[0] = 0
        prev_ts[1:] = arr["ts_ms"][:-1]
        # (a run of equal seqs compares each to its predecessor, which carries the first's ts or was itself a copy)
        dups = ~first
        same = dups & (arr["ts_ms"] == prev_ts)
        conflict = dups & ~same
        for i in np.flatnonzero(conflict):
            reject(
                int(arr["seq"][i]),
                "duplicate_seq_conflict",
                f"seq {int(arr['seq'][i])} sent twice with different timestamps",
                {"seq": int(arr["seq"][i])},
            )
        res.duplicates += int(same.sum())
        arr = arr[first]
        lo, hi = int(arr["seq"][0]), int(arr["seq"][-1])
        t = telemetry_chunks.c
        stored = c.execute(select(t.data).where(t.node_id == node_id, t.seq_max >= lo, t.seq_min <= hi)).all()
        if stored:
            old = np.concatenate([chunks.decode(r[0]) for r in stored])
            old = old[(old["seq"] >= lo) & (old["seq"] <= hi)]
            idx = np.searchsorted(np.sort(old["seq"]), arr["seq"])
            old_sorted = old[np.argsort(old["seq"])]
            idx = np.clip(idx, 0, max(0, len(old_sorted) - 1))
            hit = (
                (len(old_sorted) > 0) & (old_sorted["seq"][idx] == arr["seq"])
                if len(old_sorted)
                else np.zeros(len(arr), bool)
            )
            if np.any(hit):
                same_ts = hit & (old_sorted["ts_ms"][idx] == arr["ts_ms"])
                res.duplicates += int(same_ts.sum())
                for i in np.flatnonzero(hit & ~same_ts):
                    s = int(arr["seq"][i])
                    reject(
                        s,
                        "duplicate_seq_conflict",
                        f"seq {s} already stored with another timestamp",
                        {"seq": s},
                    )
                arr = arr[~hit]
        if len(arr) == 0:
            return None
        keep = {int(x) for x in arr["seq"]} if details else set()
        return arr, {k: v for k, v in details.items() if k in keep}

    def _write(
        self,
        conn: Connection,
        res: IngestResult,
        fresh: tuple[chunks.Chunk, dict[int, dict[str, Any]]] | None,
        jobs: list[tuple[Any, ...]],
        quarantine: list[tuple[int, str, int | None, str, str, str]],
        node_id: str,
    ) -> None:
        if fresh is not None:
            arr, details = fresh
            info = self._nodes[node_id]
            conn.execute(
                telemetry_chunks.insert().values(
                    node_id=node_id, site_id=info.site_id, pool_id=info.pool_id,
                    seq_min=int(arr["seq"].min()), seq_max=int(arr["seq"].max()),
                    ts_min_ms=int(arr["ts_ms"].min()), ts_max_ms=int(arr["ts_ms"].max()), n=len(arr), rolled=False,
                    data=chunks.encode(arr), detail=json.dumps({str(k): v for k, v in details.items()}) if details else None,
                )
            )  # fmt: skip
            res.accepted = len(arr)
            res.last_seq = int(arr["seq"].max())
            self._advance_node(conn, node_id, arr)
        if jobs:
            conn.exec_driver_sql(self._insert_job_sql, jobs)
        if quarantine:
            conn.execute(
                telemetry_quarantine.insert(),
                [
                    dict(
                        zip(("received_ms", "node_id", "seq", "reason", "detail", "payload"), q, strict=True)
                    )
                    for q in quarantine
                ],
            )
        counts = Counter({"accepted": res.accepted, "duplicate_resend": res.duplicates})
        counts.update(f"quarantined_{r}" for _, r, _ in res.quarantined)
        self._bump(conn, {k: v for k, v in counts.items() if v})

    def _advance_node(self, conn: Connection, node_id: str, arr: chunks.Chunk) -> None:
        """Move the node's live energy counter forward over samples newer than its last one.

        Late samples (a replayed backlog older than the newest stored sample) do not move
        the live counter; per-job energy is always recomputed from the stored samples.
        """
        n = telemetry_nodes.c
        row = conn.execute(
            select(n.last_seen_ms, n.last_power_w, n.energy_j, n.last_seq).where(n.node_id == node_id)
        ).first()
        last_ms, last_p, energy, last_seq = (
            (row[0], row[1], float(row[2] or 0.0), row[3]) if row else (None, None, 0.0, None)
        )
        ts = arr["ts_ms"].astype(np.float64)
        p = arr["cpu_power_w"].astype(np.float64) + arr["gpu_power_w"].astype(np.float64)
        if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
            order = np.argsort(ts, kind="stable")
            ts, p = ts[order], p[order]
        if last_ms is not None:
            newer = ts > last_ms
            ts, p = ts[newer], p[newer]
        if len(ts):
            if last_ms is not None and last_p is not None:
                ts = np.concatenate([[float(last_ms)], ts])
                p = np.concatenate([[float(last_p)], p])
            energy += float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(ts)) / 1000.0)
            last_ms, last_p = int(ts[-1]), float(p[-1])
        top = int(arr["seq"].max())
        conn.execute(
            update(telemetry_nodes)
            .where(n.node_id == node_id)
            .values(
                last_seen_ms=last_ms,
                last_power_w=last_p,
                energy_j=energy,
                last_seq=max(top, last_seq if last_seq is not None else -1),
            )
        )

    def _bump(self, conn: Connection, counts: dict[str, int]) -> None:
        for name, n in sorted(counts.items()):
            done = conn.execute(
                update(telemetry_counters)
                .where(telemetry_counters.c.name == name)
                .values(value=telemetry_counters.c.value + n)
            ).rowcount
            if not done:
                conn.execute(telemetry_counters.insert().values(name=name, value=n))

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return {r.name: int(r.value) for r in c.execute(select(telemetry_counters)).all()}

    def quarantine(self, limit: int = 100, reason: str | None = None) -> list[dict[str, Any]]:
        q = select(telemetry_quarantine).order_by(telemetry_quarantine.c.id.desc()).limit(limit)
        if reason:
            q = q.where(telemetry_quarantine.c.reason == reason)
        with self.engine.connect() as c:
            return [
                {"id": r.id, "received_at": datetime.fromtimestamp(r.received_ms / 1000, UTC).isoformat(),
                 "node_id": r.node_id, "seq": r.seq, "reason": r.reason, "detail": r.detail}
                for r in c.execute(q).all()
            ]  # fmt: skip

    # ---- reads -------------------------------------------------------------------------

    def _chunks(self, where: Any, cols: Sequence[Any] | None = None) -> list[Any]:
        t = telemetry_chunks.c
        with self.engine.connect() as c:
            return list(c.execute(select(*(cols or (t.node_id, t.data, t.detail))).where(where)).all())

    def seqs(self, node_id: str) -> list[int]:
        t = telemetry_chunks.c
        rows = self._chunks(t.node_id == node_id)
        return sorted(int(x) for r in rows for x in chunks.decode(r.data)["seq"])

    def node_samples(
        self, node_id: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[NodeSample]:
        """Stored samples of a node as engine values, in time order (for attribution)."""
        t = telemetry_chunks.c
        where = t.node_id == node_id
        if start_ms is not None:
            where = and_(where, t.ts_max_ms >= start_ms)
        if end_ms is not None:
            where = and_(where, t.ts_min_ms <= end_ms)
        out: list[NodeSample] = []
        for r in self._chunks(where):
            det = json.loads(r.detail) if r.detail else {}
            for x in chunks.decode(r.data):
                ts = int(x["ts_ms"])
                if (start_ms is not None and ts < start_ms) or (end_ms is not None and ts > end_ms):
                    continue
                ce = float(x["cpu_energy_j"])
                d: dict[str, Any] = {
                    "node_id": node_id, "seq": int(x["seq"]), "ts": ts / 1000, "cpu_utilisation": float(x["cpu_util"]),
                    "memory_utilisation": float(x["mem_util"]), "cpu_power_w": float(x["cpu_power_w"]),
                    "cpu_energy_j": None if math.isnan(ce) else ce,
                    "cpu_method": "modelled" if x["modelled"] else "measured",
                }  # fmt: skip
                d.update(det.get(str(int(x["seq"])), {}))
                out.append(sample_from_dict(d))
        out.sort(key=lambda s: s.ts)
        return out

    def job_nodes(self, job_id: str) -> dict[str, tuple[int, int]]:
        """Nodes that reported the job, with the first and last sample time (ms)."""
        t = telemetry_job_samples
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.c.node_id, func.min(t.c.ts_ms), func.max(t.c.ts_ms))
                .where(t.c.job_id == job_id)
                .group_by(t.c.node_id)
            ).all()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    # ---- rollups, retention, queries ---------------------------------------------------

    def rollup(self, upto: datetime) -> int:
        """Fold chunks whose samples all precede ``upto`` into 1-minute slots per node-hour.

        Idempotent: a chunk is folded once (``rolled``, in the same transaction as the
        rollup write). Late chunks (a replayed backlog) are folded when they arrive, adding
        into the minutes they cover. Returns the number of node-minutes touched.
        """
        upto_ms = int(upto.timestamp() * 1000)
        t = telemetry_chunks.c
        r = telemetry_rollup_1m.c
        with self.engine.begin() as c:
            rows = c.execute(
                select(t.id, t.node_id, t.site_id, t.pool_id, t.data).where(
                    t.rolled.is_(False), t.ts_max_ms < upto_ms
                )
            ).all()
            acc: dict[tuple[str, int], tuple[str, str, chunks.Chunk]] = {}
            for row in rows:
                a = chunks.decode(row.data)
                hour = a["ts_ms"] // chunks.HOUR_MS
                for h in np.unique(hour):
                    key = (row.node_id, int(h) * chunks.HOUR_MS)
                    if key not in acc:
                        acc[key] = (row.site_id, row.pool_id, chunks.rollup_empty())
                    chunks.rollup_add(acc[key][2], a[hour == h])
            touched = 0
            if acc:
                existing = {
                    (e.node_id, int(e.hour_ms)): e.data
                    for e in c.execute(
                        select(r.node_id, r.hour_ms, r.data).where(
                            r.node_id.in_({k[0] for k in acc}), r.hour_ms.in_({k[1] for k in acc})
                        )
                    ).all()
                }
                inserts = []
                for (node, h), (site, pool, slots) in acc.items():
                    touched += int((slots["n"] > 0).sum())
                    old = existing.get((node, h))
                    if old is None:
                        inserts.append({"node_id": node, "hour_ms": h, "site_id": site, "pool_id": pool,
                                        "n": int(slots["n"].sum()), "data": slots.tobytes()})  # fmt: skip
                    else:
                        merged = chunks.rollup_merge(np.frombuffer(old, dtype=chunks.ROLLUP_DTYPE), slots)
                        c.execute(
                            update(telemetry_rollup_1m)
                            .where(r.node_id == node, r.hour_ms == h)
                            .values(n=int(merged["n"].sum()), data=merged.tobytes())
                        )
                if inserts:
                    c.execute(telemetry_rollup_1m.insert(), inserts)
            if rows:
                c.execute(update(telemetry_chunks).where(t.id.in_([x.id for x in rows])).values(rolled=True))
            wm = c.execute(
                select(telemetry_counters.c.value).where(telemetry_counters.c.name == "rollup_watermark_ms")
            ).scalar()
            self._set(c, "rollup_watermark_ms", max(int(wm or 0), upto_ms // 60000 * 60000))
        return touched

    def _set(self, c: Connection, name: str, value: int) -> None:
        if not c.execute(
            update(telemetry_counters).where(telemetry_counters.c.name == name).values(value=value)
        ).rowcount:
            c.execute(telemetry_counters.insert().values(name=name, value=value))

    def rollup_watermark(self) -> datetime | None:
        with self.engine.connect() as c:
            wm = c.execute(
                select(telemetry_counters.c.value).where(telemetry_counters.c.name == "rollup_watermark_ms")
            ).scalar()
        return None if wm is None else datetime.fromtimestamp(int(wm) / 1000, UTC)

    def enforce_retention(
        self, now: datetime, *, raw_days: float = 7, rollup_days: float = 400
    ) -> dict[str, int]:
        """Delete raw chunks older than ``raw_days`` (only once rolled up) and old rollups."""
        now_ms = int(now.timestamp() * 1000)
        cut = now_ms - int(raw_days * 86400_000)
        t = telemetry_chunks.c
        with self.engine.begin() as c:
            raw = c.execute(
                select(func.coalesce(func.sum(t.n), 0)).where(t.ts_max_ms < cut, t.rolled.is_(True))
            ).scalar()
            c.execute(delete(telemetry_chunks).where(t.ts_max_ms < cut, t.rolled.is_(True)))
            c.execute(delete(telemetry_job_samples).where(telemetry_job_samples.c.ts_ms < cut))
            roll = c.execute(  # whole node-hours that ended before the cut
                delete(telemetry_rollup_1m).where(
                    telemetry_rollup_1m.c.hour_ms + chunks.HOUR_MS <= now_ms - int(rollup_days * 86400_000)
                )
            ).rowcount
        return {"raw_deleted": int(raw or 0), "rollups_deleted": int(roll or 0)}

    def query(
        self, scope: str, ident: str, start: datetime, end: datetime, step_s: int
    ) -> list[dict[str, Any]]:
        """Power and utilisation of a site/pool/node over ``[start, end)`` in ``step_s`` buckets.

        Power in a bucket is the sum over nodes of each node's mean power (a site's load).
        For minute-aligned ranges and steps the answer is exact from 1-minute rollups (one blob
        per node-hour) plus the raw chunks not yet rolled up: the two are disjoint and
        additive (sample counts and sums), so rolled and late data are both counted once.
        Otherwise raw chunks are bucketed sample by sample; where retention has already
        removed them, the rollups answer (buckets then start on whole minutes).
        """
        if scope not in ("site", "pool", "node"):
            raise InvalidInput(f"scope must be site, pool or node, not {scope!r}")
        if step_s < 1 or end <= start:
            raise InvalidInput("need step >= 1 s and end > start")
        if (end - start).total_seconds() / step_s > 100_000:
            raise InvalidInput("too many points: widen the step (at most 100,000 per query)")
        lo, hi, step = int(start.timestamp() * 1000), int(end.timestamp() * 1000), step_s * 1000
        t = telemetry_chunks.c
        r = telemetry_rollup_1m.c
        ccol = {"site": t.site_id, "pool": t.pool_id, "node": t.node_id}[scope]
        rcol = {"site": r.site_id, "pool": r.pool_id, "node": r.node_id}[scope]
        # per part: node indexes, times (ms), sample counts, utilisation sums, power sums, modelled
        parts: list[tuple[Any, Any, Any, Any, Any, Any]] = []
        use_rollup = step % chunks.MINUTE_MS == 0 and lo % chunks.MINUTE_MS == 0
        with self.engine.connect() as c:
            if not use_rollup:
                first_raw = c.execute(select(func.min(t.ts_min_ms)).where(ccol == ident)).scalar()
                use_rollup = first_raw is None or int(first_raw) > lo + step  # raw gone: rollups answer
            chunk_where = and_(ccol == ident, t.ts_max_ms >= lo, t.ts_min_ms < hi)
            if use_rollup:
                chunk_where = and_(chunk_where, t.rolled.is_(False))
                rrows = c.execute(
                    select(r.node_id, r.hour_ms, r.data).where(
                        rcol == ident, r.hour_ms > lo - chunks.HOUR_MS, r.hour_ms < hi
                    )
                ).all()
            else:
                rrows = []
            crows = c.execute(select(t.node_id, t.data).where(chunk_where)).all()
        names = sorted({x[0] for x in rrows} | {x[0] for x in crows})
        ix = {n: i for i, n in enumerate(names)}
        if rrows:
            slots = chunks.rollup_decode_many([x[2] for x in rrows])
            hours = np.fromiter((x[1] for x in rrows), dtype=np.int64, count=len(rrows))
            rts = (hours[:, None] + np.arange(60, dtype=np.int64) * chunks.MINUTE_MS).ravel()
            flat = slots.ravel()
            node_of = np.repeat(np.fromiter((ix[x[0]] for x in rrows), dtype=np.int64, count=len(rrows)), 60)
            sel = (flat["n"] > 0) & (rts >= lo) & (rts < hi)
            f = flat[sel]
            parts.append((node_of[sel], rts[sel], f["n"], f["cpu_util_sum"], f["power_sum_w"], f["modelled"]))
        if crows:  # all chunks decoded together: one numpy pass whatever the batch sizes
            a = chunks.decode(b"".join(x[1] for x in crows))
            sizes = np.fromiter(
                (len(x[1]) // chunks.SAMPLE_DTYPE.itemsize for x in crows), np.int64, len(crows)
            )
            cnode = np.repeat(np.fromiter((ix[x[0]] for x in crows), np.int64, len(crows)), sizes)
            cts = a["ts_ms"]
            keep = (cts >= lo) & (cts < hi)
            if not keep.all():
                a, cnode = a[keep], cnode[keep]
            if len(a):
                p = a["cpu_power_w"].astype(np.float64)
                p += a["gpu_power_w"]
                parts.append((cnode, a["ts_ms"], np.ones(len(a)), a["cpu_util"], p, a["modelled"]))
        if not parts:
            return []
        node_idx = np.concatenate([x[0] for x in parts])
        ts = np.concatenate([x[1] for x in parts]).astype(np.int64)
        cnt = np.concatenate([x[2] for x in parts]).astype(np.float64)
        usum = np.concatenate([x[3] for x in parts]).astype(np.float64)
        psum = np.concatenate([x[4] for x in parts]).astype(np.float64)
        mod = np.concatenate([x[5] for x in parts]).astype(np.float64)
        b = (ts - lo) // step
        nb, nn = int((hi - lo + step - 1) // step), len(names)
        cell = node_idx * nb + b
        size = nn * nb
        n_c = np.bincount(cell, weights=cnt, minlength=size)
        p_c = np.bincount(cell, weights=psum, minlength=size)
        u_c = np.bincount(cell, weights=usum, minlength=size).reshape(nn, nb).sum(axis=0)
        m_c = np.bincount(cell, weights=mod, minlength=size).reshape(nn, nb).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_b = np.where(n_c > 0, p_c / n_c, 0.0).reshape(nn, nb).sum(axis=0)
        n_b = n_c.reshape(nn, nb).sum(axis=0)
        src = "rollup_1m" if rrows else "raw"
        idx = np.flatnonzero(n_b > 0)
        t_ms = lo + idx * step
        if lo % 1000 == 0 and step % 1000 == 0:  # whole seconds: format all times in one call
            times = [
                x + "+00:00" for x in np.datetime_as_string(t_ms.astype("datetime64[ms]"), unit="s").tolist()
            ]
        else:
            times = [datetime.fromtimestamp(int(x) / 1000, UTC).isoformat() for x in t_ms]
        util = u_c[idx] / n_b[idx]
        return [
            {"t": tt, "power_w": pw, "cpu_util": cu, "samples": int(nn_), "method": "modelled" if mm > 0 else "measured",
             "source": src}
            for tt, pw, cu, nn_, mm in zip(
                times, p_b[idx].tolist(), util.tolist(), n_b[idx].tolist(), m_c[idx].tolist(), strict=True
            )
        ]  # fmt: skip

    def latest_by_node(self) -> list[dict[str, Any]]:
        """Every node with its last-seen time and last power (for /metrics and alerts)."""
        n = telemetry_nodes.c
        with self.engine.connect() as c:
            rows = c.execute(
                select(
                    n.node_id,
                    n.site_id,
                    n.pool_id,
                    n.last_seen_ms,
                    n.last_power_w,
                    n.energy_j,
                    n.gpu_model,
                    n.cpu_model,
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    def energy_totals(self) -> dict[str, float]:
        """The live per-node energy counters (joules), for ``*_joules_total``."""
        n = telemetry_nodes.c
        with self.engine.connect() as c:
            return {r[0]: float(r[1] or 0.0) for r in c.execute(select(n.node_id, n.energy_j)).all()}


def require_node(store: TelemetryStore, node_id: str) -> NodeInfo:
    n = store.node(node_id)
    if n is None:
        raise NotFound(f"unknown node {node_id!r} / 未知节点")
    return n


def iter_chunks(rows: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]

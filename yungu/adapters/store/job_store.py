"""SQL store of tenants, API keys and jobs (SQLAlchemy Core; SQLite or PostgreSQL).

Every state change goes through ``record``: a compare-and-set on (id, state, attempt) plus
an append to ``job_events`` in the same transaction, so the log and the state never
disagree, and a stale writer (a crashed-and-restarted loop) cannot overwrite newer state.

Fencing (``fenced(fence)``): the control loop's writes (``record``, ``rest``,
``set_reasons``) first read the lease row's token in the same transaction (``FOR SHARE`` on
PostgreSQL, so a takeover waits for the write or the write sees the takeover) and refuse
with ``Fenced`` when another process has taken the lease since. Such a transaction left
idle for 2 s (its writer paused) is ended by the server, so it cannot block a takeover.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from yungu.adapters.codec import dumps_allocation, dumps_spec, loads_allocation, loads_spec
from yungu.adapters.store import tables as t
from yungu.adapters.store.async_reads import AsyncJobReads
from yungu.adapters.store.db import reader
from yungu.domain.errors import Conflict, InvalidInput, NotFound
from yungu.domain.job import Job, JobSpec, JobState
from yungu.domain.tenancy import ApiKey, Principal, Role, Tenant
from yungu.ports.store import Fence, Fenced, Transition

KEY_PREFIX = "yg_"


def hash_secret(secret: str) -> str:
    """API keys are 256-bit random tokens, so a plain SHA-256 is enough (no stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlStore:
    def __init__(self, engine: Engine, platform_id: str) -> None:
        self.engine = engine
        self.reads = reader(engine)  # every read below is a single statement
        self.platform_id = platform_id
        self._spec_cache: dict[str, JobSpec] = {}
        self._prepaid: dict[str, bool] = {}
        self._fence: Fence | None = None
        self._async_reads: AsyncJobReads | None = None

    def fenced(self, fence: Fence | None) -> SqlStore:
        """This store (same engine and caches) with the loop's writes made under ``fence``."""
        view = copy.copy(self)
        view._fence = fence
        return view

    def blocks_event_loop(self) -> bool:
        """SQLite is in-process (a thread hop costs more than the query); a server is not."""
        return self.engine.dialect.name != "sqlite"

    def _check_fence(self, c: Connection) -> None:
        f = self._fence
        if f is None:
            return
        if c.dialect.name == "postgresql":
            # The share lock below would hold up a takeover for as long as this transaction
            # lives; a writer paused inside it (SIGSTOP, a VM migration) would hold it up for
            # good. The server ends such a transaction after 2 s idle, releasing the lock; the
            # paused writer's commit then fails (it has lost the lease anyway).
            c.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '2s'")
        token = c.execute(select(t.control_lease.c.token).where(t.control_lease.c.name == f.lease)
                          .with_for_update(read=True)).scalar()
        if token != f.token:
            raise Fenced(f"lease {f.lease!r} moved on (token {token}, this writer holds {f.token}): "
                         "another process leads the control loop now")

    # ---------------------------------------------------------------- platform
    def platform_value(self, key: str) -> str | None:
        with self.reads.connect() as c:
            return c.execute(select(t.platform_kv.c.value).where(t.platform_kv.c.key == key)).scalar()

    def set_platform_value(self, key: str, value: str) -> None:
        with self.engine.begin() as c:
            if c.execute(select(t.platform_kv.c.key).where(t.platform_kv.c.key == key)).first():
                c.execute(update(t.platform_kv).where(t.platform_kv.c.key == key).values(value=value))
            else:
                c.execute(insert(t.platform_kv).values(key=key, value=value))

    # ---------------------------------------------------------------- tenants
    def create_tenant(self, tenant_id: str, name: str, now: datetime, social_credit_code: str = "",
                      prepaid: bool = False) -> Tenant:
        if not name.strip() or len(name) > 200:
            raise InvalidInput("tenant name must be 1..200 characters")
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(t.tenants).values(
                        id=tenant_id, name=name, created_at=now, social_credit_code=social_credit_code,
                        prepaid=prepaid,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a tenant named {name!r} already exists") from exc
        return Tenant(tenant_id, name, now, social_credit_code, prepaid)

    def is_prepaid(self, tenant_id: str) -> bool:
        """Cached: the billing mode is fixed when the tenant is created (admission asks per job)."""
        hit = self._prepaid.get(tenant_id)
        if hit is None:
            with self.reads.connect() as c:
                hit = bool(c.execute(select(t.tenants.c.prepaid).where(t.tenants.c.id == tenant_id)).scalar())
            self._prepaid[tenant_id] = hit
        return hit

    def tenants(self) -> list[Tenant]:
        with self.reads.connect() as c:
            rows = c.execute(select(t.tenants).order_by(t.tenants.c.created_at)).all()
        return [Tenant(r.id, r.name, r.created_at, r.social_credit_code, bool(r.prepaid)) for r in rows]

    def tenant(self, tenant_id: str) -> Tenant:
        with self.reads.connect() as c:
            r = c.execute(select(t.tenants).where(t.tenants.c.id == tenant_id)).first()
        if r is None:
            raise NotFound(f"no tenant {tenant_id}")
        return Tenant(r.id, r.name, r.created_at, r.social_credit_code, bool(r.prepaid))

    def tenant_by_name(self, name: str) -> Tenant | None:
        with self.reads.connect() as c:
            r = c.execute(select(t.tenants).where(t.tenants.c.name == name)).first()
        return None if r is None else Tenant(r.id, r.name, r.created_at, r.social_credit_code, bool(r.prepaid))

    # ---------------------------------------------------------------- keys
    def create_key(
        self, key_id: str, role: Role, tenant_id: str | None, name: str, now: datetime,
        provider: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        tenant_id = tenant_id or None
        if role is Role.TENANT and not tenant_id:
            raise InvalidInput("a tenant key needs a tenant (--tenant)")
        if (provider is not None) != (role is Role.PROVIDER):
            raise InvalidInput("a provider key needs a provider (--provider), and only a provider key has one")
        if tenant_id:
            self.tenant(tenant_id)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:10]
        with self.engine.begin() as c:
            c.execute(
                insert(t.api_keys).values(
                    id=key_id,
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    role=role.value,
                    tenant_id=tenant_id,
                    name=name,
                    created_at=now,
                    revoked=False,
                    provider=provider,
                )
            )
        return ApiKey(key_id, prefix, role, tenant_id, name, now, provider=provider), secret

    def api_keys(self) -> list[ApiKey]:
        with self.reads.connect() as c:
            rows = c.execute(select(t.api_keys).order_by(t.api_keys.c.created_at)).all()
        return [
            ApiKey(r.id, r.prefix, Role(r.role), r.tenant_id, r.name, r.created_at, r.revoked, r.provider)
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> None:
        with self.engine.begin() as c:
            n = c.execute(update(t.api_keys).where(t.api_keys.c.id == key_id).values(revoked=True)).rowcount
        if not n:
            raise NotFound(f"no API key {key_id}")

    def principal(self, secret: str) -> Principal | None:
        with self.reads.connect() as c:
            r = c.execute(
                select(t.api_keys.c.id, t.api_keys.c.role, t.api_keys.c.tenant_id, t.api_keys.c.provider).where(
                    and_(t.api_keys.c.secret_hash == hash_secret(secret), t.api_keys.c.revoked.is_(False))
                )
            ).first()
        return None if r is None else Principal(r.id, Role(r.role), r.tenant_id, r.provider)

    def count_admin_keys(self) -> int:
        with self.reads.connect() as c:
            return int(
                c.execute(
                    select(func.count()).select_from(t.api_keys).where(t.api_keys.c.role == Role.ADMIN.value)
                ).scalar()
                or 0
            )

    # ---------------------------------------------------------------- jobs
    def submit(
        self,
        tenant_id: str,
        spec: JobSpec,
        now: datetime,
        job_id: str,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a pending job. With an idempotency key, a repeat returns the first job
        (``created`` False); the same key with a different body is a ``Conflict``."""
        if idempotency_key is not None:
            existing = self._by_idem(tenant_id, idempotency_key)
            if existing is not None:
                return self._check_idem(existing, body_hash), False
        values = dict(
            id=job_id,
            platform_id=self.platform_id,
            tenant_id=tenant_id,
            name=spec.name,
            state=JobState.PENDING.value,
            spec=dumps_spec(spec),
            attempt=0,
            priority=spec.priority,
            submitted_at=now,
            updated_at=now,
            reason="",
            cancel_requested=False,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
        )
        try:
            with self.engine.begin() as c:
                c.execute(insert(t.jobs).values(**values))
        except IntegrityError as exc:
            if idempotency_key is not None:  # lost a race with the same key
                existing = self._by_idem(tenant_id, idempotency_key)
                if existing is not None:
                    return self._check_idem(existing, body_hash), False
            raise Conflict(f"job id {job_id} already exists") from exc
        self._spec_cache[job_id] = spec
        return Job(job_id, self.platform_id, tenant_id, spec, JobState.PENDING, now, now), True

    def submit_many(self, items: Sequence[tuple[str, JobSpec, str, str | None]], now: datetime) -> list[Job]:
        """Insert many pending jobs (tenant, spec, id, body hash) in one transaction: the
        group commit behind high submission rates. Items carry no idempotency key (those
        go through ``submit``, which checks the key first)."""
        if not items:
            return []
        rows = [dict(id=job_id, platform_id=self.platform_id, tenant_id=tenant_id, name=spec.name,
                     state=JobState.PENDING.value, spec=dumps_spec(spec), attempt=0, priority=spec.priority,
                     submitted_at=now, updated_at=now, reason="", cancel_requested=False,
                     idempotency_key=None, body_hash=body_hash)
                for tenant_id, spec, job_id, body_hash in items]
        with self.engine.begin() as c:
            c.execute(insert(t.jobs), rows)
        out = []
        for tenant_id, spec, job_id, _ in items:
            self._spec_cache[job_id] = spec
            out.append(Job(job_id, self.platform_id, tenant_id, spec, JobState.PENDING, now, now))
        return out

    def _by_idem(self, tenant_id: str, key: str) -> Row[Any] | None:
        with self.reads.connect() as c:
            return c.execute(
                select(t.jobs).where(and_(t.jobs.c.tenant_id == tenant_id, t.jobs.c.idempotency_key == key))
            ).first()

    def _check_idem(self, row: Row[Any], body_hash: str | None) -> Job:
        if row.body_hash != body_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different request body", detail={"job_id": row.id}
            )
        return self._job(row)

    def _job(self, r: Row[Any]) -> Job:
        spec = self._spec_cache.get(r.id)
        if spec is None:
            spec = self._spec_cache.setdefault(r.id, loads_spec(r.spec))
        return Job(
            id=r.id,
            platform_id=r.platform_id,
            tenant_id=r.tenant_id,
            spec=spec,
            state=JobState(r.state),
            submitted_at=r.submitted_at,
            updated_at=r.updated_at,
            attempt=r.attempt,
            allocation=loads_allocation(r.id, r.allocation),
            started_at=r.started_at,
            finished_at=r.finished_at,
            exit_code=r.exit_code,
            reason=r.reason,
            cancel_requested=bool(r.cancel_requested),
        )

    def get(self, job_id: str) -> Job:
        with self.reads.connect() as c:
            r = c.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        if r is None:
            raise NotFound(f"no job {job_id}")
        return self._job(r)

    async def get_async(self, job_id: str) -> Job:
        """``get`` for the API's event loop: no thread hop, a connection of its own
        (``async_reads``), so a status read never queues behind the loop's or writers' work."""
        if self._async_reads is None:
            self._async_reads = AsyncJobReads(self.engine, self)
        return await self._async_reads.get(job_id)

    def close_reads(self) -> None:
        if self._async_reads is not None:
            self._async_reads.close()

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of these ids that exist, in one query per 500 ids (federation status batches)."""
        out: dict[str, Job] = {}
        with self.reads.connect() as c:
            for i in range(0, len(job_ids), 500):
                for r in c.execute(select(t.jobs).where(t.jobs.c.id.in_(list(job_ids[i:i + 500])))):
                    out[r.id] = self._job(r)
        return out

    def page(
        self,
        tenant_id: str | None,
        states: Iterable[JobState] = (),
        after: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest first; ``after`` is the last id of the previous page (keyset pagination)."""
        q = select(t.jobs)
        if tenant_id is not None:
            q = q.where(t.jobs.c.tenant_id == tenant_id)
        sts = [s.value for s in states]
        if sts:
            q = q.where(t.jobs.c.state.in_(sts))
        if after:
            q = q.where(t.jobs.c.id < after)
        q = q.order_by(t.jobs.c.id.desc()).limit(limit)
        with self.reads.connect() as c:
            return [self._job(r) for r in c.execute(q).all()]

    def in_states(self, states: Iterable[JobState]) -> list[Job]:
        with self.reads.connect() as c:
            rows = c.execute(
                select(t.jobs)
                .where(t.jobs.c.state.in_([s.value for s in states]))
                .order_by(t.jobs.c.priority.desc(), t.jobs.c.id)
            ).all()
        return [self._job(r) for r in rows]

    def waiting(self, now: datetime, resting: bool = False) -> list[Job]:
        """Jobs the loop must look at: pending ones, and queued ones not resting (a deferral
        in force) unless a cancel was asked for, or every queued one with ``resting`` (after
        capacity was freed). Highest priority first, then submission."""
        queued = t.jobs.c.state == JobState.QUEUED.value
        if not resting:
            queued = and_(queued, or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= now,
                                      t.jobs.c.cancel_requested.is_(True)))
        q = (select(t.jobs)
             .where(or_(t.jobs.c.state == JobState.PENDING.value, queued))
             .order_by(t.jobs.c.priority.desc(), t.jobs.c.id))
        with self.reads.connect() as c:
            return [self._job(r) for r in c.execute(q).all()]

    def rest(self, until: Mapping[str, datetime]) -> None:
        """Record deferrals: these queued jobs are left out of rounds until the given time."""
        if not until:
            return
        stmt = (update(t.jobs).where(and_(t.jobs.c.id == bindparam("b_id"), t.jobs.c.state == JobState.QUEUED.value))
                .values(not_before=bindparam("nb")))
        with self.engine.begin() as c:
            self._check_fence(c)
            c.execute(stmt, [{"b_id": k, "nb": v} for k, v in until.items()])

    def finished_since(self, since: datetime | None, limit: int = 5000) -> list[Job]:
        """Terminal jobs finished at or after ``since`` (oldest first), for metering."""
        q = select(t.jobs).where(t.jobs.c.state.in_([s.value for s in (JobState.SUCCEEDED, JobState.FAILED,
                                                                            JobState.CANCELLED)]))
        if since is not None:
            q = q.where(t.jobs.c.finished_at >= since)
        q = q.order_by(t.jobs.c.finished_at).limit(limit)
        with self.reads.connect() as c:
            return [self._job(r) for r in c.execute(q).all()]

    # ---------------------------------------------------------------- metering (ports.billing.MeteringPort)
    _FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)

    def unmetered(self, limit: int) -> list[Job]:
        """Finished jobs billing has not marked yet, oldest first (a partial index finds them)."""
        q = (select(t.jobs).where(t.jobs.c.metered == 0, t.jobs.c.finished_at.is_not(None),
                                  t.jobs.c.state.in_(self._FINISHED))
             .order_by(t.jobs.c.finished_at, t.jobs.c.id).limit(limit))
        with self.reads.connect() as c:
            return [self._job(r) for r in c.execute(q).all()]

    def mark_metered(self, job_ids: Sequence[str], parked: Sequence[str] = ()) -> None:
        stmt = update(t.jobs).where(t.jobs.c.id == bindparam("b_id")).values(metered=bindparam("b_m"))
        rows = [{"b_id": j, "b_m": 1} for j in job_ids] + [{"b_id": j, "b_m": 2} for j in parked]
        if rows:
            with self.engine.begin() as c:
                c.execute(stmt, rows)

    def unpark_metering(self) -> None:
        with self.engine.begin() as c:
            c.execute(update(t.jobs).where(t.jobs.c.metered == 2).values(metered=0))

    def counts(self) -> dict[str, int]:
        with self.reads.connect() as c:
            rows = c.execute(select(t.jobs.c.state, func.count()).group_by(t.jobs.c.state)).all()
        return {r[0]: int(r[1]) for r in rows}

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.reads.connect() as c:
            rows = c.execute(
                select(t.job_events).where(t.job_events.c.job_id == job_id).order_by(t.job_events.c.seq)
            ).all()
        return [
            {
                "at": r.at.isoformat(),
                "event": r.event,
                "from": r.from_state,
                "to": r.to_state,
                "attempt": r.attempt,
                "reason": r.reason,
            }
            for r in rows
        ]

    # Built once: per-row statement construction dominated the loop's cost.
    _CAS = (update(t.jobs)
            .where(and_(t.jobs.c.id == bindparam("b_id"), t.jobs.c.state == bindparam("b_state"),
                        t.jobs.c.attempt == bindparam("b_attempt")))
            .values(state=bindparam("state"), attempt=bindparam("attempt"), pool_id=bindparam("pool_id"),
                    allocation=bindparam("allocation"), updated_at=bindparam("updated_at"),
                    started_at=bindparam("started_at"), finished_at=bindparam("finished_at"),
                    exit_code=bindparam("exit_code"), reason=bindparam("reason"), not_before=None))
    # ``cancel_requested`` is never written here: only the API sets it, and a loop writing
    # its older view back would lose a cancel that arrived in between.
    _EVENT = insert(t.job_events)

    def record(self, transitions: Sequence[Transition]) -> list[Job]:
        """Apply transitions in one transaction. Consecutive transitions of one job (admit then
        place, dispatch then start) become one compare-and-set with every event logged."""
        applied: list[Job] = []
        if not transitions:
            return applied
        chains: dict[str, list[Transition]] = {}
        for tr in transitions:
            chain = chains.get(tr.before.id)
            if chain and chain[-1].after is tr.before:
                chain.append(tr)
            elif chain:  # not a continuation: apply what we have, start again (rare)
                applied += self._apply_chains([chain])
                chains[tr.before.id] = [tr]
            else:
                chains[tr.before.id] = [tr]
        return applied + self._apply_chains(list(chains.values()))

    def _apply_chains(self, chains: Sequence[Sequence[Transition]]) -> list[Job]:
        applied: list[Job] = []
        events: list[dict[str, Any]] = []
        with self.engine.begin() as c:
            self._check_fence(c)
            for chain in chains:
                b, a = chain[0].before, chain[-1].after
                res = c.execute(self._CAS, {
                    "b_id": b.id, "b_state": b.state.value, "b_attempt": b.attempt,
                    "state": a.state.value, "attempt": a.attempt,
                    "pool_id": a.allocation.pool_id if a.allocation else None,
                    "allocation": dumps_allocation(a.allocation), "updated_at": a.updated_at,
                    "started_at": a.started_at, "finished_at": a.finished_at, "exit_code": a.exit_code,
                    "reason": a.reason})
                if res.rowcount != 1:
                    continue  # stale: someone else moved it; the next round sees the truth
                for tr in chain:
                    events.append({"job_id": a.id, "at": tr.after.updated_at, "event": tr.event.value,
                                   "from_state": tr.before.state.value, "to_state": tr.after.state.value,
                                   "attempt": tr.before.attempt, "reason": tr.reason})
                applied.append(a)
            if events:
                c.execute(self._EVENT, events)
        return applied

    def set_reasons(self, reasons: Mapping[str, str]) -> None:
        if not reasons:
            return
        # One executemany (a pipeline on PostgreSQL): a round can defer thousands of jobs, and
        # one statement per row kept the writer busy for seconds while reads waited on it.
        stmt = (update(t.jobs).where(and_(t.jobs.c.id == bindparam("b_id"), t.jobs.c.reason != bindparam("b_reason")))
                .values(reason=bindparam("b_reason")))
        with self.engine.begin() as c:
            self._check_fence(c)
            c.execute(stmt, [{"b_id": k, "b_reason": v} for k, v in reasons.items()])

    def request_cancel(self, job_id: str, now: datetime, reason: str = "") -> Job:
        """Ask the loop to cancel a job; ``reason`` is a stop the platform decided (it is kept
        on the job and recorded on the cancel, see ``domain.job.PLATFORM_STOP``)."""
        values: dict[str, Any] = {"cancel_requested": True, "updated_at": now}
        if reason:
            values["reason"] = reason
        with self.engine.begin() as c:
            c.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))
        return self.get(job_id)

"""The peer side: run what other platforms delegate here, under leases, and bill it.

A delegation from origin ``O`` becomes an ordinary job of the tenant ``peer-O`` (the origin's
account here, post-paid), pinned to the offered pool, so it goes through this platform's own
loop, scheduler, executor, sandbox and billing. Its command is wrapped by the lease watchdog
(``watchdog.py``). Every record is keyed by ``"<origin>:<request id>"``, so one origin can
never read, cancel or bill another's jobs: a key it does not own simply does not exist for it.

Idempotency and fencing: one row per (origin, job, attempt), refusals and "unknown" answers
included (a tombstone), so a late or repeated delegation gets the first answer; a higher
attempt of the same job fences (stops) the lower ones.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from yungu.adapters.federation.identity import Identity
from yungu.adapters.federation.settings import FederationSettings
from yungu.adapters.federation.store import FederationStore, PeerRecord
from yungu.adapters.federation.watchdog import LEASE_EXPIRED_EXIT, LOCAL_NAME, wrap, write_lease
from yungu.domain.catalogue import Catalogue
from yungu.domain.errors import InvalidInput, NotFound
from yungu.domain.job import Job, JobSpec, JobState, Resources
from yungu.domain.world import World
from yungu.engines.energy.signals import SignalType, SiteForecast
from yungu.engines.federation import lease as L
from yungu.engines.federation.messages import (
    Delegation,
    HourlyForecast,
    PoolOffer,
    RemoteStatus,
    UsageReceipt,
    iso,
)
from yungu.engines.federation.offers import group_free
from yungu.engines.federation.receipts import clearing_account, peer_entry
from yungu.engines.ledger import Account, AccountKind
from yungu.engines.ledger.accounts import arrears
from yungu.engines.ledger.rating import period_of, rate_device_time
from yungu.engines.scheduler.pool_state import pool_states

log = logging.getLogger("yungu.federation.host")

ACTIVE = (JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING)
PHASE = {JobState.PENDING: "pending", JobState.QUEUED: "pending", JobState.SCHEDULED: "pending",
         JobState.DISPATCHED: "pending", JobState.PREEMPTED: "pending", JobState.RUNNING: "running",
         JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}
OUTCOME_OF_STATE = {"expired": "lease_expired", "fenced": "fenced", "stopped": "cancelled"}
CARBON_METHOD = ("location-based average grid intensity of the site's feed at the start hour x facility kWh; "
                 "modelled")


@dataclass(frozen=True)
class _Attempt:
    """An attempt accepted earlier in the same batch (for fencing within one request)."""

    attempt: int
    state: str = "active"
    id: str = ""


def account_name(origin: str) -> str:
    return f"peer-{origin}"


@dataclass
class HostDeps:
    me: str
    world: World
    catalogue: Catalogue
    jobs: Any  # SqlStore
    fed: FederationStore
    identity: Identity
    clock: Any  # Clock
    new_id: Callable[[], str]
    wake: Callable[[], None]
    executor_for_pool: Callable[[str], Any]
    ledger: Any  # LedgerStore
    signals: Callable[[datetime], Mapping[str, object]] | None
    data_dir: Path
    settings: FederationSettings
    peers: Callable[[], Mapping[str, PeerRecord]]
    # A finished job -> its rated usage (``control.billing.meter`` over this world, given by the
    # composition root: adapters do not import the control loops).
    meter: Callable[[Job], Any] = lambda job: None


class FederationHost:
    def __init__(self, d: HostDeps) -> None:
        self.d = d
        self.terms = d.settings.lease
        self.leases_dir = d.data_dir / "federation" / "leases"
        self.leases_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._tenants: dict[str, str] = {}
        self._states_at = 0.0
        self._states: dict[str, Any] = {}
        self._claimed: dict[str, int] = {}  # pool -> devices accepted since the states were read
        self._written: dict[str, int] = {}  # local job -> stop epoch last written
        self.offer_seq = 0
        self._offer_key: object = None
        self._offers: list[PoolOffer] = []
        self._offers_at: datetime | None = None
        self._jobs_running = 0

    # ------------------------------------------------------------- accounts
    def tenant_for(self, origin: str) -> str:
        tid = self._tenants.get(origin)
        if tid:
            return tid
        name = account_name(origin)
        t = self.d.jobs.tenant_by_name(name)
        if t is None:
            try:
                t = self.d.jobs.create_tenant(self.d.new_id(), name, self.d.clock.now())
            except Exception:  # a concurrent request created it first
                t = self.d.jobs.tenant_by_name(name)
        assert t is not None
        self._tenants[origin] = t.id
        return str(t.id)

    def open_accounts(self, origin: str) -> None:
        tid = self.tenant_for(origin)
        self.d.ledger.open_accounts([
            Account(clearing_account(origin), AccountKind.PEER_CLEARING, "CNY", None, origin, f"clearing with {origin}"),
            Account(arrears(tid), AccountKind.TENANT_ARREARS, "CNY", None, tid, "arrears"),
            Account(f"tenant:{tid}:wallet", AccountKind.TENANT_WALLET, "CNY", 0, tid, "wallet"),
        ])

    # ------------------------------------------------------------- capacity and offers
    def _pool_states(self) -> dict[str, Any]:
        import time

        mono = time.monotonic()
        if mono - self._states_at >= self.d.settings.publish_every_s or not self._states:
            self._states = pool_states(self.d.world, self.d.jobs.in_states(ACTIVE))
            self._states_at = mono
            self._claimed = {}
        return self._states

    def _room(self, pool_id: str, devices: int, cpus: int) -> bool:
        st = self._pool_states().get(pool_id)
        if st is None:
            return False
        if devices:
            free = sum(len(n.devices) for n in st.nodes)
            need = devices
        else:
            free = sum(max(0, n.cpus) for n in st.nodes)
            need = cpus
        return free - self._claimed.get(pool_id, 0) >= need

    def offers(self, now: datetime) -> tuple[int, list[PoolOffer]]:
        """This platform's offers now (re-issued when capacity changes or they near expiry)."""
        with self._lock:
            states = self._pool_states()
            key = tuple((pid, tuple((n.cpus, n.memory_gb, len(n.devices)) for n in st.nodes))
                        for pid, st in sorted(states.items()))
            stale = self._offers_at is None or (now - self._offers_at).total_seconds() >= self.d.settings.offer_refresh_s
            if key != self._offer_key or stale:
                # Monotonic across restarts (time-based), so peers never take a restarted platform's
                # new offers for old ones.
                self.offer_seq = max(self.offer_seq + 1, int(now.timestamp() * 1000))
                self._offer_key = key
                self._offers = self._build_offers(now, states)
                self._offers_at = now
            return self.offer_seq, list(self._offers)

    def _build_offers(self, now: datetime, states: Mapping[str, Any]) -> list[PoolOffer]:
        w = self.d.world
        signals = self.d.signals(now) if self.d.signals else {}
        regions = {r.id: r for r in w.regions}
        out = []
        for pool in w.pools:
            site = w.site(pool.site_id)
            st = states.get(pool.id)
            if st is None:
                continue
            free = group_free((n.cpus, n.memory_gb, len(n.devices)) for n in st.nodes
                              if n.cpus > 0 and (n.devices or not pool.accelerators_per_node))
            region = regions.get(site.region_id)
            out.append(PoolOffer(
                offer_id=f"{self.d.me}:{pool.id}:{self.offer_seq}", platform_id=self.d.me, pool_id=pool.id,
                site_id=site.id, region_id=site.region_id, region_name=region.name if region else site.region_id,
                compute_class=pool.compute_class.value, accelerator=pool.accelerator, nodes=pool.nodes,
                cpus_per_node=pool.cpus_per_node, memory_gb_per_node=pool.memory_gb_per_node,
                accelerators_per_node=pool.accelerators_per_node, free=free,
                price_cny_per_device_hour=pool.price_cny_per_device_hour,
                price_cny_per_cpu_hour=pool.price_cny_per_cpu_hour, pue=site.pue,
                green_contract_share=site.green_contract_share,
                forecast=_hourly(signals.get(site.id), now, site.energy_feed or ""),
                issued_at=now, expires_at=now + timedelta(seconds=self.d.settings.offer_ttl_s)))
        return out

    def offer_set(self, now: datetime) -> dict[str, Any]:
        seq, offers = self.offers(now)
        body: dict[str, Any] = {"platform_id": self.d.me, "seq": seq, "issued_at": iso(now),
                                "offers": [o.to_dict() for o in offers]}
        return {**body, "signature": self.d.identity.sign_body(body)}

    # ------------------------------------------------------------- delegation
    def delegate(self, origin: str, raw_items: Sequence[Any]) -> list[dict[str, Any]]:
        now = self.d.clock.now()
        peer = self.d.peers().get(origin)
        results: list[dict[str, Any]] = []
        new_rows: list[dict[str, Any]] = []
        new_jobs: list[tuple[str, JobSpec, str, str | None]] = []
        fence: list[Job | str] = []
        tenant = self.tenant_for(origin)
        parsed: list[Delegation | str] = []
        for i, raw in enumerate(raw_items):
            try:
                parsed.append(Delegation.from_dict(raw, f"delegations[{i}]"))
            except InvalidInput as exc:
                parsed.append(exc.message)
        with self._lock:
            active = self.d.fed.inbound_in_states(["active"], origin)
            used = sum(r.devices for r in active)
            self._jobs_running = len(active)
            ok = [d for d in parsed if isinstance(d, Delegation)]
            existing_rows = self.d.fed.inbound_many([f"{origin}:{d.request_id}" for d in ok])
            by_job = self.d.fed.inbound_for_jobs(origin, [d.origin_job_id for d in ok])
            seen_here: dict[str, list[Any]] = {}
            for d in parsed:
                if isinstance(d, str):
                    results.append({"request_id": "?", "accepted": False, "reason": d})
                    continue
                key = f"{origin}:{d.request_id}"
                if d.origin != origin:
                    results.append({"request_id": d.request_id, "accepted": False,
                                    "reason": f"delegation names origin {d.origin}, but {origin} signed it"})
                    continue
                existing = existing_rows.get(key)
                if existing is not None:
                    results.append(self._answer(existing, d, now))
                    continue
                if any(r["id"] == key for r in new_rows):
                    prev = next(r for r in results if r["request_id"] == d.request_id)
                    results.append(dict(prev))
                    continue
                same_job = by_job.get(d.origin_job_id, []) + seen_here.get(d.origin_job_id, [])
                highest = max((r.attempt for r in same_job), default=None)
                reason, pool = self._check(d, peer, now, highest, used)
                devices = self._devices(d, pool)
                row = {"id": key, "origin": origin, "origin_job_id": d.origin_job_id, "attempt": d.attempt,
                       "local_job_id": None, "pool_id": d.pool_id, "tenant_id": tenant, "tenant_ref": d.tenant_ref,
                       "devices": devices, "offered_price": self._unit_price(d), "lease_until": d.lease_expires_at,
                       "created_at": now, "updated_at": now, "state": "refused" if reason else "active",
                       "reason": reason}
                seen_here.setdefault(d.origin_job_id, []).append(_Attempt(d.attempt))
                if not reason:
                    assert pool is not None
                    local = self.d.new_id()
                    row["local_job_id"] = local
                    new_jobs.append((tenant, self._spec(d, pool, local, now), local, None))
                    self._claimed[pool.id] = self._claimed.get(pool.id, 0) + devices
                    used += devices
                    self._jobs_running += 1
                    fence.extend(r.id for r in same_job if r.attempt < d.attempt and getattr(r, "state", "") == "active")
                new_rows.append(row)
                results.append({"request_id": d.request_id, "accepted": not reason, "reason": reason,
                                "remote_job_id": row["local_job_id"]})
            inserted = set(self.d.fed.insert_inbound(new_rows))
        lost_race = {r["id"] for r in new_rows} - inserted
        if lost_race:  # a concurrent request wrote these first: answer what it decided
            for res in results:
                key = f"{origin}:{res['request_id']}"
                if key in lost_race and (row2 := self.d.fed.inbound(key)) is not None:
                    res.update(accepted=row2.state != "refused", reason=row2.reason, remote_job_id=row2.local_job_id)
            mine = {r["local_job_id"] for r in new_rows if r["id"] in inserted}
            new_jobs = [j for j in new_jobs if j[2] in mine]
        if new_jobs:
            self.d.jobs.submit_many(new_jobs, now)
            for row in new_rows:
                if row["state"] == "active" and row["id"] in inserted:
                    self._write_abs_lease(row["local_job_id"], row["lease_until"], job=None)
            self.d.wake()
        for key in fence:
            self._stop(str(key), "fenced", "a later attempt of the same job was delegated here", now)
        return results

    def _answer(self, row: Any, d: Delegation, now: datetime) -> dict[str, Any]:
        if row.state == "active":
            self._ensure_job(row, now)
            if d.lease_expires_at > (row.lease_until or d.lease_expires_at) and L.check_grant(
                    now, d.lease_expires_at, d.attempt, None, self.terms, renewal=True) is L.LeaseCheck.OK:
                self.d.fed.update_inbound([{"id": row.id, "lease_until": d.lease_expires_at, "updated_at": now}])
                self._write_abs_lease(row.local_job_id, d.lease_expires_at)
        accepted = row.state != "refused"
        return {"request_id": d.request_id, "accepted": accepted, "reason": row.reason,
                "remote_job_id": row.local_job_id}

    def _check(self, d: Delegation, peer: PeerRecord | None, now: datetime, highest: int | None,
               used: int) -> tuple[str, Any]:
        chk = L.check_grant(now, d.lease_expires_at, d.attempt, highest, self.terms, renewal=False)
        if chk is not L.LeaseCheck.OK:
            return {L.LeaseCheck.FENCED: f"fenced: attempt {highest} of this job was already delegated here",
                    L.LeaseCheck.TOO_LONG: "lease reaches beyond ttl + clock-skew bound",
                    L.LeaseCheck.TOO_SHORT: "lease expires before the job could start"}.get(chk, chk.value), None
        try:
            pool = self.d.world.pool(d.pool_id)
        except KeyError:
            return f"no pool {d.pool_id} here", None
        if d.spec.accelerators and not pool.accelerators_per_node:
            return f"pool {pool.id} has no accelerators", None
        policy = peer.policy.accept if peer else None
        if policy is not None:
            why = policy.allows(compute_class=pool.compute_class.value, accelerator=pool.accelerator,
                                tenant=d.tenant_ref, device_price=Decimal(0), cpu_price=Decimal(0),
                                accelerators=d.spec.accelerators)
            if why:
                return why, None
        ours = pool.price_cny_per_device_hour if d.spec.accelerators else pool.price_cny_per_cpu_hour
        theirs = self._unit_price(d)
        if theirs < ours:
            return f"offered price changed: now {ours} CNY per unit-hour, delegation accepts {theirs}", None
        devices = self._devices(d, pool)
        if policy is not None and policy.quota_devices is not None and used + devices > policy.quota_devices:
            return f"quota: {used} of {policy.quota_devices} units in use for this peer", None
        if policy is not None and policy.quota_jobs is not None and self._jobs_running >= policy.quota_jobs:
            return f"quota: {self._jobs_running} of {policy.quota_jobs} jobs running for this peer", None
        if not self._room(pool.id, d.spec.accelerators * d.spec.replicas, d.spec.cpus * d.spec.replicas):
            return f"no capacity on {pool.id} now (offer stale)", None
        return "", pool

    @staticmethod
    def _unit_price(d: Delegation) -> Decimal:
        return d.price_cny_per_device_hour if d.spec.accelerators else d.price_cny_per_cpu_hour

    @staticmethod
    def _devices(d: Delegation, pool: Any) -> int:
        return d.spec.accelerators * d.spec.replicas if d.spec.accelerators else d.spec.cpus * d.spec.replicas

    def _spec(self, d: Delegation, pool: Any, local_job_id: str, now: datetime) -> JobSpec:
        stop = L.peer_stop_at(d.lease_expires_at, self.terms)
        cmd = wrap(d.spec.command, lease_file=self.leases_dir / local_job_id, stop_at_epoch=int(stop.timestamp()),
                   clock_offset_s=round(self.d.settings.clock_offset_s),
                   kill_grace_s=self.d.settings.kill_grace_s)
        res = Resources(cpus=d.spec.cpus, memory_gb=d.spec.memory_gb, accelerators=d.spec.accelerators,
                        accelerator_types=(pool.accelerator,) if d.spec.accelerators and pool.accelerator else ())
        return JobSpec(name=f"{d.spec.name} [{d.origin}]"[:200], command=cmd, resources=res, replicas=d.spec.replicas,
                       estimated_duration_s=d.spec.estimated_duration_s, pool=pool.id,
                       labels={"federation.origin": d.origin, "federation.request": d.request_id,
                               "federation.tenant_ref": d.tenant_ref},
                       env=dict(d.spec.env))

    def _ensure_job(self, row: Any, now: datetime) -> None:
        """After a crash between recording a delegation and creating its job, the job does not
        exist: nothing runs, so the delegation is over (the origin may re-place at once)."""
        try:
            self.d.jobs.get(row.local_job_id)
        except NotFound:
            log.warning("delegation %s has no job (crash before it was created): reporting it lost", row.id)
            self.d.fed.update_inbound([{"id": row.id, "state": "expired", "reason": "job lost in a crash before start",
                                        "updated_at": now}])

    # ------------------------------------------------------------- leases
    def renew(self, origin: str, expires: datetime, rids: Sequence[str]) -> dict[str, str]:
        now = self.d.clock.now()
        keys = [f"{origin}:{r}" for r in rids]
        rows = self.d.fed.inbound_many(keys)
        out: dict[str, str] = {}
        ok: list[dict[str, Any]] = []
        tombstones: list[dict[str, Any]] = []
        highest: dict[str, int] = {}
        for r in rows.values():
            highest[r.origin_job_id] = max(highest.get(r.origin_job_id, -1), r.attempt)
        for rid, key in zip(rids, keys, strict=True):
            row = rows.get(key)
            if row is None:
                job, att = rid.rsplit(".", 1)
                tombstones.append(self._tombstone(origin, job, int(att), "unknown at lease renewal", now))
                out[rid] = "unknown"
                continue
            if row.state != "active":
                out[rid] = {"refused": "unknown", "expired": "expired", "fenced": "fenced"}.get(row.state, "done")
                continue
            chk = L.check_grant(now, expires, row.attempt, highest.get(row.origin_job_id), self.terms, renewal=True)
            if chk is L.LeaseCheck.OK:
                ok.append({"id": key, "lease_until": L.extend(row.lease_until, expires), "updated_at": now})
                out[rid] = "ok"
            elif chk is L.LeaseCheck.EXPIRED:
                out[rid] = "expired"
            else:
                out[rid] = chk.value
        self.d.fed.update_inbound(ok)
        self._settle_tombstones(origin, tombstones, out)
        jobs = self.d.jobs.get_many([rows[ch["id"]].local_job_id for ch in ok if rows[ch["id"]].local_job_id])
        for ch in ok:
            row = rows[ch["id"]]
            self._write_abs_lease(row.local_job_id, ch["lease_until"], jobs.get(row.local_job_id))
        return out

    def _tombstone(self, origin: str, job: str, attempt: int, why: str, now: datetime) -> dict[str, Any]:
        return {"id": f"{origin}:{job}.{attempt}", "origin": origin, "origin_job_id": job, "attempt": attempt,
                "local_job_id": None, "pool_id": "", "tenant_id": "", "tenant_ref": "", "devices": 0,
                "offered_price": Decimal(0), "lease_until": None, "created_at": now, "updated_at": now,
                "state": "refused", "reason": why}

    def _write_abs_lease(self, local_job_id: str | None, lease_until: datetime, job: Job | bool | None = True) -> None:
        """Write the stop time where the watchdog reads it; ``job`` (if known) also gets it in its
        run directory (``True``: look the job up; ``None``: it has no run directory yet)."""
        if not local_job_id:
            return
        stop = int(L.peer_stop_at(lease_until, self.terms).timestamp())
        if self._written.get(local_job_id) == stop:
            return
        try:
            write_lease(self.leases_dir / local_job_id, stop)
            self._written[local_job_id] = stop
        except OSError as exc:
            log.warning("cannot write lease file for %s: %s", local_job_id, exc)
            return
        try:  # also where a sandboxed job can see it: its run directory, when the executor has one
            if job is True:
                job = self.d.jobs.get(local_job_id)
            if isinstance(job, Job) and job.allocation is not None:
                run = _work_dir(self.d.executor_for_pool(job.allocation.pool_id), job.request_id)
                if run is not None and run.is_dir():
                    write_lease(run / LOCAL_NAME, stop)
        except (NotFound, OSError, KeyError):
            pass

    def sweep(self) -> int:
        """Stop every delegated job whose lease has run out (this platform's clock); returns how many."""
        now = self.d.clock.now()
        n = 0
        for row in self.d.fed.inbound_in_states(["active"]):
            if row.lease_until is None or now >= L.peer_stop_at(row.lease_until, self.terms):
                self._stop(row.id, "expired", f"lease expired at {iso(row.lease_until)}", now)
                n += 1
            elif row.local_job_id and row.local_job_id not in self._written:
                self._write_abs_lease(row.local_job_id, row.lease_until)
        return n

    def _stop(self, key: str, state: str, why: str, now: datetime) -> None:
        row = self.d.fed.inbound(key)
        if row is None or row.state != "active":
            return
        self.d.fed.update_inbound([{"id": key, "state": state, "reason": why, "updated_at": now}])
        if row.local_job_id:
            with contextlib.suppress(NotFound):
                self.d.jobs.request_cancel(row.local_job_id, now)
            self.d.wake()
        log.info("stopping delegated job %s (%s): %s", key, state, why)

    # ------------------------------------------------------------- status, cancel, reconcile
    def status(self, origin: str, rids: Sequence[str]) -> list[dict[str, Any]]:
        now = self.d.clock.now()
        keys = [f"{origin}:{r}" for r in rids]
        rows = self.d.fed.inbound_many(keys)
        out = []
        tombstones = []
        jobs = self.d.jobs.get_many([r.local_job_id for r in rows.values() if r.local_job_id])
        for rid, key in zip(rids, keys, strict=True):
            row = rows.get(key)
            if row is None:
                job, att = rid.rsplit(".", 1)
                tombstones.append(self._tombstone(origin, job, int(att), "unknown at status", now))
                out.append(RemoteStatus(rid, "unknown", reason="no such delegation here").to_dict())
                continue
            out.append(self._status_of(row, now, jobs.get(row.local_job_id or "")).to_dict())
        if tombstones:
            answers: dict[str, str] = {}
            self._settle_tombstones(origin, tombstones, answers)
            redo = [rid for rid, a in answers.items() if a != "unknown"]
            if redo:  # a delegation won the race against our tombstone: report it as it is
                fresh = self.d.fed.inbound_many([f"{origin}:{r}" for r in redo])
                out = [self._status_of(fresh[f"{origin}:{s['request_id']}"], now).to_dict()
                       if s["request_id"] in redo else s for s in out]
        return out

    def _settle_tombstones(self, origin: str, tombstones: list[dict[str, Any]], answers: dict[str, str]) -> None:
        """Record "unknown" answers so a late delegation with that id is refused; where a delegation
        was recorded first (a race), the answer is whatever that delegation's state says."""
        if not tombstones:
            return
        inserted = self.d.fed.insert_inbound(tombstones)
        for t in tombstones:
            rid = f"{t['origin_job_id']}.{t['attempt']}"
            if t["id"] in inserted:
                answers[rid] = "unknown"
            else:
                row = self.d.fed.inbound(t["id"])
                answers[rid] = "ok" if row is not None and row.state == "active" else "unknown"

    def _status_of(self, row: Any, now: datetime, job: Job | None = None) -> RemoteStatus:
        rid = f"{row.origin_job_id}.{row.attempt}"
        if row.state == "refused" or not row.local_job_id:
            return RemoteStatus(rid, "lost", reason=f"refused: {row.reason}")
        if job is None:
            try:
                job = self.d.jobs.get(row.local_job_id)
            except NotFound:
                self._ensure_job(row, now)
                return RemoteStatus(rid, "lost", reason="the delegated job was lost before it started")
        phase = PHASE[job.state]
        if not job.state.terminal:
            return RemoteStatus(rid, phase, started_at=job.started_at, reason=job.reason[:500])
        if row.state == "active":
            self.d.fed.update_inbound([{"id": row.id, "state": "done", "updated_at": now}])
        outcome = OUTCOME_OF_STATE.get(row.state, job.state.value)
        if job.exit_code == LEASE_EXPIRED_EXIT and job.state is JobState.FAILED:
            outcome = "lease_expired"
        if outcome in ("lease_expired", "fenced"):
            phase = "lost"
        receipt = self.receipt(row, job, outcome) if job.started_at is not None else None
        return RemoteStatus(rid, phase, job.exit_code, f"{outcome}: {row.reason or job.reason}"[:500],
                            job.started_at, job.finished_at, receipt)

    def cancel(self, origin: str, rids: Sequence[str]) -> list[dict[str, Any]]:
        now = self.d.clock.now()
        for rid in rids:
            self._stop(f"{origin}:{rid}", "stopped", "cancelled by the origin", now)
        return self.status(origin, rids)

    def reconcile(self, origin: str, live: Sequence[str]) -> dict[str, list[str]]:
        """Keep exactly the attempts the origin says are live; stop every other one it runs here."""
        now = self.d.clock.now()
        keep = set(live)
        kept, stopped = [], []
        for row in self.d.fed.inbound_in_states(["active"], origin):
            rid = f"{row.origin_job_id}.{row.attempt}"
            if rid in keep:
                kept.append(rid)
            else:
                self._stop(row.id, "stopped", "not the live attempt at the origin (reconciliation)", now)
                stopped.append(rid)
        return {"kept": kept, "stopped": stopped}

    def logs(self, origin: str, rid: str, stream: str, offset: int, limit: int) -> dict[str, Any]:
        row = self.d.fed.inbound(f"{origin}:{rid}")
        if row is None or not row.local_job_id:
            raise NotFound(f"no delegated job {rid} from {origin}")
        job = self.d.jobs.get(row.local_job_id)
        if job.allocation is None:
            return {"data": "", "next_offset": offset, "eof": job.state.terminal}
        chunk = self.d.executor_for_pool(job.allocation.pool_id).logs(job.request_id, stream, offset, limit)
        if not hasattr(chunk, "data"):
            return {"data": "", "next_offset": offset, "eof": job.state.terminal, "error": getattr(chunk, "message", "")}
        return {"data": chunk.data.decode("utf-8", "replace"), "next_offset": chunk.next_offset, "eof": chunk.eof}

    # ------------------------------------------------------------- receipts
    def receipt(self, row: Any, job: Job, outcome: str) -> dict[str, Any] | None:
        rid = f"{row.origin_job_id}.{row.attempt}"
        have = self.d.fed.receipt_for("issued", self.d.me, rid)
        if have is not None:
            if not have.booked:
                self._book_issued(UsageReceipt.from_dict(_json(have.body)), row.tenant_id)
            return {"body": _json(have.body), "signature": have.signature}
        usage = self.d.meter(job)
        if usage is None:
            return None
        u = usage.usage
        devices = job.allocation.devices if job.allocation and job.allocation.devices else (
            len(job.allocation.replicas) * job.allocation.cpus_per_replica if job.allocation else 0)
        price = min(Decimal(str(row.offered_price)), self._pool_unit_price(job))
        amount = min(usage.gross, rate_device_time(u.device_seconds, Decimal(str(row.offered_price))))
        pool = self.d.world.pool(u.pool_id)
        site = self.d.world.site(pool.site_id)
        intensity, renewable = self._energy_at(site.id, u.started_at)
        green = site.green_contract_share + (1 - site.green_contract_share) * renewable
        r = UsageReceipt(
            receipt_id=f"rc:{self.d.me}:{rid}", kind="compute", issuer=self.d.me, origin=row.origin, request_id=rid,
            outcome=outcome, started_at=u.started_at, finished_at=u.ended_at, devices=devices,
            device_seconds=u.device_seconds, kwh=u.facility_kwh, kwh_method="modelled: device TDP x site PUE",
            carbon_g=(u.facility_kwh * Decimal(str(round(intensity, 3)))).quantize(Decimal("0.001")),
            carbon_method=CARBON_METHOD, green_share=round(min(1.0, max(0.0, green)), 4),
            price_cny_per_unit_hour=price, amount_fen=amount, period=period_of(u.ended_at))
        body = r.to_dict()
        sig = self.d.identity.sign_body(body)
        self.d.fed.add_receipt({"receipt_id": r.receipt_id, "side": "issued", "kind": r.kind, "issuer": r.issuer,
                                "origin": r.origin, "request_id": rid, "period": r.period, "amount_fen": r.amount_fen,
                                "body": _dump(body), "signature": sig, "booked": False, "acked": False,
                                "created_at": self.d.clock.now()})
        self._book_issued(r, row.tenant_id)
        return {"body": body, "signature": sig}

    def _pool_unit_price(self, job: Job) -> Decimal:
        assert job.allocation is not None
        pool = self.d.world.pool(job.allocation.pool_id)
        return pool.price_cny_per_device_hour if job.allocation.devices else pool.price_cny_per_cpu_hour

    def _book_issued(self, r: UsageReceipt, tenant_id: str) -> None:
        self.open_accounts(r.origin)
        entry = peer_entry(r, receivable_from=arrears(tenant_id or self.tenant_for(r.origin)))
        outs = self.d.ledger.submit(entry, linked=True) if entry else []
        if all(o.ok for o in outs):
            self.d.fed.mark_receipts("issued", [r.receipt_id], booked=True)
        else:
            log.error("could not book receipt %s: %s", r.receipt_id, [(o.result.value, o.detail) for o in outs])

    def ack(self, origin: str, ids: Sequence[str]) -> int:
        mine = [i for i in ids if isinstance(i, str) and (row := self.d.fed.receipt(i, "issued")) is not None
                and row.origin == origin]
        self.d.fed.mark_receipts("issued", mine, acked=True)
        return len(mine)

    def _energy_at(self, site_id: str, when: datetime) -> tuple[float, float]:
        sig = self.d.signals(when) if self.d.signals else {}
        fc = sig.get(site_id)
        if isinstance(fc, SiteForecast):
            return _value_at(fc, SignalType.CARBON_INTENSITY, when, 500.0), _value_at(
                fc, SignalType.RENEWABLE_SHARE, when, 0.0)
        return 500.0, 0.0


def _work_dir(executor: Any, request_id: str) -> Path | None:
    """Where a launch's command runs (its cwd; ``/job`` inside the local executor's sandbox)."""
    fn = getattr(executor, "work_dir", None)
    if callable(fn):
        out = fn(request_id)
        return Path(out) if out else None
    sandbox = getattr(executor, "_sandbox", None)  # the local executor with its job sandbox
    if sandbox is not None and getattr(sandbox, "root", None) is not None:
        return Path(sandbox.root) / request_id
    runs = getattr(executor, "runs_dir", None)  # the local executor without a sandbox: the control dir
    return Path(runs) / request_id if runs else None


def _value_at(fc: SiteForecast, kind: SignalType, when: datetime, default: float) -> float:
    f = fc.get(kind)
    if f is None or not f.values:
        return default
    i = int((when - f.start).total_seconds() // 3600)
    return float(f.values[max(0, min(i, len(f.values) - 1))])


def _hourly(signal: object, now: datetime, feed: str) -> HourlyForecast | None:
    if not isinstance(signal, SiteForecast):
        return None
    hour = now.replace(minute=0, second=0, microsecond=0)
    carbon, ren = signal.get(SignalType.CARBON_INTENSITY), signal.get(SignalType.RENEWABLE_SHARE)
    if carbon is None or not carbon.values:
        return None

    def take(f: Any, default: float) -> tuple[float, ...]:
        if f is None or not f.values:
            return tuple(default for _ in range(48))
        i0 = int((hour - f.start).total_seconds() // 3600)
        vals = [float(f.values[min(max(0, i0 + k), len(f.values) - 1)]) for k in range(48)]
        return tuple(vals)

    return HourlyForecast(hour, take(carbon, 500.0), tuple(min(1.0, max(0.0, v)) for v in take(ren, 0.0)),
                          f"location-based average grid intensity and renewable share; day-ahead forecast of "
                          f"{feed or 'no feed'} (modelled)")


def _json(text: str) -> dict[str, Any]:
    import json

    out = json.loads(text)
    assert isinstance(out, dict)
    return out


def _dump(body: Mapping[str, Any]) -> str:
    import json

    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)

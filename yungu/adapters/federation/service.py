"""The federation service of one platform: peers, links, offers, delegations, receipts.

``Federation`` is built by the composition root. It owns:

- the identity and the signer (``identity.py``, ``httpsig.py``);
- the **host** (``host.py``): what peers delegate here;
- one **link** thread per peer (``PeerLink``): reconcile after a (re)connection, send queued
  delegations (lease recorded before sending), renew leases, poll status in batches, book
  receipts, push our offers; every verified answer or failure drives the health state machine;
- the **offer book**: peers' signed offers, and ``extend_snapshot`` which turns the fresh ones
  of healthy peers into pools for the scheduler;
- one ``PeerExecutor`` per peer (``executor.py``), registered as executor ``peer:<id>``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from yungu.adapters.federation.client import PeerRefused, PeerUnreachable
from yungu.adapters.federation.executor import PeerExecutor
from yungu.adapters.federation.host import FederationHost, HostDeps
from yungu.adapters.federation.httpsig import Signer
from yungu.adapters.federation.identity import Identity, fingerprint, load_public, verify_body
from yungu.adapters.federation.settings import FederationSettings
from yungu.adapters.federation.store import FederationStore, PeerRecord
from yungu.adapters.store.ledger_tables import usage_records
from yungu.domain.errors import Conflict, InvalidInput, NotFound
from yungu.domain.job import Job
from yungu.domain.world import World
from yungu.engines.federation import health as H
from yungu.engines.federation.messages import (
    DelegatedSpec,
    Delegation,
    PoolOffer,
    UsageReceipt,
    iso,
    platform_id,
    split_request_id,
)
from yungu.engines.federation.offers import (
    RemotePool,
    executor_name,
    extend_world,
    split_remote,
    to_remote_pool,
)
from yungu.engines.federation.policy import PeeringPolicy
from yungu.engines.federation.receipts import DelegationRecord, clearing_account, origin_entry, validate
from yungu.engines.ledger import Account, AccountKind, Result
from yungu.engines.ledger.accounts import arrears, sys_account, wallet
from yungu.engines.ledger.rating import period_of, rate_device_time, usage_id
from yungu.engines.scheduler.pool_state import hold_devices
from yungu.engines.scheduler.types import PoolState
from yungu.ports.executor import Launch

if TYPE_CHECKING:
    from yungu.adapters.federation.link import PeerLink

log = logging.getLogger("yungu.federation")
V1 = "/federation/v1"


@dataclass
class Outbound:
    """One delegation we made (mirror of a ``fed_outbound`` row; ``queued`` lives in memory only)."""

    request_id: str
    job_id: str
    attempt: int
    peer_id: str
    pool_id: str  # the peer's pool id
    tenant_id: str
    devices: int
    offered_price: Decimal
    our_price: Decimal
    offer_id: str
    delegation: dict[str, Any]
    state: str = "queued"  # queued | sent | accepted | refused | done | lost
    phase: str = "pending"
    lease_until: datetime | None = None
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    closed: bool = False
    remote_job_id: str | None = None
    created_at: datetime | None = None
    persisted: bool = False
    stop_asked: bool = False  # the loop cancelled it while the peer did not answer: no more renewals
    stop_grace_s: float = 0.0
    stop_sent: bool = False

    def row(self) -> dict[str, Any]:
        assert self.lease_until is not None and self.created_at is not None
        return {"request_id": self.request_id, "job_id": self.job_id, "attempt": self.attempt,
                "peer_id": self.peer_id, "pool_id": self.pool_id, "tenant_id": self.tenant_id,
                "devices": self.devices, "offered_price": self.offered_price, "our_price": self.our_price,
                "offer_id": self.offer_id, "launch": json.dumps(self.delegation), "state": self.state,
                "phase": self.phase, "lease_until": self.lease_until, "reason": self.reason[:2000],
                "exit_code": self.exit_code, "started_at": self.started_at, "finished_at": self.finished_at,
                "closed": self.closed, "created_at": self.created_at, "updated_at": self.created_at}


class OfferBook:
    """The latest verified offer set of each peer; refused offers are stale until the next set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[str, tuple[int, datetime, dict[str, PoolOffer]]] = {}
        self._stale: set[tuple[str, str]] = set()

    def put(self, peer: str, seq: int, offers: Sequence[PoolOffer], received: datetime) -> bool:
        with self._lock:
            have = self._sets.get(peer)
            if have is not None and seq < have[0]:
                return False
            self._sets[peer] = (seq, received, {o.pool_id: o for o in offers})
            self._stale = {k for k in self._stale if k[0] != peer}
            return True

    def mark_stale(self, peer: str, pool: str) -> None:
        with self._lock:
            self._stale.add((peer, pool))

    def offers(self, peer: str, now: datetime) -> list[PoolOffer]:
        with self._lock:
            have = self._sets.get(peer)
            if have is None:
                return []
            return [o for p, o in have[2].items() if (peer, p) not in self._stale and o.expires_at > now]

    def offer(self, peer: str, pool: str) -> PoolOffer | None:
        with self._lock:
            have = self._sets.get(peer)
            return have[2].get(pool) if have else None

    def seq(self, peer: str) -> tuple[int, datetime | None]:
        with self._lock:
            have = self._sets.get(peer)
            return (have[0], have[1]) if have else (0, None)

    def drop(self, peer: str) -> None:
        with self._lock:
            self._sets.pop(peer, None)


@dataclass
class FederationDeps:
    me: str
    name: str
    world: World
    catalogue: Any
    jobs: Any  # SqlStore
    engine: Engine
    ledger: Any  # LedgerStore
    clock: Any
    new_id: Callable[[], str]
    data_dir: Path
    settings: FederationSettings = field(default_factory=FederationSettings)
    signals: Callable[[datetime], Mapping[str, object]] | None = None
    wake: Callable[[], None] = lambda: None
    executor_for_pool: Callable[[str], Any] = lambda pool: None
    meter: Callable[[Job], Any] = lambda job: None  # see HostDeps.meter


class Federation:
    def __init__(self, d: FederationDeps) -> None:
        self.d = d
        self.me = d.me
        self.clock = d.clock
        self.settings = d.settings
        self.identity = Identity(d.data_dir, d.me, d.name)
        self.fed = FederationStore(d.engine)
        self.signer = Signer(lambda: self.identity.key_id, self.identity.private_for, self._public_key, d.clock.now,
                             d.settings.signature_window_s, d.settings.lease.max_skew_s)
        self._lock = threading.RLock()
        self._peers: dict[str, PeerRecord] = {p.id: p for p in self.fed.peers()}
        self._health: dict[str, H.PeerHealth] = {p: H.PeerHealth(since=d.clock.now()) for p in self._peers}
        self.book = OfferBook()
        self.out: dict[str, Outbound] = {}
        for row in self.fed.outbound(open_only=True):
            self.out[row.request_id] = _from_row(row)
        self.executors: dict[str, PeerExecutor] = {}
        self._links: dict[str, PeerLink] = {}
        self.host = FederationHost(HostDeps(
            me=d.me, world=d.world, catalogue=d.catalogue, jobs=d.jobs, fed=self.fed, identity=self.identity,
            clock=d.clock, new_id=d.new_id, wake=lambda: self.d.wake(), executor_for_pool=lambda p: self.d.executor_for_pool(p),
            ledger=d.ledger, signals=d.signals, data_dir=d.data_dir, settings=d.settings, peers=self.peers_map,
            meter=d.meter))
        self._stop = threading.Event()
        # The links act for the origin (send, renew, poll, reconcile) only while this process
        # leads: a standby that renewed leases would keep alive attempts the leader re-placed.
        self._leading = threading.Event()
        self._threads: list[threading.Thread] = []
        self.offer_pushes = 0

    # ------------------------------------------------------------- lifecycle
    def executor_for(self, peer_id: str) -> PeerExecutor:
        ex = self.executors.get(peer_id)
        if ex is None:
            ex = self.executors[peer_id] = PeerExecutor(self, peer_id)
        return ex

    def register_executors(self, executors: dict[str, Any]) -> None:
        """Add ``peer:<id>`` executors for every peer (the loop reaches remote pools through them)."""
        self._executors_dict = executors
        for p in list(self._peers):
            executors[executor_name(p)] = self.executor_for(p)
        for o in self.out.values():  # delegations to peers since removed still need an executor
            executors.setdefault(executor_name(o.peer_id), self.executor_for(o.peer_id))

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def start(self) -> None:
        """(The first leadership of this process.) Stop what has expired while we were down,
        then start the links and the housekeeping."""
        self.reload()
        self._leading.set()
        self.host.sweep()
        for p in list(self._peers):
            self._start_link(p)
        t = threading.Thread(target=self._housekeeping, name="yungu-fed-host", daemon=True)
        t.start()
        self._threads.append(t)

    def pause(self) -> None:
        """Leadership lost: the links stop acting for the origin at once (no renewals)."""
        self._leading.clear()

    def resume(self) -> None:
        """Leadership gained again: another process may have led meanwhile."""
        self.reload()
        self._leading.set()
        for link in list(self._links.values()):
            link.poke()

    def reload(self) -> None:
        """The open delegations as the store has them (another leader may have made, closed or
        given up some since this process last led); every link reconciles before it sends."""
        rows = {row.request_id: _from_row(row) for row in self.fed.outbound(open_only=True)}
        with self._lock:
            for rid, o in self.out.items():
                if not o.persisted and not o.closed and rid not in rows:
                    rows[rid] = o  # queued here, never sent: still ours to send or give up
            self.out = rows
            for pid in list(self._peers):
                self._health[pid] = replace(self.health(pid), needs_reconcile=True)

    def stop(self) -> None:
        self._stop.set()
        for link in list(self._links.values()):
            link.stop()
        for t in self._threads:
            t.join(timeout=5)

    def _start_link(self, peer_id: str) -> None:
        if peer_id in self._links or self._stop.is_set():
            return
        from yungu.adapters.federation.link import PeerLink  # it imports this module

        link = PeerLink(self, peer_id)
        self._links[peer_id] = link
        link.start()

    def _housekeeping(self) -> None:
        ticks = 0
        while not self._stop.wait(self.settings.publish_every_s):
            ticks += 1
            try:
                if not self._peers:  # nothing to offer to; still stop what outlives its lease, once a second
                    if ticks % max(1, int(1 / self.settings.publish_every_s)) == 0:
                        self.host.sweep()
                    continue
                self.host.sweep()
                seq, _ = self.host.offers(self.clock.now())
                for link in list(self._links.values()):
                    if link.pushed_seq != seq:
                        link.poke()
            except Exception:
                log.exception("federation housekeeping failed")

    # ------------------------------------------------------------- peers
    def peers_map(self) -> Mapping[str, PeerRecord]:
        return dict(self._peers)

    def health(self, peer_id: str) -> H.PeerHealth:
        return self._health.get(peer_id) or H.PeerHealth()

    def _public_key(self, kid: str) -> Any:
        platform, _, fp = kid.partition("#")
        peer = self._peers.get(platform)
        if peer is None:
            return None
        for k in peer.keys:
            pub = load_public(k["public_key"])
            if fingerprint(pub) == fp:
                return pub
        return None

    def caller(self, kid: str) -> PeerRecord:
        peer = self._peers.get(kid.partition("#")[0])
        if peer is None:  # cannot happen: the key resolved through the peer table
            raise NotFound("unknown peer")
        return peer

    def add_peer(self, peer_id: str, base_url: str, public_key: str, policy: PeeringPolicy | None = None,
                 name: str = "", latency_ms: int = 0) -> PeerRecord:
        platform_id(peer_id, "peer")
        if peer_id == self.me:
            raise InvalidInput("a platform cannot peer with itself")
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInput("base_url must start with http:// or https://")
        pub = load_public(public_key)
        keys = ({"keyid": f"{peer_id}#{fingerprint(pub)}", "public_key": public_key},)
        rec = PeerRecord(peer_id, name or peer_id, base_url.rstrip("/"), keys, policy or PeeringPolicy(), latency_ms)
        now = self.clock.now()
        self.fed.put_peer(rec, now)
        with self._lock:
            self._peers[peer_id] = self.fed.peer(peer_id) or rec
            self._health.setdefault(peer_id, H.PeerHealth(since=now))
        self.host.open_accounts(peer_id)
        self.open_origin_accounts(peer_id)
        if hasattr(self, "_executors_dict"):
            self._executors_dict[executor_name(peer_id)] = self.executor_for(peer_id)
        if self._threads:
            self._start_link(peer_id)
        return self._peers[peer_id]

    def remove_peer(self, peer_id: str) -> bool:
        link = self._links.pop(peer_id, None)
        if link:
            link.stop()
        with self._lock:
            self._peers.pop(peer_id, None)
        self.book.drop(peer_id)
        return self.fed.remove_peer(peer_id)

    def rotate_key(self) -> dict[str, str]:
        """New identity key; every peer is told (signed with the old key, which it still trusts)."""
        old_pub = self.identity.public_key_b64
        old, new = self.identity.rotate()
        body = {"platform_id": self.me, "old_keyid": old, "new_keyid": new, "old_public_key": old_pub,
                "new_public_key": self.identity.public_key_b64}
        body["signature_old"] = _sign_with_previous(self.identity, {k: v for k, v in body.items()})
        told = {}
        for p, link in list(self._links.items()):
            try:
                link.client.call("POST", V1 + "/keys", body)
                told[p] = "ok"
            except (PeerUnreachable, PeerRefused) as exc:
                told[p] = f"not told: {exc}"
        return {"old_keyid": old, "new_keyid": new, **{f"peer:{k}": v for k, v in told.items()}}

    def learn_key(self, caller: PeerRecord, body: Mapping[str, Any]) -> None:
        """A peer rotated its key: accept the new one if its old (registered) key signed the notice."""
        sig = str(body.get("signature_old", ""))
        unsigned = {k: v for k, v in body.items() if k != "signature_old"}
        if body.get("platform_id") != caller.id or not verify_body(unsigned, sig, caller.public_keys()):
            raise InvalidInput("key rotation notice not signed by the peer's registered key")
        new = str(body.get("new_public_key", ""))
        pub = load_public(new)
        keys = [{"keyid": f"{caller.id}#{fingerprint(pub)}", "public_key": new}, *[dict(k) for k in caller.keys][:1]]
        self.fed.set_keys(caller.id, keys, self.clock.now())
        with self._lock:
            self._peers[caller.id] = replace(caller, keys=tuple(keys))

    def set_health(self, peer_id: str, h: H.PeerHealth, change: H.HealthChange | None) -> None:
        self._health[peer_id] = h
        if change is not None:
            log.warning("peer %s: %s -> %s (%s)", peer_id, change.before.value, change.after.value, change.reason)
            self.fed.record_health(peer_id, change.before.value, change.after.value, change.at, change.reason)

    def open_origin_accounts(self, peer_id: str) -> None:
        self.d.ledger.open_accounts([Account(clearing_account(peer_id), AccountKind.PEER_CLEARING, "CNY", None, peer_id,
                                             f"clearing with {peer_id}")])

    # ------------------------------------------------------------- offers -> pools
    def receive_offers(self, caller: PeerRecord, body: Mapping[str, Any]) -> int:
        sig = str(body.get("signature", ""))
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        if body.get("platform_id") != caller.id or not verify_body(unsigned, sig, caller.public_keys()):
            raise InvalidInput("offer set not signed by the peer's key")
        raw = body.get("offers")
        if not isinstance(raw, list) or len(raw) > 10_000:
            raise InvalidInput("offers must be a list")
        offers = [PoolOffer.from_dict(o, f"offers[{i}]") for i, o in enumerate(raw)]
        if any(o.platform_id != caller.id for o in offers):
            raise InvalidInput("an offer names another platform")
        seq = body.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise InvalidInput("seq must be an integer")
        self.book.put(caller.id, seq, offers, self.clock.now())
        self.d.wake()  # new capacity: schedule now
        return len(offers)

    def remote_pools(self, now: datetime, active: Sequence[Job] = ()) -> list[RemotePool]:
        out: list[RemotePool] = []
        held: dict[str, int] = {}
        for j in active:
            a = j.allocation
            if a is not None and split_remote(a.pool_id):
                o = self.out.get(j.request_id)
                if o is None or o.phase == "pending":
                    held[a.pool_id] = held.get(a.pool_id, 0) + (a.devices or a.cpus_per_replica * len(a.replicas))
        for pid, peer in list(self._peers.items()):
            if not H.usable_for_new_work(self.health(pid)):
                continue
            for offer in self.book.offers(pid, now):
                rp = to_remote_pool(offer, peer.name, peer.policy, float(peer.latency_ms), now)
                if isinstance(rp, str):
                    continue
                n = held.get(rp.pool.id, 0)
                if n:
                    rp = replace(rp, state=_hold(rp.state, n, rp.pool.accelerators_per_node > 0))
                out.append(rp)
        return out

    def extend_snapshot(self, now: datetime, world: World, pools: Mapping[str, PoolState],
                        signals: Mapping[str, object], active: Sequence[Job] = ()
                        ) -> tuple[World, dict[str, PoolState], dict[str, object]]:
        """The scheduler's inputs with peers' offers added as pools (no special case for it)."""
        remote = self.remote_pools(now, active)
        if not remote:
            return world, dict(pools), dict(signals)
        w = extend_world(world, remote)
        ps = dict(pools)
        sig = dict(signals)
        for rp in remote:
            ps[rp.pool.id] = rp.state
            if rp.forecast is not None:
                sig[rp.site.id] = rp.forecast
        return w, ps, sig

    def world_with_remote(self, world: World) -> World:
        """For lookups (executor of a pool, explain): every pool we may have placed on."""
        now = self.clock.now()
        return extend_world(world, self.remote_pools(now))

    # ------------------------------------------------------------- delegations (origin side)
    def enqueue(self, peer_id: str, launch: Launch) -> Outbound:
        with self._lock:
            o = self.out.get(launch.request_id)
            if o is not None:
                return o
            job_id, attempt = split_request_id(launch.request_id)
            remote = split_remote(launch.pool_id)
            pool = remote[1] if remote else launch.pool_id
            offer = self.book.offer(peer_id, pool)
            peer = self._peers.get(peer_id)
            devices = (launch.accelerators_per_replica * len(launch.replicas) if launch.accelerators_per_replica
                       else launch.cpus_per_replica * len(launch.replicas))
            gpu = launch.accelerators_per_replica > 0
            offered = Decimal(0) if offer is None else (offer.price_cny_per_device_hour if gpu
                                                        else offer.price_cny_per_cpu_hour)
            markup = peer.policy.resale_markup if peer else Decimal("0.10")
            from yungu.engines.federation.offers import resale_price

            spec = DelegatedSpec(name=launch.env.get("YUNGU_JOB_NAME", job_id)[:200] if launch.env else job_id,
                                 command=launch.command, replicas=len(launch.replicas), cpus=launch.cpus_per_replica,
                                 memory_gb=launch.memory_gb_per_replica, accelerators=launch.accelerators_per_replica,
                                 env={k: v for k, v in launch.env.items() if not k.startswith("YUNGU_")},
                                 time_limit_s=launch.time_limit_s)
            now = self.clock.now()
            d = Delegation(self.me, job_id, attempt, pool, launch.tenant_id, spec, now, offer.offer_id if offer else "",
                           offer.price_cny_per_device_hour if offer else Decimal(0),
                           offer.price_cny_per_cpu_hour if offer else Decimal(0))
            o = Outbound(launch.request_id, job_id, attempt, peer_id, pool, launch.tenant_id, devices, offered,
                         resale_price(offered, markup), d.offer_id, d.to_dict(), created_at=now)
            h = self.health(peer_id)
            if offer is None:
                o.state, o.reason, o.closed = "refused", f"no fresh offer from {peer_id} for pool {pool}", True
            elif not H.usable_for_new_work(h):  # placed while it was healthy; nothing sent: place again now
                state = "reconciling" if h.state is H.PeerState.HEALTHY else h.state.value
                o.state, o.reason, o.closed = "refused", f"not sent: {peer_id} is {state}", True
            elif peer is not None and peer.policy.delegate.tenants and launch.tenant_id not in peer.policy.delegate.tenants:
                o.state, o.reason, o.closed = "refused", f"tenant may not use the peering with {peer_id}", True
            self.out[o.request_id] = o
        link = self._links.get(peer_id)
        if link is not None:
            link.poke()
        return o

    def outbound_record(self, request_id: str) -> Outbound | None:
        o = self.out.get(request_id)
        if o is None:
            row = self.fed.outbound_one(request_id)
            if row is not None:
                o = _from_row(row)
        return o

    def open_records(self, peer_id: str) -> list[Outbound]:
        return [o for o in list(self.out.values()) if o.peer_id == peer_id and not o.closed]

    def give_up(self, o: Outbound, now: datetime) -> str:
        """The loop re-places this attempt: its lease has certainly expired (or the peer said it is gone)."""
        if o.state != "lost":
            why = (f"peer {o.peer_id} {self.health(o.peer_id).state.value}; lease expired at {iso(o.lease_until)}; "
                   f"re-placing" if o.state != "queued" else f"not delegated: {o.reason}")
            o.state, o.reason = "lost", why
            if o.persisted:
                self.fed.update_outbound([{"request_id": o.request_id, "state": "lost", "reason": why[:2000],
                                           "updated_at": now}])
            else:
                o.closed = True
        return o.reason

    def cancel_local(self, o: Outbound) -> None:
        o.state, o.phase, o.closed = "refused", "cancelled", True
        o.reason = o.reason or "cancelled before delegation"

    def ask_stop(self, o: Outbound, grace_s: float) -> None:
        """Cancel without the peer: stop renewing the lease (its watchdog then stops the job) and
        let the link send the cancel once the peer answers again."""
        o.stop_asked, o.stop_grace_s = True, grace_s
        link = self._links.get(o.peer_id)
        if link is not None:
            link.poke()

    def cancel_remote(self, o: Outbound, grace_s: float) -> None:
        link = self._links.get(o.peer_id)
        if link is None:
            raise PeerUnreachable(f"no link to {o.peer_id}")
        doc = link.client.call("POST", V1 + "/cancel", {"ids": [o.request_id], "grace_s": grace_s})
        link.apply_statuses(doc.get("statuses", []))

    def remote_logs(self, peer_id: str, rid: str, stream: str, offset: int, limit: int) -> dict[str, Any]:
        link = self._links.get(peer_id)
        if link is None:
            raise PeerUnreachable(f"no link to {peer_id}")
        return link.client.call("GET", f"{V1}/jobs/{rid}/logs",
                                params={"stream": stream, "offset": offset, "limit": limit})

    # ------------------------------------------------------------- receipts (origin side)
    def take_receipt(self, o: Outbound, env: Mapping[str, Any]) -> str | None:
        """Verify, validate and book one receipt; returns its id once booked (then acked)."""
        peer = self._peers.get(o.peer_id)
        body, sig = env.get("body"), str(env.get("signature", ""))
        if peer is None or not isinstance(body, dict) or not verify_body(body, sig, peer.public_keys()):
            log.warning("receipt for %s from %s refused: bad signature", o.request_id, o.peer_id)
            return None
        try:
            r = UsageReceipt.from_dict(body)
        except InvalidInput as exc:
            log.warning("receipt for %s refused: %s", o.request_id, exc.message)
            return None
        assert o.created_at is not None
        rec = DelegationRecord(o.request_id, o.peer_id, o.devices, o.offered_price, o.created_at)
        problems = validate(r, rec if r.request_id == o.request_id else None, me=self.me, now=self.clock.now(),
                            max_skew_s=self.settings.lease.max_skew_s)
        if problems:
            log.warning("receipt %s refused: %s", r.receipt_id, "; ".join(problems))
            return None
        have = self.fed.receipt(r.receipt_id, "received")
        if have is not None and have.booked:
            return r.receipt_id
        if have is None:
            self.fed.add_receipt({"receipt_id": r.receipt_id, "side": "received", "kind": r.kind, "issuer": r.issuer,
                                  "origin": r.origin, "request_id": r.request_id, "period": r.period,
                                  "amount_fen": r.amount_fen, "body": json.dumps(body, sort_keys=True),
                                  "signature": sig, "booked": False, "acked": False, "created_at": self.clock.now()})
        if self._book_origin(r, o):
            self.fed.mark_receipts("received", [r.receipt_id], booked=True)
            return r.receipt_id
        return None

    def _book_origin(self, r: UsageReceipt, o: Outbound) -> bool:
        ledger = self.d.ledger
        tenant = o.tenant_id
        ledger.open_accounts([
            Account(clearing_account(o.peer_id), AccountKind.PEER_CLEARING, "CNY", None, o.peer_id, "clearing"),
            Account(wallet(tenant), AccountKind.TENANT_WALLET, "CNY", 0, tenant, "wallet"),
            Account(arrears(tenant), AccountKind.TENANT_ARREARS, "CNY", None, tenant, "arrears")])
        gross = rate_device_time(r.device_seconds, o.our_price)
        uid = usage_id(o.job_id, o.attempt)
        reserved: int | None
        try:
            reserved = ledger.get_transfer(f"budget:{o.job_id}").amount
        except NotFound:
            reserved = None
        for _ in range(2):
            for charge_from in (wallet(tenant), arrears(tenant)):
                entry = origin_entry(r, usage_id=uid, job_id=o.job_id, gross=gross, reserved=reserved,
                                     charge_from=charge_from, escrow=sys_account("escrow"), vat_account=sys_account("vat"),
                                     revenue=sys_account("revenue"))
                outs = ledger.submit(entry, linked=True) if entry else []
                if all(x.ok for x in outs):
                    if gross and r.outcome not in ("lease_expired", "fenced"):
                        self._usage_line(r, o, uid, gross)
                    return True
                failed = [x for x in outs if x.result is not Result.LINKED_FAILED]
                if failed and failed[0].result is Result.PENDING_ALREADY_CLOSED and reserved is not None:
                    reserved = None
                    break
            else:
                break
        log.error("could not book receipt %s at the origin", r.receipt_id)
        return False

    def _usage_line(self, r: UsageReceipt, o: Outbound, uid: str, gross: int) -> None:
        """The tenant's invoice line for delegated usage (already booked above, so booked=1)."""
        U = usage_records
        with self.d.engine.begin() as c:
            if c.execute(select(U.c.id).where(U.c.id == uid)).first() is not None:
                return
            c.execute(insert(U).values(
                id=uid, tenant_id=o.tenant_id, job_id=o.job_id, pool_id=f"{o.peer_id}/{o.pool_id}",
                provider=f"peer:{o.peer_id}", started_at=r.started_at, ended_at=r.finished_at,
                device_seconds=r.device_seconds, compute_units=Decimal(r.device_seconds) / 3600, facility_kwh=r.kwh,
                tokens_in=0, tokens_out=0, gross=gross, usage_period=period_of(r.finished_at),
                booked_period=period_of(r.finished_at), late_from="", transfer_id=f"{uid}:charge", booked=1,
                invoice_id=None, created_at=self.clock.now()))

    # ------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        peers = []
        for p in self._peers.values():
            h = self.health(p.id)
            seq, at = self.book.seq(p.id)
            peers.append({**p.to_dict(), "state": h.state.value, "reason": h.reason,
                          "usable": H.usable_for_new_work(h),
                          "last_ok": iso(h.last_ok), "offer_seq": seq, "offers_received_at": iso(at),
                          "offers": len(self.book.offers(p.id, self.clock.now())),
                          "open_delegations": len(self.open_records(p.id))})
        return {"platform_id": self.me, "name": self.identity.platform_name, "keys": self.identity.public_keys(),
                "peers": peers}


def _hold(state: PoolState, n: int, devices: bool) -> PoolState:
    if devices:
        return hold_devices(state, n)
    nodes = list(state.nodes)
    for i in range(len(nodes) - 1, -1, -1):
        if n <= 0:
            break
        take = min(n, nodes[i].cpus)
        nodes[i] = replace(nodes[i], cpus=nodes[i].cpus - take)
        n -= take
    return replace(state, nodes=tuple(nodes))


def _from_row(row: Any) -> Outbound:
    return Outbound(row.request_id, row.job_id, row.attempt, row.peer_id, row.pool_id, row.tenant_id, row.devices,
                    Decimal(str(row.offered_price)), Decimal(str(row.our_price)), row.offer_id, json.loads(row.launch),
                    row.state, row.phase, row.lease_until, row.reason, row.exit_code, row.started_at, row.finished_at,
                    bool(row.closed), None, row.created_at, True)


def _sign_with_previous(identity: Identity, body: dict[str, Any]) -> str:
    import base64

    from yungu.engines.federation.messages import canonical

    prev = identity.private_for(str(body["old_keyid"]))
    assert prev is not None
    return base64.b64encode(prev.sign(canonical(body))).decode()


def conflict(msg: str) -> Conflict:
    return Conflict(msg)

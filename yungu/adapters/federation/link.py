"""The origin side's link to one peer platform: a thread that reconciles, delegates, renews
leases, polls status and fetches receipts for this platform's delegations to that peer, and
drives the peer's health state machine (healthy -> suspect -> lost). Split out of
``service.py``, which keeps the federation's state and wiring."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from yungu.adapters.federation.client import PeerClient, PeerRefused, PeerUnreachable
from yungu.adapters.federation.service import V1, Federation, Outbound
from yungu.domain.errors import InvalidInput
from yungu.engines.federation import health as H
from yungu.engines.federation import lease as L
from yungu.engines.federation.messages import (
    RemoteStatus,
    iso,
)

log = logging.getLogger("yungu.federation")

class PeerLink:
    """One thread per peer: everything this platform says to it, and the health it concludes."""

    def __init__(self, fed: Federation, peer_id: str) -> None:
        self.f = fed
        self.peer_id = peer_id
        peer = fed._peers[peer_id]
        self.client = PeerClient(peer_id, peer.base_url, fed.signer, fed.settings.call_timeout_s)
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"yungu-fed-{peer_id}", daemon=True)
        self.pushed_seq = -1
        self._pushed_at = 0.0
        self._renewed_at = 0.0
        self._polled_at = 0.0
        self._to_ack: list[str] = []
        self._asked: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        self._thread.join(timeout=5)
        self.client.close()

    def poke(self) -> None:
        self._poke.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.f.leading:  # a standby says nothing to peers for the origin (see ``pause``)
                self._poke.wait(timeout=0.25)
                self._poke.clear()
                continue
            busy = False
            try:
                busy = self.round()
                self._ok()
            except PeerUnreachable as exc:
                self._fail(str(exc))
            except PeerRefused as exc:  # a verified answer: the peer is alive but said no
                self._ok()
                log.warning("peer %s refused: %s", self.peer_id, exc)
            except Exception:
                log.exception("federation link to %s failed", self.peer_id)
            h = self.f.health(self.peer_id)
            nh, change = H.tick(h, self.f.clock.now(), self.f.settings.health)
            if change:
                self.f.set_health(self.peer_id, nh, change)
            wait = self.f.settings.status_every_s if busy else 0.25
            self._poke.wait(timeout=wait)
            self._poke.clear()

    def _ok(self) -> None:
        nh, change = H.on_success(self.f.health(self.peer_id), self.f.clock.now())
        self.f.set_health(self.peer_id, nh, change)

    def _fail(self, why: str) -> None:
        nh, change = H.on_failure(self.f.health(self.peer_id), self.f.clock.now(), why, self.f.settings.health)
        self.f.set_health(self.peer_id, nh, change)

    # ----------------------------------------------------------------- one round
    def round(self) -> bool:
        if self.f.health(self.peer_id).needs_reconcile:
            self.reconcile()
        mono = time.monotonic()
        sent = 0
        for _ in range(10):  # drain a backlog in several batches per round
            n = self.send()
            sent += n
            if n < 100:
                break
        open_ = [o for o in self.f.open_records(self.peer_id) if o.state != "queued" and o.persisted]
        if open_ and (sent or mono - self._polled_at >= self.f.settings.status_every_s):
            self.poll(self._due(open_))
            self._polled_at = time.monotonic()
        # Renew only while the peer answers: each renewal is recorded before it is sent, so renewals
        # sent into a partition would push back the time the origin may re-place the job.
        if mono - self._renewed_at >= self.f.settings.lease.renew_every_s and (
                self.f.health(self.peer_id).failing_since is None):
            self.renew()
            self._renewed_at = mono
        self.send_stops()
        if self._to_ack:
            ids, self._to_ack = self._to_ack[:1000], self._to_ack[1000:]
            self.client.call("POST", V1 + "/receipts/ack", {"ids": ids})
        self.push_offers()
        return bool(open_) or sent > 0

    def reconcile(self) -> None:
        live = [o.request_id for o in self.f.open_records(self.peer_id)
                if o.state in ("sent", "accepted") and o.phase in ("pending", "running") and not o.stop_asked]
        doc = self.client.call("POST", V1 + "/reconcile", {"live": live})
        stopped = doc.get("stopped", [])
        if stopped:
            log.warning("reconciled with %s: it stopped %d attempts that are not live here", self.peer_id, len(stopped))
        self.f.set_health(self.peer_id, H.reconciled(self.f.health(self.peer_id)), None)

    def send(self) -> int:
        f = self.f
        batch, size = [], 0
        for o in f.open_records(self.peer_id):
            if o.state in ("queued", "sent"):
                size += len(o.delegation.get("spec", {}).get("command", "")) + 600
                # Small batches: each answers well within the call timeout even on a busy peer, and
                # the body stays under the peer's 1 MiB limit.
                if batch and (len(batch) >= 100 or size > 600_000):
                    break
                batch.append(o)
        if not batch:
            return 0
        now = f.clock.now()
        exp = L.grant(now, f.settings.lease)
        for o in batch:
            o.lease_until = L.extend(o.lease_until, exp)
            o.delegation["lease_expires_at"] = iso(exp)
            if o.state == "queued":
                o.state = "sent"
        f.fed.insert_outbound([o.row() for o in batch])  # the lease is durable before it is sent
        for o in batch:
            o.persisted = True
        doc = self.client.call("POST", V1 + "/delegations", {"delegations": [o.delegation for o in batch]})
        by_id = {o.request_id: o for o in batch}
        changes = []
        for res in doc.get("results", []):
            o = by_id.get(str(res.get("request_id")))
            if o is None:
                continue
            if res.get("accepted"):
                o.state, o.remote_job_id = "accepted", res.get("remote_job_id")
            else:
                o.state, o.reason = "refused", str(res.get("reason", ""))[:2000]
                f.book.mark_stale(self.peer_id, o.pool_id)
                f.d.wake()
            changes.append({"request_id": o.request_id, "state": o.state, "reason": o.reason, "updated_at": now})
        f.fed.update_outbound(changes)
        return len(batch)

    def renew(self) -> None:
        f = self.f
        live = [o for o in f.open_records(self.peer_id) if o.state in ("sent", "accepted")
                and o.phase in ("pending", "running") and not o.stop_asked]
        if not live:
            return
        exp = L.grant(f.clock.now(), f.settings.lease)
        f.fed.extend_leases([o.request_id for o in live], exp)  # durable first
        for o in live:
            o.lease_until = L.extend(o.lease_until, exp)
        doc = self.client.call("POST", V1 + "/leases", {"expires_at": iso(exp), "ids": [o.request_id for o in live]})
        answers = doc.get("results", {})
        if any(v != "ok" for v in answers.values()):
            self._polled_at = 0.0  # learn what happened at once

    def send_stops(self) -> None:
        """Cancels the loop asked for while the peer did not answer (see ``Federation.ask_stop``)."""
        todo = [o for o in self.f.open_records(self.peer_id) if o.stop_asked and not o.stop_sent
                and o.state in ("sent", "accepted")]
        by_grace: dict[float, list[Outbound]] = {}
        for o in todo[:1000]:
            by_grace.setdefault(o.stop_grace_s, []).append(o)
        for grace, group in by_grace.items():
            doc = self.client.call("POST", V1 + "/cancel", {"ids": [o.request_id for o in group], "grace_s": grace})
            for o in group:
                o.stop_sent = True
            self.apply_statuses(doc.get("statuses", []))

    def _due(self, records: list[Outbound], limit: int = 250) -> list[Outbound]:
        """Which records to ask about now: those not yet running first (their start matters), then
        the rest round-robin by when we last asked, so one poll costs the peer at most ``limit`` rows."""
        waiting = [o for o in records if o.phase == "pending" or o.state in ("sent", "lost")]
        rest = sorted((o for o in records if o not in waiting), key=lambda o: self._asked.get(o.request_id, 0.0))
        due = (waiting + rest)[:limit]
        now = time.monotonic()
        for o in due:
            self._asked[o.request_id] = now
        if len(self._asked) > 4 * len(records) + 1000:
            live = {o.request_id for o in records}
            self._asked = {k: v for k, v in self._asked.items() if k in live}
        return due

    def poll(self, records: list[Outbound]) -> None:
        for i in range(0, len(records), 1000):
            ids = [o.request_id for o in records[i:i + 1000]]
            doc = self.client.call("POST", V1 + "/status", {"ids": ids})
            self.apply_statuses(doc.get("statuses", []))

    def apply_statuses(self, statuses: list[Any]) -> None:
        f = self.f
        now = f.clock.now()
        changes = []
        wake = False
        for raw in statuses:
            try:
                st = RemoteStatus.from_dict(raw)
            except InvalidInput as exc:
                log.warning("bad status from %s: %s", self.peer_id, exc.message)
                continue
            o = f.out.get(st.request_id)
            if o is None or o.peer_id != self.peer_id:
                continue
            before = (o.phase, o.state, o.closed)
            if st.phase == "unknown":
                if o.state in ("sent", "accepted"):
                    o.state, o.phase, o.reason = "lost", "lost", f"{self.peer_id} does not know this delegation"
                o.closed = True
            else:
                o.phase = st.phase
                o.exit_code, o.started_at, o.finished_at = st.exit_code, st.started_at or o.started_at, st.finished_at
                if st.reason:
                    o.reason = st.reason[:2000]
                if st.phase in ("succeeded", "failed", "cancelled", "lost"):
                    if o.state in ("sent", "accepted"):
                        o.state = "done"
                    booked = f.take_receipt(o, st.receipt) if st.receipt else None
                    if booked:
                        self._to_ack.append(booked)
                    o.closed = bool(booked) or st.started_at is None
            if (o.phase, o.state, o.closed) != before:
                wake = True
                changes.append({"request_id": o.request_id, "state": o.state, "phase": o.phase,
                                "reason": o.reason[:2000], "exit_code": o.exit_code, "started_at": o.started_at,
                                "finished_at": o.finished_at, "closed": o.closed, "updated_at": now})
        f.fed.update_outbound(changes)
        for o in [x for x in list(f.out.values()) if x.closed and x.peer_id == self.peer_id]:
            f.out.pop(o.request_id, None)
        if wake:
            f.d.wake()

    def push_offers(self) -> None:
        f = self.f
        now = f.clock.now()
        seq, _ = f.host.offers(now)
        mono = time.monotonic()
        if seq == self.pushed_seq and mono - self._pushed_at < f.settings.offer_refresh_s:
            return
        body = f.host.offer_set(now)
        self.client.call("POST", V1 + "/offers", body)
        self.pushed_seq, self._pushed_at = int(body["seq"]), mono
        f.offer_pushes += 1

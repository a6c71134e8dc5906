"""A peer platform as one more executor kind.

How our concepts map onto a peer:

- a **launch** on a remote pool ``"<peer>/<pool>"`` is a *delegation* ``(us, job, attempt)``;
  ``submit`` queues it and returns ``pending`` at once: the peer's link thread records the
  lease it grants (durably, before sending) and sends queued delegations in batches;
- the peer's answer comes back through ``observe``: a refusal reads ``lost`` with the peer's
  reason (the loop requeues the job; the offer is marked stale), acceptance ``pending``, then
  ``running``, ``succeeded``/``failed``/``cancelled`` as the peer reports them in batches;
- an attempt on an unreachable peer stays where it is until its lease has *certainly*
  expired (``lease.may_replace``); only then does ``observe`` say ``lost`` so the loop
  re-places it — the peer's watchdog has stopped it by then;
- ``cancel`` asks the peer (grace capped by the peer's own); ``logs`` pages the peer's logs;
  ``list_active`` lists the open delegations, so a restarted platform adopts, not repeats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from yungu.adapters.executors.base import BaseExecutor
from yungu.adapters.federation.client import PeerRefused, PeerUnreachable
from yungu.engines.federation import lease as L
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Launch,
    LogChunk,
)

if TYPE_CHECKING:
    from yungu.adapters.federation.service import Federation, Outbound

_PHASE = {"pending": ExecPhase.PENDING, "running": ExecPhase.RUNNING, "succeeded": ExecPhase.SUCCEEDED,
          "failed": ExecPhase.FAILED, "cancelled": ExecPhase.CANCELLED, "lost": ExecPhase.LOST}


class PeerExecutor(BaseExecutor):
    kind = "peer"

    def __init__(self, fed: Federation, peer_id: str) -> None:
        super().__init__(f"peer:{peer_id}")
        self.fed, self.peer_id = fed, peer_id

    def capabilities(self) -> Capabilities:
        return Capabilities(name=self.name, gangs=True, devices=True, logs=True, energy_accounting=True,
                            unsupported={"time_limit": "enforced by the peer's own executor where it supports it"})

    def _submit(self, launch: Launch) -> ExecStatus | ExecError:
        o = self.fed.enqueue(self.peer_id, launch)
        return self._status_of(o)

    def _status(self, request_id: str) -> ExecStatus | ExecError:
        o = self.fed.outbound_record(request_id)
        if o is None or o.peer_id != self.peer_id:
            return ExecError(ExecErrorCode.NOT_FOUND, f"no delegation {request_id} to {self.peer_id}")
        return self._status_of(o)

    def _observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        return {rid: self._status(rid) for rid in request_ids}

    def _status_of(self, o: Outbound) -> ExecStatus:
        now = self.fed.clock.now()
        native = f"{self.peer_id}:{o.remote_job_id or o.request_id}"
        if o.state == "refused":
            return ExecStatus(o.request_id, ExecPhase.LOST, reason=f"refused by {self.peer_id}: {o.reason}",
                              native_id=native)
        phase = _PHASE.get(o.phase, ExecPhase.PENDING)
        if phase in (ExecPhase.SUCCEEDED, ExecPhase.FAILED, ExecPhase.CANCELLED, ExecPhase.LOST):
            return ExecStatus(o.request_id, phase, o.exit_code, o.reason, native, o.started_at, o.finished_at)
        if o.state == "queued":  # nothing sent yet: safe to give up once it has waited a whole lease
            assert o.created_at is not None
            if (now - o.created_at).total_seconds() < self.fed.settings.lease.ttl_s:
                return ExecStatus(o.request_id, ExecPhase.PENDING, native_id=native)
            o.reason = f"{self.peer_id} could not be reached to delegate it"
        if o.state in ("lost", "queued") or L.may_replace(now, o.lease_until, self.fed.settings.lease):
            why = self.fed.give_up(o, now)
            return ExecStatus(o.request_id, ExecPhase.LOST, reason=why, native_id=native)
        return ExecStatus(o.request_id, phase, None, o.reason, native, o.started_at)

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        o = self.fed.outbound_record(request_id)
        if o is None:
            return ExecError(ExecErrorCode.NOT_FOUND, f"no delegation {request_id}")
        if o.state in ("queued", "refused"):
            self.fed.cancel_local(o)
            return ExecStatus(request_id, ExecPhase.CANCELLED, reason="cancelled before it was delegated")
        if o.closed or o.phase in ("succeeded", "failed", "cancelled", "lost"):
            return self._status_of(o)
        if self.fed.health(self.peer_id).failing_since is None:
            try:
                self.fed.cancel_remote(o, grace_s)
                return self._status_of(o)
            except PeerUnreachable:
                pass
            except PeerRefused as exc:
                return ExecError(ExecErrorCode.REJECTED, str(exc))
        # The peer does not answer now. Its lease is no longer renewed, so its watchdog stops the
        # job by the lease's end at the latest; the link sends the cancel if the peer answers
        # first. Until one of them is seen the job is stopping (never "unreachable": that would
        # make the loop stop observing this executor, and so never see the lease run out).
        self.fed.ask_stop(o, grace_s)
        if L.may_replace(self.fed.clock.now(), o.lease_until, self.fed.settings.lease):
            return ExecStatus(request_id, ExecPhase.CANCELLED, reason="peer unreachable; its lease has expired")
        st = self._status_of(o)
        return ExecStatus(request_id, st.phase, None, f"stopping: {self.peer_id} does not answer; its lease is no "
                          f"longer renewed", st.native_id, st.started_at)

    def _logs(self, request_id: str, stream: str, offset: int, limit: int) -> LogChunk | ExecError:
        try:
            doc = self.fed.remote_logs(self.peer_id, request_id, stream, offset, limit)
        except PeerUnreachable as exc:
            return ExecError(ExecErrorCode.UNREACHABLE, str(exc))
        except PeerRefused as exc:
            return ExecError(ExecErrorCode.NOT_FOUND, str(exc))
        return LogChunk(str(doc.get("data", "")).encode(), int(doc.get("next_offset", offset)), bool(doc.get("eof")))

    def _list_active(self) -> Sequence[ExecStatus] | ExecError:
        return [self._status_of(o) for o in self.fed.open_records(self.peer_id)
                if o.state in ("queued", "sent", "accepted") and o.phase in ("pending", "running")]

    def _check(self) -> Mapping[str, object]:
        """Always reachable: this executor is the local delegation queue, which always answers
        (submit, observe and list_active never wait on the network). The peer's own health is
        not the loop's business: an unhealthy peer's offers leave the snapshot, a launch for it
        is refused at once, and its jobs' leases decide when they are re-placed — which the
        loop only learns by observing, so it must never take this executor for down."""
        h = self.fed.health(self.peer_id)
        return {"reachable": True, "peer_state": h.state.value, "state": h.state.value, "reason": h.reason,
                "last_ok": h.last_ok.isoformat() if h.last_ok else None}

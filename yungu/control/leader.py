"""Leadership of the control plane: one process runs the loop, the others stand by.

Every ``yungu server`` on one database serves the API; exactly one of them — the holder of
the ``loop`` lease (``ports.store.LeaseStore``) — runs the control loop and the billing
runner. ``Leadership`` is that competition, as a thread:

- **standby**: try to take the lease every ``poll_s``; it is free when its holder released
  it (clean shutdown) or did not renew it within ``ttl_s`` (killed, paused, cut off);
- **leader**: renew every ``renew_s`` (``on_gain`` must return quickly: anything slow runs on
  a thread of its own, or the lease would lapse meanwhile); ``on_gain(lease)`` has started the roles with the
  lease's fencing token (every write of the loop carries it, so once a standby has taken
  over, a paused old leader's writes are refused). If a renewal fails, or a role reports
  ``Fenced``, ``on_loss()`` stops the roles at once and the process stands by again.

``valid()`` says whether this process may still act on executors: it leads and its last
successful renewal, *as measured on its own monotonic clock from before the request was
sent*, is less than ``ttl_s - margin_s`` old. A process paused past its lease therefore
finds ``valid()`` false as soon as it wakes, before it launches or stops anything; what
remains is the instant between that check and the executor call (see docs/operations.md).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from yungu.domain.clock import Clock
from yungu.ports.store import Fenced, Lease, LeaseStore

log = logging.getLogger("yungu.control.leader")


def holder_id() -> str:
    """host:pid:random — unique per process start, readable in the lease row."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leadership:
    def __init__(self, leases: LeaseStore, clock: Clock, *, on_gain: Callable[[Lease], None],
                 on_loss: Callable[[], None], name: str = "loop", holder: str | None = None,
                 ttl_s: float = 2.5, renew_s: float = 0.5, poll_s: float = 0.25, margin_s: float = 0.5,
                 address: str = "") -> None:
        if not 0 < renew_s < ttl_s - margin_s:
            raise ValueError("renew_s must be positive and below ttl_s - margin_s")
        self.leases = leases
        self.clock = clock
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.name = name
        self.holder = holder or holder_id()
        self.ttl_s, self.renew_s, self.poll_s, self.margin_s = ttl_s, renew_s, poll_s, margin_s
        self.address = address
        self._lease: Lease | None = None
        self._valid_until = float("-inf")
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self.gains = 0  # how many times this process became leader

    # ---- what others ask -------------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def leading(self) -> bool:
        return self._lease is not None

    def valid(self) -> bool:
        return self._lease is not None and self.clock.monotonic() < self._valid_until

    def fenced(self, exc: Fenced) -> None:
        """A role's write was refused: someone else leads. Step down at the next tick."""
        log.warning("fenced: %s", exc.message)
        self._lost.set()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Compete once now (a lone server leads before this returns), then keep competing."""
        self.tick()
        self._thread = threading.Thread(target=self._run, name="yungu-leadership", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop competing; if leading, stop the roles and (``release``) give the lease up at
        once so a standby takes over without waiting for it to expire."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)
        with self._lock:
            lease = self._lease
            if lease is not None:
                self._step_down("shutting down")
                if release:
                    try:
                        self.leases.release(lease)
                    except Exception:
                        log.exception("could not release the lease (it will expire)")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.renew_s if self._lease is not None else self.poll_s)

    def tick(self) -> None:
        """One step of the competition (the thread calls this; tests may call it directly)."""
        with self._lock:
            if self._stop.is_set() and self._thread is not None:
                return
            if self._lease is not None and self._lost.is_set():
                self._step_down("a write was fenced")
                return
            sent = self.clock.monotonic()
            try:
                if self._lease is None:
                    got = self.leases.acquire(self.name, self.holder, self.ttl_s, self.address)
                else:
                    got = self.leases.renew(self._lease, self.ttl_s)
            except Exception as exc:  # the database is unreachable: keep what we have while valid
                log.warning("lease %s: %s: %s", "renewal" if self._lease else "attempt", type(exc).__name__, exc)
                if self._lease is not None and not self.valid():
                    self._step_down("the lease could not be renewed in time")
                return
            if got is None:
                if self._lease is not None:
                    self._step_down("the lease was lost")
                return
            self._valid_until = sent + self.ttl_s - self.margin_s
            if self._lease is None:
                self._lease = got
                self._lost.clear()
                self.gains += 1
                log.warning("leading the control loop (lease %s, token %d, holder %s)", got.name, got.token,
                            self.holder)
                try:
                    self.on_gain(got)
                except Exception:
                    log.exception("starting the leader's roles failed")
                    self._step_down("the roles did not start")
                    try:
                        self.leases.release(got)
                    except Exception:
                        log.exception("could not release the lease (it will expire)")

    def _step_down(self, why: str) -> None:
        log.warning("standing by: %s", why)
        self._lease = None
        self._valid_until = float("-inf")
        try:
            self.on_loss()
        except Exception:
            log.exception("stopping the leader's roles failed")

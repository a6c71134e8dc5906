"""Peer health: a state machine, not a timeout.

::

    healthy ──no answer for suspect_after_s──▶ suspect ──no answer for lost_after_s──▶ lost
       ▲                                          │                                     │
       └──────────────── a verified answer ───────┴─────────────────────────────────────┘
                                (from lost: through reconciliation first)

- **healthy**: offers are used, delegations and renewals flow;
- **suspect**: its offers stop being used for new placements; jobs there keep their leases
  (renewals keep being tried) and are *not* re-placed;
- **lost**: its jobs are re-placed as soon as each one's lease has certainly expired
  (``lease.may_replace``) — never earlier, whatever the health says;
- coming back from **lost** (or after the origin restarted) the link first *reconciles*:
  the peer is told the one live attempt of every job; it keeps those and stops the rest.

Every transition is a :class:`HealthChange` value the adapter logs and stores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class PeerState(StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    LOST = "lost"


@dataclass(frozen=True)
class HealthTerms:
    suspect_after_s: float = 3.0
    lost_after_s: float = 30.0


@dataclass(frozen=True)
class PeerHealth:
    state: PeerState = PeerState.HEALTHY
    since: datetime | None = None  # when the state was entered
    last_ok: datetime | None = None  # last verified answer
    failing_since: datetime | None = None  # first failure since the last success
    needs_reconcile: bool = True  # a fresh link (start, or back from lost) reconciles first
    reason: str = ""


@dataclass(frozen=True)
class HealthChange:
    before: PeerState
    after: PeerState
    at: datetime
    reason: str


def on_success(h: PeerHealth, now: datetime) -> tuple[PeerHealth, HealthChange | None]:
    new = replace(h, last_ok=now, failing_since=None)
    if h.state is PeerState.HEALTHY:
        return new, None
    back = replace(new, state=PeerState.HEALTHY, since=now, reason="answers again",
                   needs_reconcile=h.needs_reconcile or h.state is PeerState.LOST)
    return back, HealthChange(h.state, PeerState.HEALTHY, now, "answers again")


def on_failure(h: PeerHealth, now: datetime, why: str, terms: HealthTerms) -> tuple[PeerHealth, HealthChange | None]:
    # The silence began at the last verified answer, not when a call finally timed out.
    failing = h.failing_since or h.last_ok or now
    new = replace(h, failing_since=failing, reason=why)
    return _advance(new, now, terms)


def tick(h: PeerHealth, now: datetime, terms: HealthTerms) -> tuple[PeerHealth, HealthChange | None]:
    """Time passing with no answer moves a failing peer along."""
    return _advance(h, now, terms) if h.failing_since is not None else (h, None)


def _advance(h: PeerHealth, now: datetime, terms: HealthTerms) -> tuple[PeerHealth, HealthChange | None]:
    assert h.failing_since is not None
    down = now - h.failing_since
    target = h.state
    if down >= timedelta(seconds=terms.lost_after_s):
        target = PeerState.LOST
    elif down >= timedelta(seconds=terms.suspect_after_s) and h.state is PeerState.HEALTHY:
        target = PeerState.SUSPECT
    if target is h.state:
        return h, None
    why = f"no verified answer for {down.total_seconds():.1f} s: {h.reason}"
    return (replace(h, state=target, since=now, needs_reconcile=True),
            HealthChange(h.state, target, now, why))


def reconciled(h: PeerHealth) -> PeerHealth:
    return replace(h, needs_reconcile=False)


def usable_for_new_work(h: PeerHealth) -> bool:
    return h.state is PeerState.HEALTHY and not h.needs_reconcile

"""Leases and epochs: what makes "at most one running copy" hold under partitions.

A delegated job runs on a peer only while it holds a lease that the origin renews. Times
are absolute (the origin's clock); the two platforms' clocks may differ by at most
``max_skew_s`` (the peering's declared bound). The rules, with ``E`` the lease's expiry:

- **origin**: before sending a delegation or renewal that grants up to ``E``, it durably
  records ``lease_until = max(lease_until, E)``; it may start another copy of the job only
  when its own clock reads ``lease_until + replace_margin_s`` or later, or after the peer
  positively reported the attempt finished (a terminal status, its processes gone);
- **peer**: it starts stopping the job at ``E - max_skew_s - stop_budget_s`` on *its* clock
  and has stopped it (grace included) by ``E - max_skew_s``; with ``|skew| <= max_skew_s``
  that is no later than ``E`` on the origin's clock. The stop is enforced by a watchdog
  beside the job's processes, so it holds even when the peer platform itself is down;
- **epochs**: every delegation carries the origin's attempt number as its epoch. A peer
  refuses a delegation or renewal whose epoch is lower than one it has seen for the same
  origin job (it is fenced), and stops lower epochs when a higher one arrives.

Renewals may arrive late or twice: a lease never shrinks, and an absolute ``E`` means a
delayed message cannot extend a lease past what the origin recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True)
class LeaseTerms:
    ttl_s: float = 30.0  # how far ahead each grant reaches
    renew_every_s: float = 5.0  # the origin renews this often while the peer answers
    max_skew_s: float = 5.0  # the largest clock difference the peering tolerates
    stop_budget_s: float = 7.0  # peer: time to stop a job (cancel grace + a loop round)
    replace_margin_s: float = 1.0  # origin: extra wait after expiry before re-placing

    def validate(self) -> list[str]:
        problems = []
        if self.ttl_s <= 0 or self.renew_every_s <= 0:
            problems.append("lease ttl and renewal interval must be positive")
        if self.max_skew_s < 0 or self.stop_budget_s < 0 or self.replace_margin_s < 0:
            problems.append("skew, stop budget and margin must not be negative")
        if self.max_skew_s + self.stop_budget_s >= self.ttl_s:
            problems.append("ttl_s must exceed max_skew_s + stop_budget_s, or a job is stopped at once")
        elif 2 * self.renew_every_s > self.ttl_s - self.max_skew_s - self.stop_budget_s:
            problems.append("renew_every_s must be at most half of ttl_s - max_skew_s - stop_budget_s "
                            "(a healthy link must renew twice before the peer starts stopping the job)")
        return problems


def grant(now: datetime, terms: LeaseTerms) -> datetime:
    """The expiry the origin grants (and records before sending) at ``now``."""
    return now + timedelta(seconds=terms.ttl_s)


def extend(recorded: datetime | None, granted: datetime) -> datetime:
    """Leases never shrink: a late or repeated renewal keeps the later expiry."""
    return granted if recorded is None or granted > recorded else recorded


def peer_stop_at(expires: datetime, terms: LeaseTerms) -> datetime:
    """When the peer starts stopping a job (its own clock)."""
    return expires - timedelta(seconds=terms.max_skew_s + terms.stop_budget_s)


def peer_dead_by(expires: datetime, terms: LeaseTerms) -> datetime:
    """When the peer must have stopped it, grace included (its own clock)."""
    return expires - timedelta(seconds=terms.max_skew_s)


def may_replace(now: datetime, lease_until: datetime | None, terms: LeaseTerms) -> bool:
    """Origin: has every lease this attempt ever held certainly expired on the peer?"""
    if lease_until is None:
        return True  # nothing was ever sent
    return now >= lease_until + timedelta(seconds=terms.replace_margin_s)


def replace_at(lease_until: datetime, terms: LeaseTerms) -> datetime:
    return lease_until + timedelta(seconds=terms.replace_margin_s)


class LeaseCheck(StrEnum):
    OK = "ok"
    FENCED = "fenced"  # a later attempt of the same job holds (or held) the peer
    EXPIRED = "expired"  # too late: the peer has begun (or finished) stopping it
    TOO_LONG = "too_long"  # a grant beyond ttl + skew: refused, it could outlive the origin's record
    TOO_SHORT = "too_short"  # would be stopped at once


def check_grant(now: datetime, expires: datetime, epoch: int, highest_epoch: int | None,
                terms: LeaseTerms, *, renewal: bool) -> LeaseCheck:
    """Peer: may this delegation (or renewal) with lease ``expires`` and ``epoch`` hold?"""
    if highest_epoch is not None and epoch < highest_epoch:
        return LeaseCheck.FENCED
    if expires > now + timedelta(seconds=terms.ttl_s + terms.max_skew_s):
        return LeaseCheck.TOO_LONG
    if now >= peer_stop_at(expires, terms):
        return LeaseCheck.EXPIRED if renewal else LeaseCheck.TOO_SHORT
    return LeaseCheck.OK

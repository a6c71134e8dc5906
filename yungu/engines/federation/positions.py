"""Clearing between platforms: bilateral positions, co-signed, then multilateral netting.

For a period, each pair ``(a, b)`` agrees on what ``a`` owes ``b`` and ``b`` owes ``a``: the sums
of the receipts each issued to the other in that period, and the digest of their ids, so two
honest books produce byte-identical bodies that both sign. The co-signed bilaterals of all
platforms are netted with ``engines.ledger.clearing`` into the fewest settlement transfers;
the statement (``adapters.ledger.signing.statement_body``) is signed by every party.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yungu.domain.errors import InvalidInput
from yungu.engines.federation.messages import UsageReceipt
from yungu.engines.ledger.clearing import net_positions


@dataclass(frozen=True)
class Bilateral:
    period: str
    a: str  # a < b
    b: str
    a_owes_b: int  # fen
    b_owes_a: int
    receipts: int
    digest: str  # sha256 of the sorted receipt ids

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "a": self.a, "b": self.b, "a_owes_b": self.a_owes_b,
                "b_owes_a": self.b_owes_a, "receipts": self.receipts, "digest": self.digest,
                "currency": "CNY", "kind": "bilateral-position"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Bilateral:
        try:
            out = cls(str(d["period"]), str(d["a"]), str(d["b"]), int(d["a_owes_b"]), int(d["b_owes_a"]),
                      int(d["receipts"]), str(d["digest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"bilateral position: bad field {exc}") from exc
        if out.a >= out.b or out.a_owes_b < 0 or out.b_owes_a < 0:
            raise InvalidInput("bilateral position: parties must be ordered (a < b) and amounts >= 0")
        return out

    def obligations(self) -> list[tuple[str, str, int]]:
        return [(self.a, self.b, self.a_owes_b), (self.b, self.a, self.b_owes_a)]

    def net_for(self, me: str) -> int:
        """What ``me`` owes the other party, net (negative: is owed)."""
        if me == self.a:
            return self.a_owes_b - self.b_owes_a
        if me == self.b:
            return self.b_owes_a - self.a_owes_b
        raise InvalidInput(f"{me} is not a party to this position")


def bilateral(period: str, me: str, other: str, receipts: Iterable[UsageReceipt]) -> Bilateral:
    """The pair's position from the receipts between them (issued by either) in ``period``."""
    a, b = sorted((me, other))
    owes = {a: 0, b: 0}
    ids = []
    for r in receipts:
        if r.period != period or {r.issuer, r.origin} != {a, b}:
            continue
        owes[r.origin] += r.amount_fen
        ids.append(r.receipt_id)
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return Bilateral(period, a, b, owes[a], owes[b], len(ids), digest)


def multilateral(positions: Sequence[Bilateral]) -> dict[str, int]:
    """Net position per platform (positive: is owed) from the co-signed bilaterals."""
    seen: set[tuple[str, str]] = set()
    obligations: list[tuple[str, str, int]] = []
    periods = {p.period for p in positions}
    if len(periods) > 1:
        raise InvalidInput(f"positions of several periods: {sorted(periods)}")
    for p in positions:
        if (p.a, p.b) in seen:
            raise InvalidInput(f"two positions for the pair {p.a}, {p.b}")
        seen.add((p.a, p.b))
        obligations.extend(p.obligations())
    pos = net_positions(obligations)
    for party in {x for p in positions for x in (p.a, p.b)}:
        pos.setdefault(party, 0)
    return pos

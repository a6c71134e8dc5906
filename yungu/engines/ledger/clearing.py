"""Multilateral netting between peer platforms.

Each platform's net position (what it is owed, positive; what it owes, negative) sums to
zero per currency. The fewest settlement transfers that clear all positions is
``n - k`` where ``k`` is the largest number of disjoint zero-sum groups the positions split
into; we find it exactly by dynamic programming over subsets (up to 14 parties, 16,384
subsets), and fall back to the greedy largest-creditor/largest-debtor pairing (at most
``n - 1`` transfers) above that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yungu.domain.errors import InvalidInput

EXACT_LIMIT = 14


@dataclass(frozen=True, order=True)
class Settlement:
    payer: str
    payee: str
    amount: int  # minor units, > 0


def net_positions(obligations: list[tuple[str, str, int]]) -> dict[str, int]:
    """Gross obligations ``(debtor, creditor, amount)`` -> net position per party."""
    pos: dict[str, int] = {}
    for debtor, creditor, amount in obligations:
        if amount < 0:
            raise InvalidInput("an obligation cannot be negative")
        pos[debtor] = pos.get(debtor, 0) - amount
        pos[creditor] = pos.get(creditor, 0) + amount
    return pos


def _greedy(parties: list[tuple[str, int]]) -> list[Settlement]:
    cred_names = [p for p, v in sorted(parties, key=lambda x: (-x[1], x[0])) if v > 0]
    debt_names = [p for p, v in sorted(parties, key=lambda x: (x[1], x[0])) if v < 0]
    left = {p: abs(v) for p, v in parties}
    out: list[Settlement] = []
    i = j = 0
    while i < len(cred_names) and j < len(debt_names):
        c, d = cred_names[i], debt_names[j]
        amt = min(left[c], left[d])
        out.append(Settlement(d, c, amt))
        left[c] -= amt
        left[d] -= amt
        i += left[c] == 0
        j += left[d] == 0
    return out


def minimal_settlements(positions: Mapping[str, int]) -> list[Settlement]:
    """The fewest transfers that bring every position to zero (exact up to 14 parties)."""
    if sum(positions.values()) != 0:
        raise InvalidInput(f"net positions must sum to zero, got {sum(positions.values())}")
    parties = sorted((p, v) for p, v in positions.items() if v != 0)
    n = len(parties)
    if n > EXACT_LIMIT:
        return _greedy(parties)
    values = [v for _, v in parties]
    full = (1 << n) - 1
    total = [0] * (1 << n)
    for mask in range(1, 1 << n):
        low = mask & -mask
        total[mask] = total[mask ^ low] + values[low.bit_length() - 1]
    # best[mask]: most zero-sum groups mask can be cut into (masks with total 0 only).
    best = [0] * (1 << n)
    for mask in range(1, 1 << n):
        b = max(best[mask ^ (1 << i)] for i in range(n) if mask >> i & 1)
        best[mask] = b + (1 if total[mask] == 0 else 0)
    # Recover the groups: peel off one zero-sum group at a time.
    groups: list[int] = []
    mask = full
    while mask:
        sub = mask
        chosen = mask
        while sub:
            if total[sub] == 0 and best[mask ^ sub] == best[mask] - 1 and best[sub] == 1:
                chosen = sub
                break
            sub = (sub - 1) & mask
        groups.append(chosen)
        mask ^= chosen
    out: list[Settlement] = []
    for g in groups:
        out.extend(_greedy([parties[i] for i in range(n) if g >> i & 1]))
    return sorted(out)

"""SLA credits: measured availability below the contract triggers an automatic credit.

Tiers follow the usual cloud pattern (a share of the period's charge is credited back),
configurable per contract. The credit is booked as a ledger transfer from the provider's
receivable to the tenant's wallet with the id ``sla:<reservation>:<period>``, so it is
granted exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from yungu.domain.errors import InvalidInput

# (availability below which this tier applies, share of the charge credited)
DEFAULT_TIERS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("0.99"), Decimal("0.25")),
    (Decimal("0.95"), Decimal("1.00")),
)


@dataclass(frozen=True)
class SlaContract:
    target: Decimal  # e.g. 0.999
    tiers: tuple[tuple[Decimal, Decimal], ...] = DEFAULT_TIERS


def availability(up_seconds: int, total_seconds: int) -> Decimal:
    if total_seconds <= 0 or not 0 <= up_seconds <= total_seconds:
        raise InvalidInput("availability needs 0 <= up <= total and total > 0")
    return Decimal(up_seconds) / Decimal(total_seconds)


def sla_credit(contract: SlaContract, measured: Decimal, charge_fen: int) -> int:
    """Credit in fen for one period. Below target: 10%; each tier below: its share."""
    if charge_fen < 0:
        raise InvalidInput("charge cannot be negative")
    if measured >= contract.target:
        return 0
    share = Decimal("0.10")
    for below, tier_share in _sorted(contract.tiers):
        if measured < below:
            share = tier_share
    return int((Decimal(charge_fen) * share).quantize(Decimal(1), ROUND_HALF_EVEN))


def _sorted(tiers: Sequence[tuple[Decimal, Decimal]]) -> list[tuple[Decimal, Decimal]]:
    return sorted(tiers, key=lambda t: -t[0])

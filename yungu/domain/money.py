"""Exact money: ``Decimal`` amounts with a currency, never floats.

CNY's minor unit is the fen (0.01). Amounts with more precision than the currency allows
are rejected rather than rounded silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from yungu.domain.errors import InvalidInput

MINOR_UNITS: dict[str, int] = {"CNY": 2, "USD": 2, "EUR": 2, "JPY": 0}


def minor_exponent(currency: str) -> Decimal:
    try:
        return Decimal(1).scaleb(-MINOR_UNITS[currency])
    except KeyError as exc:
        raise InvalidInput(f"unknown currency {currency!r}; known: {sorted(MINOR_UNITS)}") from exc


def parse_amount(value: object, currency: str = "CNY", *, exact: bool = True) -> Decimal:
    """Parse a user-given amount. Floats are refused: they cannot carry exact money."""
    if isinstance(value, float):
        raise InvalidInput("money must be given as a string or integer, not a float")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidInput(f"amount must be finite: {value!r}")
    q = minor_exponent(currency)
    if exact and amount != amount.quantize(q):
        raise InvalidInput(f"{value} has more precision than {currency} allows ({q})")
    return amount


@dataclass(frozen=True, order=True)
class Money:
    amount: Decimal
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money.amount must be a Decimal")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def times(self, factor: Decimal | int) -> Money:
        return Money(self.amount * Decimal(factor), self.currency)

    def rounded(self) -> Money:
        """Round to the currency's minor unit, banker's rounding."""
        return Money(self.amount.quantize(minor_exponent(self.currency), ROUND_HALF_EVEN), self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidInput(f"currency mismatch: {self.currency} vs {other.currency}")

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

"""Exact money: ``Decimal`` amounts with a currency, never floats.

CNY's minor unit is the fen (0.01). Amounts with more precision than the currency allows
are rejected rather than rounded silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from yungu.domain.errors import InvalidInput

MINOR_UNITS: dict[str, int] = {"CNY": 2, "USD": 2, "EUR": 2, "JPY": 0}


def minor_exponent(currency: str) -> Decimal:
    try:
        return Decimal(1).scaleb(-MINOR_UNITS[currency])
    except KeyError as exc:
        raise InvalidInput(f"unknown currency {currency!r}; known: {sorted(MINOR_UNITS)}") from exc


# The only text form money takes: ASCII digits, an optional minus sign and decimal point.
# No spaces, no exponent, no "+", no full-width or other Unicode digits (``Decimal`` would
# accept "１.００" and "1e400"), no NaN or Infinity.
AMOUNT_TEXT = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?", re.ASCII)
AMOUNT_PATTERN = "^" + AMOUNT_TEXT.pattern + "$"
MAX_MAJOR_UNITS = Decimal(10) ** 15
"""No amount, in major units, may reach this (far above any real one, far below int64 in minor units)."""


def parse_amount(value: object, currency: str = "CNY", *, exact: bool = True) -> Decimal:
    """Parse a user-given amount: a decimal string such as ``"12.50"`` or an integer.

    The one parser of money from outside; every API schema and CLI option uses it. Refused:
    floats and booleans (``true`` is not 1 CNY), text with spaces, signs other than a leading
    minus, exponents, non-ASCII digits, NaN/Infinity, magnitudes from ``MAX_MAJOR_UNITS`` up,
    and (with ``exact``) more decimals than the currency's minor unit.
    """
    if isinstance(value, bool | float):
        raise InvalidInput(f"money must be a decimal string such as \"12.50\", not {type(value).__name__} "
                           f"{value!r} / 金额应为十进制字符串，如 \"12.50\"")
    if isinstance(value, int):
        if abs(value) >= MAX_MAJOR_UNITS:
            raise InvalidInput(f"amount {value} is out of range (|amount| < {MAX_MAJOR_UNITS:f}) / 金额超出范围")
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if AMOUNT_TEXT.fullmatch(value) is None:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InvalidInput(f"not a decimal amount: {shown!r}; write ASCII digits with an optional '.', "
                               f"e.g. \"12.50\" / 金额格式无效")
        amount = Decimal(value)
    else:
        raise InvalidInput(f"money must be a decimal string such as \"12.50\", not {type(value).__name__}")
    if not amount.is_finite():
        raise InvalidInput(f"amount must be finite: {value!r}")
    if abs(amount) >= MAX_MAJOR_UNITS:
        raise InvalidInput(f"amount {value} is out of range (|amount| < {MAX_MAJOR_UNITS:f}) / 金额超出范围")
    q = minor_exponent(currency)
    if exact and amount != amount.quantize(q):
        raise InvalidInput(f"{value} has more precision than {currency} allows ({q}) / 金额精度超出币种最小单位")
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

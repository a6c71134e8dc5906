"""Prices per million tokens and exact rating.

A price is CNY per million tokens with at most four decimal places (0.0001 CNY per million
tokens is the finest step). A token therefore costs an integer number of *cost units* of
1e-10 CNY, and every cost in the gateway is an integer count of those units: exact, fast to
add under load, and summable in SQL. Fen (0.01 CNY, the ledger's unit) are 10**8 units.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from yungu.domain.errors import InvalidInput

UNITS_PER_CNY = 10**10
UNITS_PER_FEN = 10**8
PRICE_PLACES = 4  # decimal places of a price per million tokens
_PRICE_Q = Decimal(1).scaleb(-PRICE_PLACES)
MAX_PRICE_PER_M = Decimal(1_000_000)  # CNY per million tokens: anything above is a typo


def parse_price(value: object) -> Decimal:
    """A price per million tokens from user input: a decimal string or integer, never a float."""
    if isinstance(value, float):
        raise InvalidInput("prices must be given as strings or integers, not floats / 价格不能是浮点数")
    try:
        p = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidInput(f"not a decimal price: {value!r} / 不是十进制价格") from exc
    if not p.is_finite() or p < 0 or p > MAX_PRICE_PER_M:
        raise InvalidInput(f"price per million tokens must be between 0 and {MAX_PRICE_PER_M}: {value!r}")
    if p != p.quantize(_PRICE_Q):
        raise InvalidInput(f"price {value} has more than {PRICE_PLACES} decimal places / 价格最多四位小数")
    return p


def price_units(price_per_m: Decimal) -> int:
    """Cost units per token for a price per million tokens (exact by the 4-place rule)."""
    return int(price_per_m.scaleb(PRICE_PLACES))


@dataclass(frozen=True)
class Price:
    """What one token of input and of output costs at one offer, in CNY per million."""

    input_per_m: Decimal
    output_per_m: Decimal
    currency: str = "CNY"

    @property
    def in_units(self) -> int:
        return price_units(self.input_per_m)

    @property
    def out_units(self) -> int:
        return price_units(self.output_per_m)

    def cost(self, tokens_in: int, tokens_out: int) -> int:
        """Exact cost in units of 1e-10 CNY."""
        if tokens_in < 0 or tokens_out < 0:
            raise InvalidInput("token counts cannot be negative")
        return tokens_in * self.in_units + tokens_out * self.out_units

    def dearer(self, other: Price) -> Price:
        """The elementwise maximum: an upper bound for reserving across fallbacks."""
        return Price(max(self.input_per_m, other.input_per_m), max(self.output_per_m, other.output_per_m),
                     self.currency)


def units_to_cny(units: int) -> Decimal:
    """Cost units as an exact CNY decimal (up to ten places, no exponent, no trailing zeros)."""
    return Decimal(units).scaleb(-10) if units else Decimal(0)


def cny_text(units: int) -> str:
    """Cost units as a plain decimal string ("0.0000003", never "3E-7"; no trailing zeros)."""
    text = format(Decimal(units).scaleb(-10), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def cny_to_units(amount: Decimal) -> int:
    scaled = amount.scaleb(10)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{amount} CNY is finer than 1e-10 CNY")
    return int(scaled)


def units_to_fen_rounded(units: int) -> int:
    """Round a cumulative cost to whole fen, half-even (the ledger's unit)."""
    return int((Decimal(units) / UNITS_PER_FEN).quantize(Decimal(1), ROUND_HALF_EVEN))


def prompt_token_bound(text_bytes: int, messages: int) -> int:
    """An upper bound of the prompt's tokens when its tokenizer is not at hand.

    Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen) never emit more tokens than
    UTF-8 bytes; a chat template adds a few special tokens per message and a prefix."""
    return text_bytes + 8 * messages + 16

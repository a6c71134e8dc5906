"""Invoice lines for token usage: the quantity is millions of tokens (百万 tokens), not
device-hours. Token usage records are recognised by their job id ``tokens.<model>``."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from yungu.engines.ledger.invoice import ITEM_NAME, InvoiceLine
from yungu.engines.ledger.rating import Usage

TOKEN_JOB_PREFIX = "tokens."


def is_token_usage(u: Usage) -> bool:
    return u.job_id.startswith(TOKEN_JOB_PREFIX) and u.device_seconds == 0


def token_line(u: Usage, transfer_id: str, gross: int, tax_rate: Decimal, booked_period: str,
               late_from: str = "") -> InvoiceLine:
    tax = int((Decimal(gross) * tax_rate / (1 + tax_rate)).quantize(Decimal(1), ROUND_HALF_EVEN))
    qty = (Decimal(u.tokens_in + u.tokens_out) / 1_000_000).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
    spec = f"tokens {u.job_id[len(TOKEN_JOB_PREFIX):]}: {u.tokens_in} in / {u.tokens_out} out"
    return InvoiceLine(u.id, transfer_id, ITEM_NAME, spec, "百万tokens", qty, gross, gross - tax, tax, tax_rate,
                       booked_period, late_from)

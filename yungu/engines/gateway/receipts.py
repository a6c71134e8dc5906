"""Token receipts: what a peer platform signs for tokens it served on our behalf, and how
both ledgers book them.

A request taken on platform A (the *client*: it holds the customer and its key) and served
by a replica on platform B (the *server*) yields one receipt, made and signed by B: the
request id, the model, the tokens, B's prices per million tokens and the exact cost in units
of 1e-10 CNY. A verifies B's signature and books the receipt; B books its own copy. Both
sides book the same receipts, in the same order, with the same arithmetic, so the two
clearing accounts mirror each other to the fen:

* on A: ``rcpt:<id>:owe`` moves the amount from what A holds for B (the provider receivable
  of ``peer-<B>``, credited when the customer's tokens were billed) into ``peer:<B>:clearing``
  (credited: A owes B);
* on B: ``rcpt:<id>:due`` debits ``peer:<A>:clearing`` (A owes B) and credits B's escrow,
  from which the platform commission and B's provider are paid.

Sub-fen amounts are carried, never rounded per receipt: a batch books the change of the
rounded cumulative sum (per peer pair and period), so any split into batches books the
same total.

The receipt is the interface with federation (the ``fed`` engineer): federation carries a
receipt's canonical JSON and signature between platforms; this module fixes the format
(``FORMAT``) and the booking, and ``adapters.gateway.receipts`` signs and verifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from yungu.domain.errors import InvalidInput
from yungu.engines.gateway.pricing import Price, units_to_fen_rounded
from yungu.engines.ledger.model import Transfer
from yungu.engines.ledger.rating import split_charge

FORMAT = "yungu.token-receipt/1"


@dataclass(frozen=True)
class TokenReceipt:
    id: str  # "rcpt:<server platform>:<request id>": unique across platforms
    request_id: str
    server: str  # platform id that served the tokens (signs the receipt)
    client: str  # platform id that took the customer's request (owes the amount)
    model: str
    tokens_in: int
    tokens_out: int
    counted: bool  # True when the tokens were counted by the tokenizer, not reported by the backend
    price_in_per_m: str  # CNY per million tokens, exact decimal strings
    price_out_per_m: str
    cost_units: int  # tokens x prices, units of 1e-10 CNY
    currency: str
    served_at: str  # ISO 8601 UTC
    period: str  # YYYY-MM (China Standard Time), the clearing period
    format: str = FORMAT

    def body(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if self.format != FORMAT:
            raise InvalidInput(f"unknown receipt format {self.format!r}; expected {FORMAT}")
        if self.server == self.client:
            raise InvalidInput("a receipt's server and client must be different platforms")
        if self.id != receipt_id(self.server, self.request_id):
            raise InvalidInput("receipt id does not match its server and request id")
        if self.tokens_in < 0 or self.tokens_out < 0:
            raise InvalidInput("negative token counts in a receipt")
        price = Price(Decimal(self.price_in_per_m), Decimal(self.price_out_per_m), self.currency)
        if price.cost(self.tokens_in, self.tokens_out) != self.cost_units:
            raise InvalidInput("receipt cost does not equal its tokens times its prices")

    @staticmethod
    def from_body(body: Mapping[str, Any]) -> TokenReceipt:
        try:
            r = TokenReceipt(**dict(body))
        except TypeError as exc:
            raise InvalidInput(f"not a token receipt: {exc}") from exc
        r.validate()
        return r


def receipt_id(server: str, request_id: str) -> str:
    return f"rcpt:{server}:{request_id}"


def make_receipt(*, request_id: str, server: str, client: str, model: str, tokens_in: int, tokens_out: int,
                 counted: bool, price: Price, served_at: str, period: str) -> TokenReceipt:
    r = TokenReceipt(receipt_id(server, request_id), request_id, server, client, model, tokens_in, tokens_out,
                     counted, str(price.input_per_m), str(price.output_per_m),
                     price.cost(tokens_in, tokens_out), price.currency, served_at, period)
    r.validate()
    return r


def clearing_account(peer: str) -> str:
    return f"peer:{peer}:clearing"


def peer_provider(peer: str) -> str:
    """The provider name under which a peer's tokens are billed to our customers."""
    return f"peer-{peer}"


@dataclass(frozen=True)
class BatchBooking:
    """One batch of receipts between one pair of platforms in one period."""

    batch_id: str
    fen: int  # what this batch books (the change of the rounded cumulative sum)
    cum_units_after: int
    transfers: tuple[Transfer, ...]


def book_batch(side: str, me: str, receipts: Sequence[TokenReceipt], cum_units_before: int,
               batch_id: str, *, provider: str = "", currency: str = "CNY") -> BatchBooking:
    """The linked ledger entry for a batch of receipts, on the client (``side="client"``) or
    the server (``side="server"``) platform ``me``. ``provider`` (server side) is the
    provider whose replica served the tokens."""
    if not receipts:
        raise InvalidInput("an empty batch books nothing")
    peers = {r.server if side == "client" else r.client for r in receipts}
    if len(peers) != 1 or len({r.period for r in receipts}) != 1:
        raise InvalidInput("a receipt batch covers one peer and one period")
    for r in receipts:
        if (r.client if side == "client" else r.server) != me:
            raise InvalidInput(f"receipt {r.id} does not involve this platform as {side}")
        if r.currency != currency:
            raise InvalidInput(f"receipt {r.id} is in {r.currency}, the batch in {currency}")
    peer = peers.pop()
    after = cum_units_before + sum(r.cost_units for r in receipts)
    fen = units_to_fen_rounded(after) - units_to_fen_rounded(cum_units_before)
    ref = f"rcptbatch:{batch_id}"
    out: list[Transfer] = []
    if fen > 0 and side == "client":
        out.append(Transfer(f"{ref}:owe", f"provider:{peer_provider(peer)}:receivable", clearing_account(peer),
                            fen, currency, ref=ref, memo=f"token receipts owed to {peer}"))
    elif fen > 0:
        escrow = f"sys:{currency.lower()}:escrow"
        out.append(Transfer(f"{ref}:due", clearing_account(peer), escrow, fen, currency, ref=ref,
                            memo=f"token receipts due from {peer}"))
        s = split_charge(fen, Decimal(0))  # no VAT here: the client platform invoiced the customer
        if s.commission:
            out.append(Transfer(f"{ref}:fee", escrow, f"sys:{currency.lower()}:revenue", s.commission, currency,
                                ref=ref))
        if s.provider:
            out.append(Transfer(f"{ref}:provider", escrow, f"provider:{provider or me}:receivable", s.provider,
                                currency, ref=ref))
    return BatchBooking(batch_id, fen, after, tuple(out))

"""Token usage into the ledger, on the same path as device-hours, and token receipts
between platforms.

``TokenBilling.run_once`` (called by the billing runner before each booking pass) folds the
unbatched usage rows into one batch per (tenant, provider, model, month), hands each batch to
the billing store as an ordinary usage record (``usage:tok:<batch>``, device-seconds 0, its
tokens, its gross in fen) and the billing loop books it like any job's usage: charge the
wallet (or arrears), split VAT, commission and the provider's share, invoice at period end.
The gross is the change of the rounded cumulative cost of the group, so sub-fen costs are
carried, never lost and never rounded up per request.

Exactly once: a batch and the stamps on its rows are one transaction; its usage record id
derives from the batch id (a repeat insert is ignored); a batch is marked handed only after
its record is in, so a crash in between hands it again, harmlessly.

``Receipts`` signs receipts for tokens this platform served for a peer, verifies and stores a
peer's receipts for tokens it served for us, and books both sides in batches (see
``engines.gateway.receipts``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yungu.adapters.gateway.store import Batch, TokenStore
from yungu.adapters.ledger.signing import canonical, public_b64
from yungu.domain.clock import Clock
from yungu.domain.errors import InvalidInput
from yungu.engines.gateway.receipts import TokenReceipt, book_batch, clearing_account, peer_provider
from yungu.engines.ledger import Account, AccountKind
from yungu.engines.ledger.rating import Usage, next_period
from yungu.ports.billing import LedgerPort, UsagePort, UsageRow


def usage_row(b: Batch, closed: set[str]) -> UsageRow:
    u = Usage(f"usage:tok:{b.id}", b.tenant_id, f"tokens.{b.model}", b.pool_id or "gateway", b.provider,
              b.first_at, b.last_at, 0, Decimal(0), Decimal(0), b.tokens_in, b.tokens_out)
    u.validate()
    booked = b.period
    while booked in closed:
        booked = next_period(booked)
    return UsageRow(u, b.fen, b.period, booked, b.period if booked != b.period else "", False, None,
                    f"tokens {b.model}: {b.tokens_in} in / {b.tokens_out} out, {b.rows} requests")


class TokenBilling:
    def __init__(self, tokens: TokenStore, usage: UsagePort, new_id: Callable[[], str], clock: Clock) -> None:
        self.tokens, self.usage, self.new_id, self.clock = tokens, usage, new_id, clock

    def run_once(self) -> int:
        """Batch new usage rows and hand every batch not yet handed; returns batches handed."""
        while self.tokens.make_batches(self.new_id, self.clock.now()):
            pass
        batches = self.tokens.unhanded_batches()
        if not batches:
            return 0
        closed = self.usage.closed_periods()
        self.usage.add_usage([usage_row(b, closed) for b in batches])
        self.tokens.mark_handed([b.id for b in batches])
        return len(batches)


def sign_receipt(r: TokenReceipt, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(canonical(r.body()))).decode()


def verify_receipt(body: Mapping[str, Any], signature: str, server_public_b64: str) -> TokenReceipt:
    """Check the serving platform's signature over the canonical body; raises ``InvalidInput``."""
    r = TokenReceipt.from_body(body)
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(server_public_b64))
        pub.verify(base64.b64decode(signature), canonical(r.body()))
    except (InvalidSignature, ValueError) as exc:
        raise InvalidInput(f"receipt {r.id} is not signed by {r.server} / 回执签名无效") from exc
    return r


class Receipts:
    """One platform's side of token receipts: record, then book in batches into its ledger."""

    def __init__(self, me: str, tokens: TokenStore, ledger: LedgerPort, new_id: Callable[[], str], clock: Clock,
                 key: Ed25519PrivateKey | Callable[[], Ed25519PrivateKey],
                 peers: Callable[[str], str | Sequence[str] | None], provider: str = "") -> None:
        """``key``: the signing key, or a callable giving the current one (the federation
        identity's, which rotates). ``peers``: a platform id -> its public key(s) (base64), or
        None when it is not a peer; a receipt verifies under any of them (rotation)."""
        self.me, self.tokens, self.ledger, self.new_id, self.clock = me, tokens, ledger, new_id, clock
        self._key, self.peers, self.provider = key, peers, provider or me

    @property
    def key(self) -> Ed25519PrivateKey:
        return self._key if isinstance(self._key, Ed25519PrivateKey) else self._key()

    @property
    def public_key(self) -> str:
        return public_b64(self.key)

    def issue(self, r: TokenReceipt) -> tuple[dict[str, Any], str]:
        """As the server: sign, record (side ``server``) and return (body, signature) for the client."""
        if r.server != self.me:
            raise InvalidInput(f"this platform ({self.me}) can only sign receipts it served")
        sig = sign_receipt(r, self.key)
        self.tokens.add_receipt("server", r.client, r.period, r.id, r.cost_units,
                                json.dumps(r.body(), sort_keys=True), sig, self.clock.now())
        return r.body(), sig

    def accept(self, body: Mapping[str, Any], signature: str) -> TokenReceipt:
        """As the client: verify the server's signature with its published key and record it."""
        server = str(body.get("server", ""))
        found = self.peers(server)
        if not found:
            raise InvalidInput(f"unknown peer platform {server!r}: no public key / 未知的对等平台")
        keys = [found] if isinstance(found, str) else list(found)
        for i, pub in enumerate(keys):
            try:
                r = verify_receipt(body, signature, pub)
                break
            except InvalidInput:
                if i == len(keys) - 1:
                    raise
        if r.client != self.me:
            raise InvalidInput(f"receipt {r.id} is addressed to {r.client}, not to this platform ({self.me})")
        self.tokens.add_receipt("client", r.server, r.period, r.id, r.cost_units,
                                json.dumps(r.body(), sort_keys=True), signature, self.clock.now())
        return r

    def book(self) -> int:
        """Batch new receipts of both sides and book every unbooked batch; returns fen booked."""
        total = 0
        for side in ("client", "server"):
            self.tokens.batch_receipts(side, self.new_id, self.clock.now())
            for bid, peer, _period, bodies, before in self.tokens.unbooked_receipt_batches(side):
                receipts = [TokenReceipt.from_body(json.loads(b)) for b in bodies]
                booking = book_batch(side, self.me, receipts, before, bid, provider=self.provider)
                self._open(side, peer)
                if booking.transfers:
                    outs = self.ledger.submit(list(booking.transfers), linked=True)
                    if not all(o.ok for o in outs):
                        raise InvalidInput(f"booking receipt batch {bid} failed: "
                                           f"{[(o.result.value, o.detail) for o in outs if not o.ok]}")
                self.tokens.mark_receipt_batch_booked(bid)
                total += booking.fen
        return total

    def _open(self, side: str, peer: str) -> None:
        accounts = [Account(clearing_account(peer), AccountKind.PEER_CLEARING, "CNY", None, peer,
                            f"clearing with {peer}")]
        if side == "client":
            accounts.append(Account(f"provider:{peer_provider(peer)}:receivable", AccountKind.PROVIDER_RECEIVABLE,
                                    "CNY", None, peer_provider(peer), "tokens served by a peer"))
        else:
            accounts.append(Account(f"provider:{self.provider}:receivable", AccountKind.PROVIDER_RECEIVABLE, "CNY",
                                    None, self.provider, "provider receivable"))
        self.ledger.open_accounts(accounts)

"""Usage receipts: what the origin accepts and how both sides book them (exactly once).

A receipt is refused unless the issuer was delegated exactly this attempt, the times fall
inside the delegation, the device-seconds fit what was placed, and the amount is no more
than the quantities at the offered price. Booking is a list of ledger transfers whose ids
derive from the receipt id, so a repeat is answered ``exists`` and changes nothing.

Ledger sign convention (``balance = credits - debits``): ``peer:<id>:clearing`` holds what we
owe the peer (positive) or what the peer owes us (negative), like a wallet (a liability)
against arrears (a receivable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from yungu.engines.federation.messages import UsageReceipt
from yungu.engines.ledger.model import Transfer
from yungu.engines.ledger.rating import DEFAULT_VAT, rate_device_time

ABSORBED_OUTCOMES = ("lease_expired", "fenced")  # infrastructure's fault: the tenant does not pay


def clearing_account(peer: str, currency: str = "CNY") -> str:
    return f"peer:{peer}:clearing" if currency == "CNY" else f"peer:{peer}:clearing:{currency.lower()}"


@dataclass(frozen=True)
class DelegationRecord:
    """What the origin knows of one delegation it made (the receipt is checked against it)."""

    request_id: str
    peer: str
    devices: int  # devices placed (CPUs on CPU-only pools)
    price_cny_per_unit_hour: Decimal  # the offered price accepted at delegation
    delegated_at: datetime


def max_amount_fen(device_seconds: int, price: Decimal) -> int:
    return rate_device_time(device_seconds, price)


def validate(r: UsageReceipt, d: DelegationRecord | None, *, me: str, now: datetime,
             max_skew_s: float) -> list[str]:
    """Why the origin refuses receipt ``r`` (empty: accepted)."""
    if r.origin != me:
        return [f"receipt is addressed to {r.origin}, not {me}"]
    if d is None:
        return [f"{r.request_id} was never delegated to {r.issuer}: nothing to bill"]
    if d.peer != r.issuer:
        return [f"{r.request_id} was delegated to {d.peer}, not {r.issuer}"]
    why = []
    skew = timedelta(seconds=max_skew_s)
    if r.finished_at < r.started_at:
        why.append("receipt ends before it starts")
    if r.started_at < d.delegated_at - skew:
        why.append("receipt starts before the job was delegated")
    if r.finished_at > now + skew:
        why.append("receipt ends in the future")
    wall = max(0.0, (r.finished_at - r.started_at).total_seconds())
    if r.device_seconds > d.devices * (wall + 1):
        why.append(f"{r.device_seconds} device-seconds exceed {d.devices} devices x {wall:.0f} s")
    if r.price_cny_per_unit_hour > d.price_cny_per_unit_hour:
        why.append(f"price {r.price_cny_per_unit_hour} above the offered {d.price_cny_per_unit_hour}")
    cap = max_amount_fen(r.device_seconds, d.price_cny_per_unit_hour)
    if r.amount_fen > cap:
        why.append(f"amount {r.amount_fen} fen above {cap} fen (device-seconds at the offered price)")
    return why


def vat_of(gross: int, vat: Decimal = DEFAULT_VAT) -> int:
    return int((Decimal(gross) * vat / (1 + vat)).quantize(Decimal(1), ROUND_HALF_EVEN))


def origin_entry(r: UsageReceipt, *, usage_id: str, job_id: str, gross: int, reserved: int | None,
                 charge_from: str, escrow: str, vat_account: str, revenue: str, currency: str = "CNY") -> list[Transfer]:
    """The origin's linked entry for one receipt.

    The tenant pays ``gross`` (our price) exactly as for local usage (same ids as the billing
    loop: ``budget:<job>:settle``, ``<usage>:charge``, ``<usage>:vat``); we owe the peer the
    receipt's amount; the rest (or the shortfall) is our margin. An absorbed outcome (lease
    expired, fenced) charges no tenant: the platform owes the peer from its revenue.
    """
    rid = r.receipt_id
    owe = clearing_account(r.issuer, currency)
    out: list[Transfer] = []
    if r.outcome in ABSORBED_OUTCOMES or gross == 0:
        if r.amount_fen > 0:
            out.append(Transfer(f"fedrc:{rid}:owe", revenue, owe, r.amount_fen, currency, ref=rid,
                                memo="absorbed: delegated attempt stopped by infrastructure"))
        return out
    posted = 0
    if reserved is not None:
        from yungu.engines.ledger.model import TransferKind

        posted = min(gross, reserved)
        kind = TransferKind.POST if posted > 0 else TransferKind.VOID
        out.append(Transfer(f"budget:{job_id}:settle", "", "", posted, currency, kind,
                            pending_id=f"budget:{job_id}", ref=f"job:{job_id}"))
    if gross - posted > 0:
        out.append(Transfer(f"{usage_id}:charge", charge_from, escrow, gross - posted, currency, ref=usage_id,
                            memo="usage charge (delegated)"))
    tax = vat_of(gross)
    if tax > 0:
        out.append(Transfer(f"{usage_id}:vat", escrow, vat_account, tax, currency, ref=usage_id))
    if r.amount_fen > 0:
        out.append(Transfer(f"fedrc:{rid}:owe", escrow, owe, r.amount_fen, currency, ref=rid,
                            memo=f"owed to {r.issuer} for {r.request_id}"))
    margin = gross - tax - r.amount_fen
    if margin > 0:
        out.append(Transfer(f"fedrc:{rid}:margin", escrow, revenue, margin, currency, ref=rid))
    elif margin < 0:
        out.append(Transfer(f"fedrc:{rid}:margin", revenue, escrow, -margin, currency, ref=rid,
                            memo="resold below cost"))
    return out


def peer_entry(r: UsageReceipt, *, receivable_from: str, currency: str = "CNY") -> list[Transfer]:
    """The peer's entry: the origin's account on the peer was charged by the peer's own billing
    (its arrears: a receivable); move that receivable into the clearing account."""
    if r.amount_fen <= 0:
        return []
    return [Transfer(f"fedrc:{r.receipt_id}:receivable", clearing_account(r.origin, currency), receivable_from,
                     r.amount_fen, currency, ref=r.receipt_id, memo=f"receivable from {r.origin} for {r.request_id}")]

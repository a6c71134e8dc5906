"""How one usage record is booked: a pure plan, one linked ledger entry.

Inputs are what the ledger says now (the job's open budget holds, how much more the wallet
may be debited) and the rated charge; the output is the entry and what the tenant pays::

    holds (wallet -> escrow, pending)  --post up to the charge, void the rest-->  escrow
    the rest of the charge            --wallet, while it can pay-->               escrow
                                      --arrears (post-paid tenants only)-->       escrow
    escrow  --VAT / commission / provider share of what the tenant pays-->  vat, revenue, provider

A **prepaid** tenant has no arrears: it never pays more than its holds plus what its wallet
can still give (its balance plus its credit line). An overrun beyond that — a job the
platform could not stop in time, e.g. while the platform itself was down — is *written off*:
not charged to the tenant; the platform pays the provider's share of it out of its own
revenue (``<usage>:writeoff``), so the provider is paid for every second it ran.

Every transfer id derives from the usage id or the hold id, and all legs are linked (all or
nothing), so an entry is either wholly in the ledger or not at all; and no two different
entries for one usage can both be (see the provider leg below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from yungu.engines.ledger.accounts import receivable, settle_id, sys_account
from yungu.engines.ledger.model import Transfer, TransferKind
from yungu.engines.ledger.rating import DEFAULT_VAT, split_charge


@dataclass(frozen=True)
class Hold:
    """An open budget hold of the job: ``amount`` fen still reserved on the wallet."""

    id: str
    amount: int


@dataclass(frozen=True)
class Payer:
    """Who pays the part of a charge the holds do not cover.

    ``wallet_room``: how much more the wallet may be debited now (available + credit line);
    ``arrears``: the post-paid tenant's arrears account, or "" for a prepaid tenant.
    """

    wallet: str
    wallet_room: int
    arrears: str = ""


@dataclass(frozen=True)
class Booking:
    transfers: tuple[Transfer, ...]
    charged: int  # what the tenant pays, fen (holds posted + wallet + arrears)
    written_off: int  # rated - charged: a prepaid overrun the tenant is not charged for


def plan_booking(usage_id: str, job_id: str, rated: int, holds: Sequence[Hold], payer: Payer, provider_id: str,
                 currency: str = "CNY", vat: Decimal = DEFAULT_VAT) -> Booking:
    """The linked entry that books ``rated`` fen of usage (see the module docstring)."""
    if rated < 0:
        raise ValueError("a charge cannot be negative")
    ref = f"job:{job_id}"
    out: list[Transfer] = []
    left = rated
    for h in holds:
        take = min(left, h.amount)
        left -= take
        kind = TransferKind.POST if take > 0 else TransferKind.VOID
        out.append(Transfer(settle_id(h.id), "", "", take, currency, kind, pending_id=h.id, ref=ref))
    escrow = sys_account("escrow", currency)
    from_wallet = min(left, max(0, payer.wallet_room))
    left -= from_wallet
    from_arrears = left if payer.arrears else 0
    left -= from_arrears
    if from_wallet:
        out.append(Transfer(f"{usage_id}:charge", payer.wallet, escrow, from_wallet, currency, ref=usage_id,
                            memo="usage charge"))
    if from_arrears:
        out.append(Transfer(f"{usage_id}:arrears", payer.arrears, escrow, from_arrears, currency, ref=usage_id,
                            memo="usage charge beyond the wallet (owed)"))
    charged = rated - left
    split = split_charge(charged, vat)
    # The provider's leg is in every entry that moves money, and it names where the money came
    # from: an entry planned differently (other holds, another payer) for the same usage can
    # therefore never be applied beside this one — the ledger answers its provider leg with
    # ``exists_with_different_fields`` and the linked entry fails as a whole.
    sources = (f"rated {rated}: holds {rated - left - from_wallet - from_arrears}, wallet {from_wallet}, "
               f"arrears {from_arrears}, written off {left}")
    revenue = sys_account("revenue", currency)
    for suffix, account, amount, memo in (("vat", sys_account("vat", currency), split.tax, ""),
                                          ("fee", revenue, split.commission, ""),
                                          ("provider", receivable(provider_id), split.provider, sources)):
        if amount > 0:
            out.append(Transfer(f"{usage_id}:{suffix}", escrow, account, amount, currency, ref=usage_id, memo=memo))
    if left:  # written off: the provider still gets its share of the whole run, from the platform
        top_up = split_charge(rated, vat).provider - split.provider
        if top_up > 0 and charged == 0:  # nothing charged: the provider's leg comes from revenue
            out.append(Transfer(f"{usage_id}:provider", revenue, receivable(provider_id), top_up, currency,
                                ref=usage_id, memo=f"written off by the platform; {sources}"))
        elif top_up > 0:
            out.append(Transfer(f"{usage_id}:writeoff", revenue, receivable(provider_id), top_up, currency,
                                ref=usage_id, memo=f"prepaid overrun written off by the platform; {sources}"))
    return Booking(tuple(out), charged, left)


def charged_of(legs: Sequence[Transfer], currency: str = "CNY") -> int:
    """What the tenant paid, from the legs of an entry already in the ledger (``ref`` = usage):
    everything the entry paid out of escrow."""
    escrow = sys_account("escrow", currency)
    return sum(t.amount for t in legs if t.debit_account == escrow and t.id.rsplit(":", 1)[-1] in ("vat", "fee", "provider"))

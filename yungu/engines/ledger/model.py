"""Ledger values: accounts, transfers and the outcome of applying one.

Money is an ``int`` of minor units (fen for CNY). A transfer moves ``amount`` from its
debit account to its credit account, so every transfer is balanced by construction and the
balances of one currency always sum to zero (TigerBeetle's model: ``safety.md``,
``two-phase-transfers.md``). Multi-leg journal entries are sequences of transfers applied
all-or-nothing (``linked``).

Balance convention: ``balance = credits_posted - debits_posted``. A tenant wallet holds a
positive balance after a top-up (debit ``external``, credit the wallet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_ID_LEN = 128
MAX_AMOUNT = 10**15  # 10 trillion CNY in fen: far above any real transfer, far below int64


class AccountKind(StrEnum):
    EXTERNAL = "external"  # the bank / outside world: source and sink of real money
    TENANT_WALLET = "tenant_wallet"  # prepaid funds or credit line of a tenant
    TENANT_ARREARS = "tenant_arrears"  # usage a tenant owes beyond its wallet (receivable)
    PROVIDER_RECEIVABLE = "provider_receivable"  # what the platform owes a provider
    PLATFORM_REVENUE = "platform_revenue"  # commission
    TAX_PAYABLE = "tax_payable"  # output VAT collected
    ESCROW = "escrow"  # reservations and budgets held between pending and post
    PEER_CLEARING = "peer_clearing"  # what a peer platform owes us (negative: we owe it)


class TransferKind(StrEnum):
    SINGLE = "single"  # posted at once
    PENDING = "pending"  # phase one: reserves the amount on the debit account
    POST = "post"  # phase two: moves up to the pending amount, releases the rest
    VOID = "void"  # phase two: releases the whole pending amount
    EXPIRE = "expire"  # phase two performed by the ledger when a pending times out


class PendingState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class Result(StrEnum):
    """The outcome of one transfer. ``ok``/``exists`` succeed; everything else changed nothing."""

    OK = "ok"
    EXISTS = "exists"  # same id, same fields: the original result stands
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    INVALID = "invalid"  # malformed: bad id, non-positive amount, too many decimals...
    ACCOUNTS_MUST_DIFFER = "accounts_must_differ"
    UNKNOWN_ACCOUNT = "unknown_account"
    CURRENCY_MISMATCH = "currency_mismatch"
    EXCEEDS_LIMIT = "exceeds_limit"  # would overdraw an account beyond its credit line
    PENDING_NOT_FOUND = "pending_not_found"
    PENDING_ALREADY_CLOSED = "pending_already_closed"  # posted, voided or expired
    PENDING_MISMATCH = "pending_mismatch"  # post/void names other accounts or more than pending
    LINKED_FAILED = "linked_failed"  # another transfer of the same linked entry failed

    @property
    def ok(self) -> bool:
        return self in (Result.OK, Result.EXISTS)


@dataclass(frozen=True)
class Account:
    """An account of one currency. ``credit_limit`` None means unlimited (system accounts).

    ``credit_limit`` 0 means no overdraft: available balance may not go below zero.
    """

    id: str
    kind: AccountKind
    currency: str = "CNY"
    credit_limit: int | None = 0
    owner: str = ""  # tenant id, provider id, peer platform id
    name: str = ""


@dataclass
class Balance:
    """Running totals of one account (mutable working state inside a ``Book``)."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def posted(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What may still be debited: pending debits are already spoken for."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    def copy(self) -> Balance:
        return Balance(self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A client-chosen-id transfer. For ``post``/``void`` the accounts may be left empty
    (they are taken from the pending transfer); ``amount`` 0 on a post means "all of it".
    """

    id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str = "CNY"
    kind: TransferKind = TransferKind.SINGLE
    pending_id: str = ""
    timeout_s: int = 0  # pending only; 0 = never expires
    ref: str = ""  # usage record, invoice, reservation, statement the transfer books
    memo: str = ""

    def same_fields(self, other: Transfer) -> bool:
        return self == other


@dataclass(frozen=True, slots=True)
class Recorded:
    """A transfer as stored: the request plus what the ledger decided about it."""

    transfer: Transfer
    created_at: datetime
    amount: int  # the amount actually moved/reserved (a post of 0 resolves to the pending amount)
    debit_account: str
    credit_account: str
    expires_at: datetime | None = None
    state: PendingState | None = None  # pending transfers only


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    result: Result
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result.ok

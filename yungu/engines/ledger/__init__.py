"""Ledger rules: double-entry transfers, two-phase reservations, rating, invoices, netting."""

from yungu.engines.ledger.book import Book, check_account, check_shape, valid_id
from yungu.engines.ledger.model import (
    Account,
    AccountKind,
    Balance,
    Outcome,
    PendingState,
    Recorded,
    Result,
    Transfer,
    TransferKind,
)

__all__ = [
    "Account", "AccountKind", "Balance", "Book", "Outcome", "PendingState", "Recorded", "Result",
    "Transfer", "TransferKind", "check_account", "check_shape", "valid_id",
]

"""The ledger rules on literals: each bad input is refused and changes nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from yungu.engines.ledger import Account, AccountKind, Book, Result, Transfer, TransferKind

NOW = datetime(2026, 3, 1, tzinfo=UTC)
P, POST, VOID = TransferKind.PENDING, TransferKind.POST, TransferKind.VOID


def book() -> Book:
    b = Book()
    b.open(Account("bank", AccountKind.EXTERNAL, credit_limit=None))
    b.open(Account("w", AccountKind.TENANT_WALLET, credit_limit=0))
    b.open(Account("c", AccountKind.TENANT_WALLET, credit_limit=500))
    b.open(Account("e", AccountKind.ESCROW, credit_limit=None))
    b.open(Account("usd", AccountKind.TENANT_WALLET, "USD", credit_limit=None))
    b.apply(Transfer("fund", "bank", "w", 1000), NOW)
    b.apply(Transfer("hold", "w", "e", 600, kind=P, timeout_s=60), NOW)
    return b


BAD = [
    ("zero amount", Transfer("t", "w", "e", 0), Result.INVALID),
    ("negative amount", Transfer("t", "w", "e", -5), Result.INVALID),
    ("float-like amount", Transfer("t", "w", "e", 1.5), Result.INVALID),  # type: ignore[arg-type]
    ("bad id", Transfer("has space", "w", "e", 5), Result.INVALID),
    ("unknown account", Transfer("t", "w", "nope", 5), Result.UNKNOWN_ACCOUNT),
    ("same account", Transfer("t", "w", "w", 5), Result.ACCOUNTS_MUST_DIFFER),
    ("currency mismatch", Transfer("t", "bank", "usd", 5), Result.CURRENCY_MISMATCH),
    ("unknown currency", Transfer("t", "w", "e", 5, "XXX"), Result.INVALID),
    ("overdraft: pending counts", Transfer("t", "w", "e", 401), Result.EXCEEDS_LIMIT),
    ("credit line exceeded", Transfer("t", "c", "e", 501), Result.EXCEEDS_LIMIT),
    ("replay with other fields", Transfer("fund", "bank", "w", 1001), Result.EXISTS_WITH_DIFFERENT_FIELDS),
    ("post of unknown pending", Transfer("t", "", "", 0, kind=POST, pending_id="nope"), Result.PENDING_NOT_FOUND),
    ("post more than pending", Transfer("t", "", "", 601, kind=POST, pending_id="hold"), Result.PENDING_MISMATCH),
    ("post to other accounts", Transfer("t", "c", "e", 10, kind=POST, pending_id="hold"), Result.PENDING_MISMATCH),
    ("partial void", Transfer("t", "", "", 10, kind=VOID, pending_id="hold"), Result.PENDING_MISMATCH),
    ("post a non-pending", Transfer("t", "", "", 0, kind=POST, pending_id="fund"), Result.PENDING_NOT_FOUND),
    ("timeout on single", Transfer("t", "w", "e", 5, timeout_s=3), Result.INVALID),
    ("client-made expire", Transfer("t", "", "", 0, kind=TransferKind.EXPIRE, pending_id="hold"), Result.INVALID),
]


@pytest.mark.parametrize(("why", "transfer", "result"), BAD, ids=[b[0] for b in BAD])
def test_bad_transfer_is_refused_and_changes_nothing(why: str, transfer: Transfer, result: Result) -> None:
    b = book()
    before = copy.deepcopy((b.balances, b.transfers, b.closed))
    out = b.apply(transfer, NOW)
    assert out.result is result, out
    assert (b.balances, b.transfers, b.closed) == before


def test_credit_line_allows_negative_balance_down_to_the_limit() -> None:
    b = book()
    assert b.apply(Transfer("t", "c", "e", 500), NOW).result is Result.OK
    assert b.balances["c"].posted == -500


def test_partial_post_releases_the_rest_and_second_close_is_refused() -> None:
    b = book()
    assert b.apply(Transfer("p1", "", "", 250, kind=POST, pending_id="hold"), NOW).ok
    w = b.balances["w"]
    assert (w.posted, w.debits_pending, w.available) == (750, 0, 750)
    assert b.apply(Transfer("v1", "", "", 0, kind=VOID, pending_id="hold"), NOW).result is Result.PENDING_ALREADY_CLOSED
    assert b.apply(Transfer("p1", "", "", 250, kind=POST, pending_id="hold"), NOW).result is Result.EXISTS


def test_expiry_releases_the_hold_and_blocks_a_late_post() -> None:
    b = book()
    later = NOW + timedelta(seconds=61)
    assert b.apply(Transfer("p1", "", "", 0, kind=POST, pending_id="hold"), later).result is Result.PENDING_ALREADY_CLOSED
    outs = b.expire_due(later)
    assert [o.id for o in outs] == ["hold:expired"]
    assert b.balances["w"].available == 1000 and b.balances["e"].posted == 0
    assert b.expire_due(later) == []


def test_linked_entry_is_all_or_nothing() -> None:
    b = book()
    before = copy.deepcopy(b.balances)
    outs = b.apply_linked([Transfer("a", "w", "e", 100), Transfer("b", "w", "e", 10_000)], NOW)
    assert [o.result for o in outs] == [Result.LINKED_FAILED, Result.EXCEEDS_LIMIT]
    assert b.balances == before and "a" not in b.transfers


def test_balances_sum_to_zero_per_currency() -> None:
    b = book()
    b.apply(Transfer("x", "c", "w", 300), NOW)
    assert sum(bal.posted for a, bal in b.balances.items() if b.accounts[a].currency == "CNY") == 0


def test_account_reopen_same_is_exists_different_is_conflict() -> None:
    b = book()
    assert b.open(Account("w", AccountKind.TENANT_WALLET, credit_limit=0)).result is Result.EXISTS
    assert b.open(Account("w", AccountKind.TENANT_WALLET, credit_limit=9)).result is Result.EXISTS_WITH_DIFFERENT_FIELDS
    assert b.open(Account("z", AccountKind.TENANT_WALLET, credit_limit=-1)).result is Result.INVALID

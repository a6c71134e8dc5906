"""The PostgreSQL set-based fast path (issue 15.4) decides exactly as the general path.

Hypothesis draws sequences of batches (clean ones the fast path takes, and messy ones with
repeated ids, overdrafts, unknown accounts, other currencies, malformed transfers,
pending/post/void and timed-out holds, linked or not) and submits each batch to two stores:
the reference, SQLite (which only has the general path: the ``Book`` rules transfer by
transfer), and PostgreSQL with the fast path on. Per-transfer outcomes (result and detail),
balances and the recorded transfers must be identical after every batch; both paths must
have been taken.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yungu.adapters.ledger.store import LedgerStore
from yungu.adapters.store.db import create_engine, migrate
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Account, AccountKind, Transfer, TransferKind

pytestmark = pytest.mark.postgres

_example = itertools.count()
WALLETS = 4
# name -> (currency, credit_limit); "ghost" is never opened
ACCOUNTS = {"bank": ("CNY", None), "usd": ("USD", 0), **{f"w{i}": ("CNY", (0, 0, 50, None)[i]) for i in range(WALLETS)}}
NAMES = [*ACCOUNTS, "ghost"]
TEXT = st.sampled_from(["", "usage:1", "退款", "tab\there", "new\nline", "back\\slash", "\\N", "cr\r"])


@st.composite
def clean_batch(draw: st.DrawFn) -> tuple[bool, list[tuple[object, ...]]]:
    """Single/pending transfers between wallets and the bank, mostly new and within limits."""
    n = draw(st.integers(1, 12))
    specs = []
    for _ in range(n):
        d, c = draw(st.sampled_from([("bank", "w0"), ("w0", "w1"), ("w1", "w2"), ("w2", "w0"), ("w3", "bank"),
                                     ("w1", "bank"), ("w0", "w3")]))
        kind = draw(st.sampled_from([TransferKind.SINGLE, TransferKind.SINGLE, TransferKind.PENDING]))
        specs.append((draw(st.sampled_from(["new"] * 5 + ["old"])), d, c, draw(st.integers(1, 300)), "CNY", kind,
                      draw(st.sampled_from([0, 5])) if kind is TransferKind.PENDING else 0, draw(TEXT)))
    return draw(st.booleans()), specs


@st.composite
def messy_batch(draw: st.DrawFn) -> tuple[bool, list[tuple[object, ...]]]:
    """Anything: replays (same or different fields), unknown accounts, overdrafts, post/void."""
    n = draw(st.integers(1, 10))
    specs = []
    for _ in range(n):
        kind = draw(st.sampled_from(list(TransferKind)))
        specs.append((
            draw(st.sampled_from(["new", "old", "old"])),  # a fresh id, or one from a small shared pool
            draw(st.sampled_from([*NAMES, ""])), draw(st.sampled_from([*NAMES, ""])),
            draw(st.sampled_from([0, 1, 40, 299, 600, 10**6, -5])),
            draw(st.sampled_from(["CNY", "CNY", "USD", "XXX"])), kind, draw(st.sampled_from([0, 0, 5, -1])),
            draw(TEXT),
        ))
    return draw(st.booleans()), specs


@pytest.fixture
def stores(pg_url: str, tmp_path: Path) -> tuple[LedgerStore, LedgerStore, FixedClock]:
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    out = []
    for url in (f"sqlite:///{tmp_path / 'ref.db'}", pg_url):
        engine = create_engine(url)
        migrate(engine)
        out.append(LedgerStore(engine, clock))
    ref, pg = out
    assert not ref._set_based and pg._set_based
    return ref, pg, clock


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    funding=st.lists(st.integers(0, 1_000), min_size=WALLETS, max_size=WALLETS),
    batches=st.lists(st.tuples(st.one_of(clean_batch(), messy_batch()), st.sampled_from([0, 0, 3, 10]), st.booleans()),
                     min_size=1, max_size=6),
    data=st.data(),
)
def test_set_based_path_gives_the_same_outcomes_and_balances(
    stores: tuple[LedgerStore, LedgerStore, FixedClock],
    funding: list[int],
    batches: list[tuple[tuple[bool, list[tuple[object, ...]]], int, bool]],
    data: st.DataObject,
) -> None:
    ref, pg, clock = stores
    p = f"x{next(_example)}."  # each example has its own accounts and ids in the same databases
    acc = {name: p + name for name in NAMES}
    accounts = [Account(acc[n], AccountKind.EXTERNAL if n == "bank" else AccountKind.TENANT_WALLET, cur, lim, p)
                for n, (cur, lim) in ACCOUNTS.items()]
    fund = [Transfer(f"{p}fund{i}", acc["bank"], acc[f"w{i}"], f) for i, f in enumerate(funding) if f]
    for s in (ref, pg):
        s.open_accounts(accounts)
        s.submit(fund)
    fresh = itertools.count()
    for (linked, specs), advance, again in batches:
        clock.advance(advance)
        batch = []
        for idk, d, c, amount, cur, kind, timeout, text in specs:
            tid = f"{p}n{next(fresh)}" if idk == "new" else f"{p}o{data.draw(st.integers(0, 7))}"
            pend = f"{p}o{data.draw(st.integers(0, 7))}" if kind in (TransferKind.POST, TransferKind.VOID) else ""
            batch.append(Transfer(tid, acc.get(str(d), ""), acc.get(str(c), ""), amount, str(cur),  # type: ignore[arg-type]
                                  kind, pend, timeout, ref=str(text), memo=str(text)[::-1]))  # type: ignore[arg-type]
        for _ in range(1 + again):  # ``again``: the client retries the whole batch
            want = ref.submit(batch, linked=linked)
            got = pg.submit(batch, linked=linked)
            assert got == want, batch
            assert pg.accounts(owner=p) == ref.accounts(owner=p)
    for a in acc.values():
        assert pg.history(a, limit=1000) == ref.history(a, limit=1000)
    assert sum(b.posted for _, b in pg.accounts(owner=p)) == 0


def test_both_paths_were_taken(stores: tuple[LedgerStore, LedgerStore, FixedClock]) -> None:
    """The fast path commits clean batches; one overdraft in a batch sends it down the general path."""
    ref, pg, _ = stores
    for s in (ref, pg):
        s.open_accounts([Account("bank", AccountKind.EXTERNAL, credit_limit=None),
                         Account("w", AccountKind.TENANT_WALLET, credit_limit=0)])
    fund = [Transfer("f1", "bank", "w", 100)]
    ok = [Transfer("s1", "w", "bank", 60), Transfer("f2", "bank", "w", 5)]
    # a credit earlier in the batch would cover s2, but the gate counts only the balance before it
    early = [Transfer("f3", "bank", "w", 10), Transfer("s2", "w", "bank", 50)]
    over = [Transfer("s3", "w", "bank", 3), Transfer("s4", "w", "bank", 30), Transfer("f4", "bank", "w", 5)]
    for batch, fast in ((fund, 1), (ok, 2), (early, 2), (over, 2)):
        assert pg.submit(batch) == ref.submit(batch)
        assert pg._set_based_batches == fast  # the gate refused ``early`` and ``over``: the rules decided
    assert pg.account("w")[1].posted == ref.account("w")[1].posted == 100 - 60 + 5 + 10 - 50 - 3 + 5
    assert [o.result.value for o in pg.submit(over)] == ["exists", "exceeds_limit", "exists"]
    assert pg._set_based_batches == 2
    assert pg.accounts() == ref.accounts()

"""The call auction against an LP reference (HiGHS) on random books, plus bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import highspy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yungu.domain.errors import InvalidInput
from yungu.engines.market import Order, Product, clear, validate_order
from yungu.engines.market.multiregion import RegionAsk, RegionBid, clear_multiregion


def lp_max_surplus(bids: list[Order], asks: list[Order]) -> tuple[int, int]:
    """Reference: max sum b x - sum a y s.t. sum x = sum y, bounds; then the max volume among optima."""
    def solve(volume_weight: float, fix_surplus: float | None) -> tuple[float, float]:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        n = len(bids) + len(asks)
        upper = np.array([o.quantity for o in bids] + [o.quantity for o in asks], dtype=float)
        h.addVars(n, np.zeros(n), upper)
        surplus = np.array([o.price_fen for o in bids] + [-o.price_fen for o in asks], dtype=float)
        vol = np.array([1.0] * len(bids) + [0.0] * len(asks))
        cost = -(surplus if fix_surplus is None else vol * volume_weight)
        h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        h.addRow(0, 0, n, np.arange(n, dtype=np.int32), np.array([1.0] * len(bids) + [-1.0] * len(asks)))
        if fix_surplus is not None:
            h.addRow(fix_surplus - 1e-6, highspy.kHighsInf, n, np.arange(n, dtype=np.int32), surplus)
        h.run()
        x = np.array(h.getSolution().col_value)
        return float(surplus @ x), float(vol @ x)

    s, _ = solve(0, None)
    _s2, v = solve(1.0, round(s))
    return round(s), round(v)


orders = st.lists(st.tuples(st.integers(1, 20), st.integers(0, 50)), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(orders, orders)
def test_clearing_equals_the_lp_reference(raw_bids: list[tuple[int, int]], raw_asks: list[tuple[int, int]]) -> None:
    bids = [Order(f"b{i:03d}", "t", q, p) for i, (q, p) in enumerate(raw_bids)]
    asks = [Order(f"a{i:03d}", "p", q, p, "pool") for i, (q, p) in enumerate(raw_asks)]
    c = clear(bids, asks)
    surplus, volume = lp_max_surplus(bids, asks) if bids and asks else (0, 0)
    assert (c.surplus_fen, c.volume) == (surplus, volume)
    assert int(c.bid_fills.sum()) == int(c.ask_fills.sum()) == int(c.trade_qty.sum()) == c.volume
    if c.volume:
        p = c.price_fen
        assert p is not None
        # Uniform price is competitive: nobody trades at a loss, nobody priced in is left out.
        for o, f in zip(bids, c.bid_fills, strict=True):
            assert f == 0 or o.price_fen >= p
            assert f == o.quantity or o.price_fen <= p
        for o, f in zip(asks, c.ask_fills, strict=True):
            assert f == 0 or o.price_fen <= p
            assert f == o.quantity or o.price_fen >= p
        for t in c.trades(bids, asks):
            assert t.price_fen == p


def test_textbook_book() -> None:
    bids = [Order("b1", "t", 5, 100), Order("b2", "t", 3, 80), Order("b3", "t", 4, 50)]
    asks = [Order("a1", "p", 4, 40, "x"), Order("a2", "p", 6, 70, "x"), Order("a3", "p", 2, 90, "x")]
    c = clear(bids, asks)
    assert (c.price_fen, c.volume, c.surplus_fen) == (70, 8, 300)
    assert c.bid_fills.tolist() == [5, 3, 0] and c.ask_fills.tolist() == [4, 4, 0]


def test_no_cross_no_trade() -> None:
    c = clear([Order("b", "t", 5, 10)], [Order("a", "p", 5, 11, "x")])
    assert c.price_fen is None and c.volume == 0


PRODUCT = Product("beijing", "intelligent", datetime(2026, 3, 1, tzinfo=UTC),
                  datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=4), reserve_fen=500)


@pytest.mark.parametrize(("order", "side"), [
    (Order("b", "t", 1, 499), "bid"),  # below reserve
    (Order("b", "t", 0, 900), "bid"),  # zero quantity
    (Order("b", "t", -3, 900), "bid"),  # negative quantity
    (Order("a", "p", 1, 900), "ask"),  # offer without a pool
])
def test_bad_orders_are_refused(order: Order, side: str) -> None:
    with pytest.raises(InvalidInput):
        validate_order(order, PRODUCT, side)


def test_multiregion_lp_routes_flexible_bids_to_the_cheaper_region() -> None:
    bids = [RegionBid("flex", 10, 1000, ("bj", "gz")), RegionBid("bj-only", 5, 900, ("bj",))]
    asks = [RegionAsk("bj1", "bj", 6, 600), RegionAsk("gz1", "gz", 10, 300)]
    c = clear_multiregion(bids, asks)
    assert c.bid_fills[("flex", "gz")] == 10
    assert c.bid_fills[("bj-only", "bj")] == 5
    assert c.surplus_fen == 10 * (1000 - 300) + 5 * (900 - 600)

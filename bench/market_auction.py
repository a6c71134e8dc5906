"""Call-auction clearing time over 100,000 orders (issue 5 target: < 200 ms).

    python bench/market_auction.py [--orders 100000]

Rows: the exact sort-based clearing from Order objects (``clear``) and from arrays
(``clear_arrays``); the baseline in the same run is the same single-product problem as an
LP solved by HiGHS. The multi-region case (bids acceptable in several regions), where an LP
is needed, is reported separately.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import highspy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yungu.engines.market import Order, clear, clear_arrays
from yungu.engines.market.multiregion import RegionAsk, RegionBid, clear_multiregion


def book(n: int, seed: int = 1) -> tuple[list[Order], list[Order]]:
    rng = random.Random(seed)
    bids = [
        Order(f"b{i:07d}", f"t{i % 500}", rng.randint(1, 64), rng.randint(800, 3200)) for i in range(n // 2)
    ]
    asks = [
        Order(f"a{i:07d}", f"p{i % 50}", rng.randint(1, 256), rng.randint(600, 3000), f"pool{i % 50}")
        for i in range(n - n // 2)
    ]
    return bids, asks


def lp(bids: list[Order], asks: list[Order]) -> float:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    n = len(bids) + len(asks)
    h.addVars(n, np.zeros(n), np.array([o.quantity for o in bids + asks], dtype=float))
    cost = np.array([-o.price_fen for o in bids] + [o.price_fen for o in asks], dtype=float)
    h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
    h.addRow(0, 0, n, np.arange(n, dtype=np.int32), np.array([1.0] * len(bids) + [-1.0] * len(asks)))
    h.run()
    return -h.getInfo().objective_function_value


def timed(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    out = None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=100_000)
    args = ap.parse_args()
    bids, asks = book(args.orders)
    arrays = [
        np.array([getattr(o, f) for o in side], dtype=np.int64)
        for side in (bids, asks)
        for f in ("price_fen", "quantity")
    ]
    t_obj, c = timed(lambda: clear(bids, asks), 5)
    t_arr, c2 = timed(lambda: clear_arrays(*arrays), 5)
    t_lp, lp_surplus = timed(lambda: lp(bids, asks), 1)
    assert c.surplus_fen == c2.surplus_fen == round(lp_surplus), (c.surplus_fen, lp_surplus)  # type: ignore[attr-defined]
    print(f"\nsingle-product call auction, {args.orders:,} orders (median of 5; LP once)")
    print(f"{'method':<36} {'ms':>9} {'vs LP':>8} {'<200ms':>7}")
    for name, t in (
        ("sort-based clear(Order objects)", t_obj),
        ("sort-based clear_arrays(numpy)", t_arr),
        ("baseline: HiGHS LP", t_lp),
    ):
        print(f"{name:<36} {t * 1000:>9.1f} {t_lp / t:>7.1f}x {'yes' if t < 0.2 else 'NO':>7}")
    print(
        f"clearing price {c.price_fen} fen/device-hour, volume {c.volume:,} device-windows, "  # type: ignore[attr-defined]
        f"surplus {c.surplus_fen:,} fen (equals LP optimum)"
    )  # type: ignore[attr-defined]

    rng = random.Random(2)
    regions = ["beijing", "shanghai", "guangzhou", "guiyang"]
    for n in (1_000, 10_000):
        rb = [
            RegionBid(
                f"b{i}",
                rng.randint(1, 64),
                rng.randint(800, 3200),
                tuple(rng.sample(regions, rng.randint(1, 3))),
            )
            for i in range(n // 2)
        ]
        ra = [
            RegionAsk(f"a{i}", rng.choice(regions), rng.randint(1, 256), rng.randint(600, 3000))
            for i in range(n - n // 2)
        ]
        t, rc = timed(lambda rb=rb, ra=ra: clear_multiregion(rb, ra), 1)
        print(
            f"multi-region LP (HiGHS), {n:>6,} orders, 4 regions: {t * 1000:>8.1f} ms, prices {rc.price_fen}"
        )  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()

"""A periodic call auction per product with one uniform clearing price.

A product is (region, accelerator class, time window). Providers ask (pool, devices,
minimum price per device-hour); tenants bid (devices, maximum price). The auction trades
every unit whose bid is at least its ask, which maximises the traded surplus
``sum(bid - ask)`` (units with bid == ask add zero surplus and are traded, so the volume is
the largest among surplus maximisers). The price is the midpoint (rounded down to the fen)
of the competitive interval ``[max(last ask, first rejected bid), min(last bid, first
rejected ask)]``: every accepted bid is >= it and every accepted ask <= it.

The clearing is exact and sort-based: O(n log n) in numpy, no solver. At the margin, equal
prices are served in order-id order (ids are time-ordered UUIDv7s, so that is time priority).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from yungu.domain.errors import InvalidInput

I64 = npt.NDArray[np.int64]
MAX_QTY = 10**9
MAX_PRICE = 10**12  # fen per device-hour


@dataclass(frozen=True)
class Product:
    region: str
    accelerator_class: str
    window_start: datetime
    window_end: datetime
    reserve_fen: int = 0  # bids and asks below the reserve price are refused

    @property
    def key(self) -> str:
        return f"{self.region}/{self.accelerator_class}/{self.window_start.isoformat()}"

    @property
    def hours(self) -> int:
        return max(1, int((self.window_end - self.window_start).total_seconds()) // 3600)


@dataclass(frozen=True)
class Order:
    id: str
    party: str  # tenant (bids) or provider (asks)
    quantity: int  # devices for the whole window
    price_fen: int  # per device-hour: max for bids, min for asks
    pool_id: str = ""  # asks only


@dataclass(frozen=True)
class Trade:
    bid_id: str
    ask_id: str
    quantity: int
    price_fen: int


@dataclass(frozen=True)
class Clearing:
    price_fen: int | None  # None when nothing trades
    volume: int
    surplus_fen: int  # sum over traded units of (bid - ask)
    bid_fills: I64  # filled quantity per bid, in input order
    ask_fills: I64
    trade_bid: I64  # index into the bid list, one entry per trade
    trade_ask: I64
    trade_qty: I64

    def trades(self, bids: Sequence[Order], asks: Sequence[Order]) -> list[Trade]:
        assert self.price_fen is not None or not len(self.trade_qty)
        p = self.price_fen or 0
        return [Trade(bids[b].id, asks[a].id, int(q), p)
                for b, a, q in zip(self.trade_bid.tolist(), self.trade_ask.tolist(), self.trade_qty.tolist(),
                                   strict=True)]


def validate_order(o: Order, product: Product, side: str) -> None:
    if isinstance(o.quantity, bool) or not isinstance(o.quantity, int) or not 0 < o.quantity <= MAX_QTY:
        raise InvalidInput(f"order {o.id}: quantity must be 1..{MAX_QTY}")
    if isinstance(o.price_fen, bool) or not isinstance(o.price_fen, int) or not 0 <= o.price_fen <= MAX_PRICE:
        raise InvalidInput(f"order {o.id}: price must be 0..{MAX_PRICE} fen per device-hour")
    if o.price_fen < product.reserve_fen:
        raise InvalidInput(f"{side} {o.id}: price {o.price_fen} is below the reserve price {product.reserve_fen}")
    if side == "ask" and not o.pool_id:
        raise InvalidInput(f"ask {o.id}: an offer must name its pool")


def clear(bids: Sequence[Order], asks: Sequence[Order]) -> Clearing:
    bp = np.fromiter((o.price_fen for o in bids), np.int64, len(bids))
    bq = np.fromiter((o.quantity for o in bids), np.int64, len(bids))
    ap = np.fromiter((o.price_fen for o in asks), np.int64, len(asks))
    aq = np.fromiter((o.quantity for o in asks), np.int64, len(asks))
    # Ties at the margin: by id (time priority), expressed as the rank of each id.
    border = np.argsort(np.array([o.id for o in bids]), kind="stable") if bids else np.zeros(0, np.int64)
    aorder = np.argsort(np.array([o.id for o in asks]), kind="stable") if asks else np.zeros(0, np.int64)
    brank = np.empty(len(bids), np.int64)
    brank[border] = np.arange(len(bids))
    arank = np.empty(len(asks), np.int64)
    arank[aorder] = np.arange(len(asks))
    return clear_arrays(bp, bq, ap, aq, brank, arank)


def clear_arrays(bp: I64, bq: I64, ap: I64, aq: I64, brank: I64 | None = None, arank: I64 | None = None) -> Clearing:
    """The clearing on plain arrays (prices in fen, quantities); ranks break price ties."""
    nb, na = len(bp), len(ap)
    empty = np.zeros(0, np.int64)
    if nb == 0 or na == 0:
        return Clearing(None, 0, 0, np.zeros(nb, np.int64), np.zeros(na, np.int64), empty, empty, empty)
    brank = np.arange(nb, dtype=np.int64) if brank is None else brank
    arank = np.arange(na, dtype=np.int64) if arank is None else arank
    bsort = np.lexsort((brank, -bp))  # price high to low, then rank
    asort = np.lexsort((arank, ap))  # price low to high, then rank
    sbp, sbq = bp[bsort], bq[bsort]
    sap, saq = ap[asort], aq[asort]
    cb, ca = np.cumsum(sbq), np.cumsum(saq)
    total = int(min(cb[-1], ca[-1]))
    # The price pair is constant between breakpoints, so test the condition at breakpoints only.
    cuts = np.union1d(cb[cb <= total], ca[ca <= total])
    ib = np.searchsorted(cb, cuts, "left")
    ia = np.searchsorted(ca, cuts, "left")
    ok = sbp[ib] >= sap[ia]
    if not ok[0]:
        return Clearing(None, 0, 0, np.zeros(nb, np.int64), np.zeros(na, np.int64), empty, empty, empty)
    # Monotone: ok is True then False. Volume is the last True cut, or inside the first False segment.
    k = int(np.argmin(ok)) if not ok.all() else len(ok)
    volume = int(cuts[k - 1])
    # Trades: the intervals between consecutive cuts up to the volume.
    tcuts = cuts[:k]
    prev = np.concatenate(([0], tcuts[:-1]))
    tq = tcuts - prev
    tb, ta = ib[:k], ia[:k]
    last_b, last_a = int(sbp[tb[-1]]), int(sap[ta[-1]])
    nxt_b_idx = int(np.searchsorted(cb, volume + 1, "left"))
    nxt_a_idx = int(np.searchsorted(ca, volume + 1, "left"))
    lo = max(last_a, int(sbp[nxt_b_idx]) if nxt_b_idx < nb else last_a)
    hi = min(last_b, int(sap[nxt_a_idx]) if nxt_a_idx < na else last_b)
    price = (lo + hi) // 2
    surplus = int(np.sum(tq * (sbp[tb] - sap[ta])))
    bfill_sorted = np.clip(volume - (cb - sbq), 0, sbq)
    afill_sorted = np.clip(volume - (ca - saq), 0, saq)
    bfill = np.empty(nb, np.int64)
    bfill[bsort] = bfill_sorted
    afill = np.empty(na, np.int64)
    afill[asort] = afill_sorted
    return Clearing(price, volume, surplus, bfill, afill, bsort[tb].astype(np.int64), asort[ta].astype(np.int64),
                    tq.astype(np.int64))

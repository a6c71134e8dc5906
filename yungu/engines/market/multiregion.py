"""Bids acceptable in several regions: a linear programme (HiGHS).

When a tenant will take capacity in any of several regions, the products are no longer
independent and the sort-based clearing does not apply. We maximise traded surplus

    max  sum_i sum_r b_i x_ir  -  sum_j a_j y_j
    s.t. sum_i x_ir = sum_{j in r} y_j        (each region balances; dual = region price)
         sum_r x_ir <= q_i,  0 <= y_j <= q_j

with HiGHS. The LP is totally unimodular for integer quantities, so the optimum is
integral; region prices are the duals of the balance rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from yungu.domain.errors import InvalidInput


@dataclass(frozen=True)
class RegionBid:
    id: str
    quantity: int
    price_fen: int
    regions: tuple[str, ...]


@dataclass(frozen=True)
class RegionAsk:
    id: str
    region: str
    quantity: int
    price_fen: int


@dataclass(frozen=True)
class RegionClearing:
    surplus_fen: int
    volume: dict[str, int]
    price_fen: dict[str, int]
    bid_fills: dict[tuple[str, str], int]  # (bid id, region) -> devices
    ask_fills: dict[str, int]


def clear_multiregion(bids: Sequence[RegionBid], asks: Sequence[RegionAsk]) -> RegionClearing:
    regions = sorted({a.region for a in asks})
    ridx = {r: i for i, r in enumerate(regions)}
    xs = [(i, r) for i, b in enumerate(bids) for r in b.regions if r in ridx]
    for b in bids:
        if not b.regions or b.quantity <= 0:
            raise InvalidInput(f"bid {b.id}: needs a positive quantity and at least one region")
    nx, ny = len(xs), len(asks)
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    cost = np.array([-bids[i].price_fen for i, _ in xs] + [a.price_fen for a in asks], dtype=np.float64)
    lower = np.zeros(nx + ny)
    upper = np.array([bids[i].quantity for i, _ in xs] + [a.quantity for a in asks], dtype=np.float64)
    h.addVars(nx + ny, lower, upper)
    h.changeColsCost(nx + ny, np.arange(nx + ny, dtype=np.int32), cost)
    by_region: dict[str, list[int]] = {r: [] for r in regions}
    by_bid: dict[int, list[int]] = {}
    for k, (i, r) in enumerate(xs):
        by_region[r].append(k)
        by_bid.setdefault(i, []).append(k)
    for j, a in enumerate(asks):
        by_region[a.region].append(nx + j)
    for r in regions:  # balance rows
        cols = by_region[r]
        vals = [1.0 if k < nx else -1.0 for k in cols]
        h.addRow(0.0, 0.0, len(cols), np.array(cols, dtype=np.int32), np.array(vals))
    for i, b in enumerate(bids):  # each bid's total across regions
        cols = by_bid.get(i, [])
        if cols:
            h.addRow(-inf, float(b.quantity), len(cols), np.array(cols, dtype=np.int32), np.ones(len(cols)))
    h.run()
    sol = h.getSolution()
    values = [round(v) for v in sol.col_value]
    duals = list(sol.row_dual)
    volume = {r: 0 for r in regions}
    bid_fills: dict[tuple[str, str], int] = {}
    for k, (i, r) in enumerate(xs):
        if values[k]:
            bid_fills[(bids[i].id, r)] = values[k]
            volume[r] += values[k]
    ask_fills = {a.id: values[nx + j] for j, a in enumerate(asks) if values[nx + j]}
    surplus = sum(bids[i].price_fen * values[k] for k, (i, _) in enumerate(xs)) - sum(
        a.price_fen * values[nx + j] for j, a in enumerate(asks))
    prices = {r: abs(round(duals[ridx[r]])) for r in regions}
    return RegionClearing(surplus, volume, prices, bid_fills, ask_fills)

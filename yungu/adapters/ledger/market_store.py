"""Orders, auctions, capacity reservations and the price index in the SQL store.

``run_auction`` is one transaction: it takes the product's open orders, clears them with
the pure engine, records the auction, the trades as capacity reservations, the index point,
and stamps the orders as consumed; a second run for the same product and window finds no
open orders. ``reservations_at`` is the query the scheduler reads to honour reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from yungu.adapters.store.ledger_tables import auctions as AU
from yungu.adapters.store.ledger_tables import capacity_reservations as CR
from yungu.adapters.store.ledger_tables import market_orders as MO
from yungu.adapters.store.ledger_tables import price_index as PI
from yungu.domain.clock import Clock
from yungu.domain.errors import Conflict, InvalidInput
from yungu.engines.market import Order, Product, clear, validate_order
from yungu.engines.market.index import IndexPoint


@dataclass(frozen=True)
class Reservation:
    id: str
    auction_id: str
    tenant_id: str
    provider: str
    pool_id: str
    window_start: datetime
    window_end: datetime
    devices: int
    price_fen: int
    bid_id: str = ""
    ask_id: str = ""


@dataclass(frozen=True)
class AuctionResult:
    id: str
    product: str
    price_fen: int | None
    volume: int
    orders: int
    reservations: list[Reservation]


def _res(r: object) -> Reservation:
    m = r._mapping  # type: ignore[attr-defined]
    return Reservation(m["id"], m["auction_id"], m["tenant_id"], m["provider"], m["pool_id"], m["window_start"],
                       m["window_end"], m["devices"], m["price_fen"], m["bid_id"], m["ask_id"])


class MarketStore:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def place(self, product: Product, side: str, order: Order) -> Order:
        """Place a bid or ask; the same id with the same fields is a no-op, else a conflict."""
        if side not in ("bid", "ask"):
            raise InvalidInput("side must be 'bid' or 'ask'")
        if product.window_end <= product.window_start:
            raise InvalidInput("the window must end after it starts")
        validate_order(order, product, side)
        row = {"id": order.id, "product": product.key, "side": side, "party": order.party, "pool_id": order.pool_id,
               "quantity": order.quantity, "price_fen": order.price_fen, "auction_id": None, "filled": 0,
               "created_at": self.clock.now()}
        with self.engine.begin() as conn:
            old = conn.execute(select(MO).where(MO.c.id == order.id)).first()
            if old is not None:
                same = all(old._mapping[k] == row[k] for k in ("product", "side", "party", "pool_id", "quantity",
                                                               "price_fen"))
                if not same:
                    raise Conflict(f"order {order.id} exists with different fields")
                return order
            try:
                conn.execute(insert(MO).values(**row))
            except IntegrityError as exc:
                raise Conflict(f"order {order.id} was placed concurrently") from exc
        return order

    def open_orders(self, product: Product) -> tuple[list[Order], list[Order]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(MO).where(MO.c.product == product.key, MO.c.auction_id.is_(None))
                                .order_by(MO.c.id)).all()
        bids = [Order(r.id, r.party, r.quantity, r.price_fen) for r in rows if r.side == "bid"]
        asks = [Order(r.id, r.party, r.quantity, r.price_fen, r.pool_id) for r in rows if r.side == "ask"]
        return bids, asks

    def run_auction(self, product: Product) -> AuctionResult:
        now = self.clock.now()
        auction_id = f"auction:{product.key}:{now.isoformat()}"
        with self.engine.begin() as conn:
            rows = conn.execute(select(MO).where(MO.c.product == product.key, MO.c.auction_id.is_(None))
                                .order_by(MO.c.id)).all()
            bids = [Order(r.id, r.party, r.quantity, r.price_fen) for r in rows if r.side == "bid"]
            asks = [Order(r.id, r.party, r.quantity, r.price_fen, r.pool_id) for r in rows if r.side == "ask"]
            c = clear(bids, asks)
            bid_by_id = {b.id: b for b in bids}
            ask_by_id = {a.id: a for a in asks}
            reservations = [
                Reservation(f"res:{t.bid_id}:{t.ask_id}", auction_id, bid_by_id[t.bid_id].party,
                            ask_by_id[t.ask_id].party, ask_by_id[t.ask_id].pool_id, product.window_start,
                            product.window_end, t.quantity, t.price_fen, t.bid_id, t.ask_id)
                for t in c.trades(bids, asks)
            ] if c.volume else []
            conn.execute(insert(AU).values(id=auction_id, product=product.key, region=product.region,
                                           accelerator_class=product.accelerator_class,
                                           window_start=product.window_start, window_end=product.window_end,
                                           cleared_at=now, price_fen=c.price_fen, volume=c.volume, orders=len(rows)))
            if reservations:
                conn.execute(insert(CR), [r.__dict__ for r in reservations])
            fills = {o.id: int(f) for o, f in zip(bids, c.bid_fills, strict=True)}
            fills.update({o.id: int(f) for o, f in zip(asks, c.ask_fills, strict=True)})
            if fills:  # one executemany, not a statement per order
                conn.execute(update(MO).where(MO.c.id == bindparam("oid")).values(auction_id=auction_id,
                                                                                  filled=bindparam("f")),
                             [{"oid": oid, "f": f} for oid, f in fills.items()])
            if c.price_fen is not None:
                conn.execute(insert(PI).values(product_line=f"{product.region}/{product.accelerator_class}",
                                               at=product.window_start, price_fen=c.price_fen, volume=c.volume))
        return AuctionResult(auction_id, product.key, c.price_fen, c.volume, len(rows), reservations)

    def reservations_at(self, at: datetime, pool_id: str | None = None, tenant_id: str | None = None
                        ) -> list[Reservation]:
        """Capacity reservations in force at ``at`` (what the scheduler must honour)."""
        q = select(CR).where(CR.c.window_start <= at, CR.c.window_end > at).order_by(CR.c.id)
        if pool_id is not None:
            q = q.where(CR.c.pool_id == pool_id)
        if tenant_id is not None:
            q = q.where(CR.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [_res(r) for r in conn.execute(q)]

    def price_index(self, product_line: str | None = None, limit: int = 500) -> list[IndexPoint]:
        q = select(PI).order_by(PI.c.product_line, PI.c.at).limit(limit)
        if product_line is not None:
            q = q.where(PI.c.product_line == product_line)
        with self.engine.connect() as conn:
            return [IndexPoint(r.product_line, r.at, r.price_fen, r.volume) for r in conn.execute(q)]

    def auctions(self, limit: int = 100) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(AU).order_by(AU.c.cleared_at.desc()).limit(limit))]

"""Market engines: call auction, multi-region LP, SLA credits, price index."""

from yungu.engines.market.auction import Clearing, Order, Product, Trade, clear, clear_arrays, validate_order

__all__ = ["Clearing", "Order", "Product", "Trade", "clear", "clear_arrays", "validate_order"]

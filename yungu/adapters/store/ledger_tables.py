"""Ledger, billing, market and clearing tables (issue 5; migration 0002_ledger).

Ledger money is stored as integer minor units (``BigInteger``, fen for CNY) rather than the
``Amount`` decimal type: balances are updated with exact integer arithmetic in one UPDATE
per account per batch, as TigerBeetle does; the API converts to and from decimal strings.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, UniqueConstraint, text

from yungu.adapters.store.db import metadata
from yungu.adapters.store.types import Amount, UTCDateTime

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("credit_limit", BigInteger, nullable=True),  # NULL = unlimited
    Column("owner", String(128), nullable=False, default=""),
    Column("name", String(200), nullable=False, default=""),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_ledger_accounts_owner", "owner"),
)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    # The request as the client sent it (compared on replay) ...
    Column("debit_account", String(128), nullable=False),
    Column("credit_account", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("pending_id", String(128), nullable=False, default=""),
    Column("timeout_s", Integer, nullable=False, default=0),
    Column("ref", String(500), nullable=False, default=""),
    Column("memo", String(500), nullable=False, default=""),
    # ... and what the ledger did with it.
    Column("dr", String(128), nullable=False),
    Column("cr", String(128), nullable=False),
    Column("moved", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("state", String(16), nullable=True),  # pending transfers: pending/posted/voided/expired
    Index("ix_ledger_transfers_dr", "dr"),
    Index("ix_ledger_transfers_cr", "cr"),
    Index("ix_ledger_transfers_ref", "ref"),
    # Only open holds are ever looked up by state: a partial index keeps posted transfers out of it.
    Index("ix_ledger_transfers_open_holds", "expires_at", sqlite_where=text("state = 'pending'"),
          postgresql_where=text("state = 'pending'")),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("device_seconds", BigInteger, nullable=False),
    Column("compute_units", Amount, nullable=False),
    Column("facility_kwh", Amount, nullable=False),
    Column("tokens_in", BigInteger, nullable=False, default=0),
    Column("tokens_out", BigInteger, nullable=False, default=0),
    Column("gross", BigInteger, nullable=False),  # fen, tax inclusive: rated; once booked, what was charged
    Column("usage_period", String(7), nullable=False),
    Column("booked_period", String(7), nullable=False),
    Column("late_from", String(7), nullable=False, default=""),
    Column("transfer_id", String(128), nullable=False),
    Column("booked", Integer, nullable=False, default=0),
    Column("invoice_id", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("written_off", BigInteger, nullable=False, default=0),  # fen of a prepaid overrun not charged
    Column("book_attempts", Integer, nullable=False, default=0),  # failed booking attempts
    Column("book_error", Text, nullable=False, default=""),  # why the last attempt failed
    Column("retry_at", UTCDateTime, nullable=True),  # a parked row is not due before then
    Index("ix_usage_records_tenant_period", "tenant_id", "booked_period"),
    Index("ix_usage_records_job", "job_id"),
    # Only unbooked rows are ever looked up by due time: a partial index keeps the rest out.
    Index("ix_usage_records_due", "retry_at", "id", sqlite_where=text("booked = 0"),
          postgresql_where=text("booked = 0")),
)

billing_periods = Table(
    "billing_periods",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("closed_at", UTCDateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(32), primary_key=True),  # 发票号码
    Column("seq", Integer, nullable=False, unique=True),
    Column("tenant_id", String(64), nullable=False),
    Column("period", String(7), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("gross", BigInteger, nullable=False),
    Column("body", Text, nullable=False),  # the invoice JSON
    UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
)

market_orders = Table(
    "market_orders",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("product", String(200), nullable=False),
    Column("side", String(4), nullable=False),  # bid | ask
    Column("party", String(128), nullable=False),
    Column("pool_id", String(128), nullable=False, default=""),
    Column("quantity", BigInteger, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("auction_id", String(128), nullable=True),  # set when an auction consumed it
    Column("filled", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_market_orders_product_open", "product", "auction_id"),
)

auctions = Table(
    "auctions",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("product", String(200), nullable=False),
    Column("region", String(64), nullable=False),
    Column("accelerator_class", String(64), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("cleared_at", UTCDateTime, nullable=False),
    Column("price_fen", BigInteger, nullable=True),
    Column("volume", BigInteger, nullable=False),
    Column("orders", Integer, nullable=False),
)

capacity_reservations = Table(
    "capacity_reservations",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("auction_id", String(200), nullable=False),
    Column("tenant_id", String(128), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("devices", Integer, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("bid_id", String(128), nullable=False),
    Column("ask_id", String(128), nullable=False),
    Index("ix_capacity_reservations_pool_window", "pool_id", "window_start", "window_end"),
)

price_index = Table(
    "price_index",
    metadata,
    Column("product_line", String(200), primary_key=True),
    Column("at", UTCDateTime, primary_key=True),
    Column("price_fen", BigInteger, nullable=False),
    Column("volume", BigInteger, nullable=False),
)

clearing_statements = Table(
    "clearing_statements",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("period", String(7), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("body", Text, nullable=False),  # canonical JSON that is signed
    Column("signatures", Text, nullable=False),  # JSON {platform id: base64 signature}
    Column("created_at", UTCDateTime, nullable=False),
)

LEDGER_TABLES = (
    ledger_accounts,
    ledger_transfers,
    usage_records,
    billing_periods,
    invoices,
    market_orders,
    auctions,
    capacity_reservations,
    price_index,
    clearing_statements,
)

"""Token service tables (issue 14; migration 0005_gateway).

Costs are integer cost units of 1e-10 CNY (``BigInteger``; see ``engines.gateway.pricing``):
a single request costs fractions of a fen, so rows keep the exact figure and the ledger is
booked in fen from the rounded cumulative sum (``token_batches``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from yungu.adapters.store.db import metadata
from yungu.adapters.store.types import Amount, UTCDateTime

token_models = Table(
    "token_models",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("kind", String(16), nullable=False, default="chat"),  # chat | embeddings
    Column("input_per_m", Amount, nullable=False),  # CNY per million tokens
    Column("output_per_m", Amount, nullable=False),
    Column("currency", String(3), nullable=False, default="CNY"),
    Column("max_output_tokens", Integer, nullable=False, default=1024),
    Column("description", String(400), nullable=False, default=""),
    Column("updated_at", UTCDateTime, nullable=False),
)

token_upstreams = Table(
    "token_upstreams",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("url", String(400), nullable=False),
    Column("region", String(64), nullable=False),
    Column("provider", String(128), nullable=False, default=""),
    Column("platform", String(64), nullable=False, default=""),  # "" = served here
    Column("pool_id", String(128), nullable=False, default=""),
    Column("job_id", String(64), nullable=False, default=""),
    Column("green_share", Float, nullable=False, default=0.0),
    Column("input_per_m", Amount, nullable=True),  # None: the model's price
    Column("output_per_m", Amount, nullable=True),
    Column("source", String(16), nullable=False, default="registered"),  # registered | job
    Column("created_at", UTCDateTime, nullable=False),
)

inference_services = Table(
    "inference_services",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("tenant_id", String(64), nullable=False),  # whose jobs run the replicas
    Column("min_replicas", Integer, nullable=False),
    Column("max_replicas", Integer, nullable=False),
    Column("cpus", Integer, nullable=False, default=1),
    Column("memory_gb", Integer, nullable=False, default=2),
    Column("accelerators", Integer, nullable=False, default=0),
    Column("pool", String(128), nullable=True),
    Column("command", Text, nullable=False),  # a template: {port}, {python}, {cache_dir}
    Column("created_at", UTCDateTime, nullable=False),
)

token_keys = Table(
    "token_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),  # an api_keys row (role tenant)
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("models", Text, nullable=False, default="[]"),  # JSON list; [] = every model
    Column("budget_units", BigInteger, nullable=True),  # per period; None = no budget (refused)
    Column("period", String(8), nullable=False, default="month"),
    Column("alert_ratio", Amount, nullable=True),  # soft alert at this share of the budget
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("regions", Text, nullable=False, default="[]"),  # data residency; [] = anywhere
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

token_usage = Table(
    "token_usage",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("endpoint", String(32), nullable=False),  # chat | completions | embeddings
    Column("replica_id", String(128), nullable=False),
    Column("platform", String(64), nullable=False, default=""),
    Column("provider", String(128), nullable=False, default=""),
    Column("pool_id", String(128), nullable=False, default=""),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),  # backend | tokenizer | bound
    Column("price_in_per_m", Amount, nullable=False),
    Column("price_out_per_m", Amount, nullable=False),
    Column("cost_units", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # ok | cut | error
    Column("budget_period", String(16), nullable=False),
    Column("billing_period", String(7), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_token_usage_key_period", "key_id", "budget_period"),
    Index("ix_token_usage_tenant", "tenant_id", "created_at"),
    Index("ix_token_usage_unbatched", "batch_id"),
)

token_batches = Table(
    "token_batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("period", String(7), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("cum_units", BigInteger, nullable=False),
    Column("fen", BigInteger, nullable=False),
    Column("pool_id", String(128), nullable=False, default=""),
    Column("first_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("handed", Boolean, nullable=False, default=False),  # its usage record is in usage_records
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "provider", "model", "period", "seq", name="uq_token_batches_group_seq"),
)

token_receipts = Table(
    "token_receipts",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("side", String(8), nullable=False),  # client | server
    Column("peer", String(64), nullable=False),
    Column("period", String(7), nullable=False),
    Column("cost_units", BigInteger, nullable=False),
    Column("body", Text, nullable=False),  # canonical JSON
    Column("signature", String(128), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_token_receipts_unbatched", "side", "peer", "period", "batch_id"),
)

token_receipt_batches = Table(
    "token_receipt_batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("side", String(8), nullable=False),
    Column("peer", String(64), nullable=False),
    Column("period", String(7), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("cum_units", BigInteger, nullable=False),
    Column("fen", BigInteger, nullable=False),
    Column("booked", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("side", "peer", "period", "seq", name="uq_token_receipt_batches_seq"),
)

GATEWAY_TABLES = (token_models, token_upstreams, inference_services, token_keys, token_usage, token_batches,
                  token_receipts, token_receipt_batches)

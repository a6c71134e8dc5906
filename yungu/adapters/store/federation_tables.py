"""Federation tables (issue 12; migration 0006_federation).

``fed_outbound``: what this platform delegated (origin side), with the lease it granted,
recorded *before* each send. ``fed_inbound``: what peers delegated here (peer side), unique per
``(origin, origin request id)`` — refusals included, so a late duplicate gets the same answer.
``fed_receipts``: usage receipts issued and received, each booked once. ``fed_positions`` and
``fed_statements``: co-signed bilateral positions and the multilateral statements.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from yungu.adapters.store.db import metadata
from yungu.adapters.store.types import Amount, UTCDateTime

fed_peers = Table(
    "fed_peers", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("base_url", String(500), nullable=False),
    Column("keys", Text, nullable=False),  # JSON list of {"keyid", "public_key"}
    Column("policy", Text, nullable=False),  # JSON PeeringPolicy
    Column("latency_ms", Integer, nullable=False, default=0),  # operator-declared link RTT
    Column("state", String(16), nullable=False, default="healthy"),
    Column("state_since", UTCDateTime, nullable=True),
    Column("state_reason", String(500), nullable=False, default=""),
    Column("added_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

fed_peer_events = Table(
    "fed_peer_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("peer_id", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("before", String(16), nullable=False),
    Column("after", String(16), nullable=False),
    Column("reason", String(500), nullable=False, default=""),
    Index("ix_fed_peer_events_peer", "peer_id", "id"),
)

fed_outbound = Table(
    "fed_outbound", metadata,
    Column("request_id", String(80), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("peer_id", String(64), nullable=False),
    Column("pool_id", String(200), nullable=False),  # the peer's pool id
    Column("tenant_id", String(64), nullable=False),
    Column("devices", Integer, nullable=False),  # devices placed (CPUs on CPU-only pools)
    Column("offered_price", Amount, nullable=False),  # per device- (or CPU-) hour, the peer's
    Column("our_price", Amount, nullable=False),  # what our tenant pays per unit-hour
    Column("offer_id", String(128), nullable=False, default=""),
    Column("launch", Text, nullable=False),  # JSON of the delegation sent
    Column("state", String(16), nullable=False),  # sent | accepted | refused | done | lost
    Column("phase", String(16), nullable=False, default="pending"),  # last phase the peer reported
    Column("lease_until", UTCDateTime, nullable=False),  # the latest expiry ever granted
    Column("reason", String(2000), nullable=False, default=""),
    Column("exit_code", Integer, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("closed", Boolean, nullable=False, default=False),  # nothing more to learn from the peer
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_fed_outbound_peer_open", "peer_id", "closed"),
    Index("ix_fed_outbound_job", "job_id"),
)

fed_inbound = Table(
    "fed_inbound", metadata,
    Column("id", String(160), primary_key=True),  # "<origin>:<origin request id>"
    Column("origin", String(64), nullable=False),
    Column("origin_job_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("local_job_id", String(64), nullable=True),
    Column("pool_id", String(200), nullable=False, default=""),
    Column("tenant_id", String(64), nullable=False, default=""),
    Column("tenant_ref", String(128), nullable=False, default=""),
    Column("devices", Integer, nullable=False, default=0),
    Column("offered_price", Amount, nullable=False),
    Column("state", String(16), nullable=False),  # active | refused | expired | fenced | stopped | done
    Column("reason", String(2000), nullable=False, default=""),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_fed_inbound_origin_job", "origin", "origin_job_id"),
    Index("ix_fed_inbound_state", "state"),
    Index("ix_fed_inbound_local", "local_job_id"),
)

fed_receipts = Table(
    "fed_receipts", metadata,
    Column("receipt_id", String(160), primary_key=True),
    Column("side", String(8), primary_key=True),  # issued | received
    Column("kind", String(16), nullable=False, default="compute"),
    Column("issuer", String(64), nullable=False),
    Column("origin", String(64), nullable=False),
    Column("request_id", String(160), nullable=False),
    Column("period", String(7), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("booked", Boolean, nullable=False, default=False),
    Column("acked", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("side", "issuer", "request_id", name="uq_fed_receipts_side_issuer_request"),
    Index("ix_fed_receipts_period", "period"),
)

fed_positions = Table(
    "fed_positions", metadata,
    Column("period", String(7), primary_key=True),
    Column("a", String(64), primary_key=True),
    Column("b", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("signatures", Text, nullable=False),  # JSON {platform: signature}
    Column("created_at", UTCDateTime, nullable=False),
)

fed_statements = Table(
    "fed_statements", metadata,
    Column("period", String(7), primary_key=True),
    Column("body", Text, nullable=False),
    Column("signatures", Text, nullable=False),
    Column("state", String(16), nullable=False),  # signed | booked
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

FEDERATION_TABLES = (fed_peers, fed_peer_events, fed_outbound, fed_inbound, fed_receipts, fed_positions,
                     fed_statements)

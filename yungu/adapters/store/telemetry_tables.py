"""Telemetry, energy, certificate and alert tables (issue 4).

Raw samples are the hot path (>= 200,000 samples/s on 2 shared cores). Measured, one SQL
row per sample reached ~35,000 samples/s on SQLite here, so raw samples are stored
*columnar*: one ``telemetry_chunks`` row per accepted agent batch, holding the batch as a
numpy structured array (seq, time, utilisation, power, counters), indexed by node/seq range
and site/time range. Times are integer epoch milliseconds (``*_ms``), not ``UTCDateTime``,
so bucketing is integer arithmetic. Everything a person reads (rollups' API output, certificates, alerts)
is converted to aware UTC datetimes at the boundary.

Ingestion is exactly-once per (node_id, seq): the primary key rejects a second copy, and
the ingestion service counts resends instead of storing them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, LargeBinary, String, Table, Text

from yungu.adapters.store.db import metadata
from yungu.adapters.store.types import UTCDateTime

telemetry_nodes = Table(
    "telemetry_nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("key_hash", String(128), nullable=False),  # sha256 of the node's agent key
    Column("cpu_model", String(64), nullable=False, default=""),
    Column("gpu_model", String(64), nullable=False, default=""),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=True),
    Column("last_seq", BigInteger, nullable=True),
    Column("last_power_w", Float, nullable=True),
    Column("energy_j", Float, nullable=False, default=0.0),  # live counter for *_joules_total
)

telemetry_chunks = Table(
    "telemetry_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", String(128), nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("seq_min", BigInteger, nullable=False),
    Column("seq_max", BigInteger, nullable=False),
    Column("ts_min_ms", BigInteger, nullable=False),
    Column("ts_max_ms", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("rolled", Boolean, nullable=False, default=False),
    Column("data", LargeBinary, nullable=False),  # numpy structured array, see telemetry/chunks.py
    Column("detail", Text, nullable=True),  # JSON {row index: per-GPU readings and per-job CPU time}
    Index("ix_telemetry_chunks_site_ts", "site_id", "ts_min_ms"),
    Index("ix_telemetry_chunks_node_seq", "node_id", "seq_max"),  # resend check: seq_max >= lo hits the newest chunks only
    Index("ix_telemetry_chunks_rolled", "rolled", "ts_max_ms"),
)

telemetry_job_samples = Table(
    "telemetry_job_samples",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("node_id", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
)

telemetry_rollup_1m = Table(
    "telemetry_rollup_1m",
    metadata,
    # one row per node-hour; ``data`` holds its 60 one-minute slots (n, utilisation sum,
    # power sum, power max, modelled), see telemetry/chunks.py ROLLUP_DTYPE
    Column("node_id", String(128), primary_key=True),
    Column("hour_ms", BigInteger, primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("n", Integer, nullable=False),  # samples folded into the hour
    Column("data", LargeBinary, nullable=False),
    Index("ix_telemetry_rollup_1m_site_hour", "site_id", "hour_ms"),
    Index("ix_telemetry_rollup_1m_pool_hour", "pool_id", "hour_ms"),
)

telemetry_quarantine = Table(
    "telemetry_quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("node_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=True),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_telemetry_quarantine_reason", "reason"),
)

telemetry_counters = Table(
    "telemetry_counters",
    metadata,
    Column("name", String(96), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

energy_certificates = Table(
    "energy_certificates",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # job | tenant_month
    Column("subject", String(128), nullable=False),  # job id or "<tenant>/<YYYY-MM>"
    Column("tenant_id", String(64), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),  # canonical JSON that was signed
    Column("signature", String(128), nullable=False),  # base64 Ed25519
    Column("key_id", String(64), nullable=False),
    Index("ix_energy_certificates_subject", "kind", "subject"),
)

telemetry_alerts = Table(
    "telemetry_alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),  # node_silent | power_anomaly | pool_over_capacity
    Column("subject", String(128), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    Index("ix_telemetry_alerts_open", "kind", "subject", "resolved_at"),
)

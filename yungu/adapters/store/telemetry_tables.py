"""Telemetry, energy, certificate and alert tables (issue 4).

The raw sample table is the hot path (>= 200,000 rows/s): its time column is an integer
epoch in milliseconds (``ts_ms``) instead of ``UTCDateTime``, so batch inserts bind plain
integers and bucketing for range queries is integer division in SQL on SQLite and
PostgreSQL alike. Everything a person reads (rollups' API output, certificates, alerts)
is converted to aware UTC datetimes at the boundary.

Ingestion is exactly-once per (node_id, seq): the primary key rejects a second copy, and
the ingestion service counts resends instead of storing them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

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

telemetry_samples = Table(
    "telemetry_samples",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("site_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("cpu_util", Float, nullable=False),
    Column("mem_util", Float, nullable=False),
    Column("cpu_power_w", Float, nullable=False),
    Column("gpu_power_w", Float, nullable=False),
    Column("cpu_energy_j", Float, nullable=True),
    Column("gpu_energy_j", Float, nullable=True),
    Column("modelled", Boolean, nullable=False),
    Column("detail", Text, nullable=True),  # JSON: per-GPU readings and per-job CPU time
    Index("ix_telemetry_samples_site_ts", "site_id", "ts_ms"),
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
    Column("node_id", String(128), primary_key=True),
    Column("minute_ms", BigInteger, primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("n", Integer, nullable=False),
    Column("cpu_util_avg", Float, nullable=False),
    Column("power_avg_w", Float, nullable=False),
    Column("power_max_w", Float, nullable=False),
    Column("modelled", Boolean, nullable=False),
    Index("ix_telemetry_rollup_1m_site_minute", "site_id", "minute_ms"),
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

"""telemetry, energy and certificate tables (issue 4)

Revision ID: 0003_telemetry
Revises: 0002_ledger
"""

import sqlalchemy as sa
from alembic import op

from yungu.adapters.store.types import UTCDateTime

revision = "0003_telemetry"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("cpu_model", sa.String(64), nullable=False),
        sa.Column("gpu_model", sa.String(64), nullable=False),
        sa.Column("registered_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=True),
        sa.Column("last_seq", sa.BigInteger, nullable=True),
        sa.Column("last_power_w", sa.Float, nullable=True),
        sa.Column("energy_j", sa.Float, nullable=False),
    )
    op.create_table(
        "telemetry_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(128), nullable=False),
        sa.Column("seq_min", sa.BigInteger, nullable=False),
        sa.Column("seq_max", sa.BigInteger, nullable=False),
        sa.Column("ts_min_ms", sa.BigInteger, nullable=False),
        sa.Column("ts_max_ms", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("rolled", sa.Boolean, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_telemetry_chunks_site_ts", "telemetry_chunks", ["site_id", "ts_min_ms"])
    op.create_index("ix_telemetry_chunks_node_seq", "telemetry_chunks", ["node_id", "seq_max"])
    op.create_index("ix_telemetry_chunks_rolled", "telemetry_chunks", ["rolled", "ts_max_ms"])
    op.create_table(
        "telemetry_job_samples",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "telemetry_rollup_1m",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("hour_ms", sa.BigInteger, primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(128), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_telemetry_rollup_1m_site_hour", "telemetry_rollup_1m", ["site_id", "hour_ms"])
    op.create_index("ix_telemetry_rollup_1m_pool_hour", "telemetry_rollup_1m", ["pool_id", "hour_ms"])
    op.create_table(
        "telemetry_quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_telemetry_quarantine_reason", "telemetry_quarantine", ["reason"])
    op.create_table(
        "telemetry_counters",
        sa.Column("name", sa.String(96), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "energy_certificates",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_energy_certificates_subject", "energy_certificates", ["kind", "subject"])
    op.create_table(
        "telemetry_alerts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("resolved_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_telemetry_alerts_open", "telemetry_alerts", ["kind", "subject", "resolved_at"])


def downgrade() -> None:
    for name in (
        "telemetry_alerts",
        "energy_certificates",
        "telemetry_counters",
        "telemetry_quarantine",
        "telemetry_rollup_1m",
        "telemetry_job_samples",
        "telemetry_chunks",
        "telemetry_nodes",
    ):
        op.drop_table(name)

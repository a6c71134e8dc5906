"""Core tables: platform identity, tenants, API keys, jobs and their transition log, the audit log."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from yungu.adapters.store.db import metadata
from yungu.adapters.store.types import UTCDateTime

platform_kv = Table(
    "platform_kv",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("social_credit_code", String(32), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("prepaid", Boolean, nullable=False, default=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("provider", String(200), nullable=True),  # provider keys: the provider they act for
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("platform_id", String(64), nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("spec", Text, nullable=False),  # JSON of the validated JobSpec
    Column("attempt", Integer, nullable=False, default=0),
    Column("pool_id", String(128), nullable=True),
    Column("allocation", Text, nullable=True),  # JSON of the Allocation
    Column("priority", Integer, nullable=False, default=0),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("reason", Text, nullable=False, default=""),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("not_before", UTCDateTime, nullable=True),  # deferred by the scheduler until then
    Column("idempotency_key", String(200), nullable=True),
    Column("body_hash", String(64), nullable=True),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idem"),
    Index("ix_jobs_state", "state"),
    Index("ix_jobs_state_not_before", "state", "not_before"),
    Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(16), nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_job_events_job_id", "job_id"),
)

audit_log = Table(  # who did what to money or keys, and why (append only)
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("detail", Text, nullable=False),
)
Index("ix_audit_log_at", audit_log.c.at)

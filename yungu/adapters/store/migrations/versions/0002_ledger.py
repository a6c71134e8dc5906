"""ledger, market and settlement tables (issue 5)

Revision ID: 0002_ledger
Revises: 0001_spine

The tables are defined once, in ``yungu.adapters.store.ledger_tables``; this revision
creates exactly those (so the schema and the code cannot drift before the first release).
It also adds billing's metering mark to the core ``jobs`` table (``jobs.metered``, declared in
``yungu.adapters.store.tables``): finished jobs not yet metered are found by a partial index.
"""

import sqlalchemy as sa
from alembic import op

from yungu.adapters.store.ledger_tables import LEDGER_TABLES

revision = "0002_ledger"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in LEDGER_TABLES:
        table.create(bind, checkfirst=False)
    op.add_column("jobs", sa.Column("metered", sa.Integer, nullable=False, server_default="0"))
    where = sa.text("metered = 0 AND finished_at IS NOT NULL")
    op.create_index("ix_jobs_unmetered", "jobs", ["finished_at"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_jobs_unmetered", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metered")
    bind = op.get_bind()
    for table in reversed(LEDGER_TABLES):
        table.drop(bind, checkfirst=True)

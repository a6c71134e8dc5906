"""token service tables (issue 14)

Revision ID: 0005_gateway
Revises: 0004_scheduler

The tables are defined once, in ``yungu.adapters.store.gateway_tables``; this revision
creates exactly those.
"""

from alembic import op

from yungu.adapters.store.gateway_tables import GATEWAY_TABLES

revision = "0005_gateway"
down_revision = "0004_scheduler"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in GATEWAY_TABLES:
        table.create(bind, checkfirst=False)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(GATEWAY_TABLES):
        table.drop(bind, checkfirst=True)

"""federation tables (issue 12)

Revision ID: 0006_federation
Revises: 0005_gateway

The tables are defined once, in ``yungu.adapters.store.federation_tables``; this revision
creates exactly those.
"""

from alembic import op

from yungu.adapters.store.federation_tables import FEDERATION_TABLES

revision = "0006_federation"
down_revision = "0005_gateway"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in FEDERATION_TABLES:
        table.create(bind, checkfirst=False)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(FEDERATION_TABLES):
        table.drop(bind, checkfirst=True)

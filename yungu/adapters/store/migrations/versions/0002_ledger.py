"""ledger, market and settlement tables (issue 5)

Revision ID: 0002_ledger
Revises: 0001_spine

The tables are defined once, in ``yungu.adapters.store.ledger_tables``; this revision
creates exactly those (so the schema and the code cannot drift before the first release).
"""

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


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(LEDGER_TABLES):
        table.drop(bind, checkfirst=True)

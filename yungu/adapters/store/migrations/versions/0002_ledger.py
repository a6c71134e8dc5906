"""ledger, market and settlement tables (issue 5)

Revision ID: 0002_ledger
Revises: 0001_spine
"""

revision = "0002_ledger"
down_revision = "0001_spine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

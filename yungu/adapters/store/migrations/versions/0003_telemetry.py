"""telemetry, energy and certificate tables (issue 4)

Revision ID: 0003_telemetry
Revises: 0002_ledger
"""

revision = "0003_telemetry"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

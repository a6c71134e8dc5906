"""scheduler policy tables (issue 3)

Revision ID: 0004_scheduler
Revises: 0003_telemetry
"""

revision = "0004_scheduler"
down_revision = "0003_telemetry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

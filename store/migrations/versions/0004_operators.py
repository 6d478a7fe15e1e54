"""operators: batch cancellation, indexes for purging by age

`smsq status --number` looks recipients up by mobile through the existing
ix_recipients_mobile_state (mobile is its leading column), so it needs no
index of its own.

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_batches_created_at", ["created_at"], unique=False)
    with op.batch_alter_table("poll_journal", schema=None) as batch_op:
        batch_op.create_index("ix_poll_journal_fetched_at", ["fetched_at"], unique=False)
    with op.batch_alter_table("status_reports", schema=None) as batch_op:
        batch_op.create_index("ix_status_reports_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_status_reports_created_at")
    with op.batch_alter_table("poll_journal", schema=None) as batch_op:
        batch_op.drop_index("ix_poll_journal_fetched_at")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_created_at")
        batch_op.drop_column("cancelled_at")

"""retry budget: chunks.first_attempt_at

Transient failures are retried for a time (SMSQ_RETRY_FOR) counted from the
chunk's first vendor call, not from the batch's creation (a scheduled send
starts late) nor from the latest claim (which moves with every retry).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_attempt_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("first_attempt_at")

"""batches.body_digest: what a batch was asked to send, so a reused idempotency key is checked

Revision ID: 0009
Revises: 0008

A second send with the same idempotency key replays the first batch only when it
asks for the same thing (content, send time, numbers); with anything else it is
refused. The digest is computed while the numbers stream in, so the check reads
no stored number. Batches stored before this revision have none and replay as
before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("body_digest")

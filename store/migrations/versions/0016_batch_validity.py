"""batches.valid_until: when a batch's numbers not yet sent are no longer worth sending

Revision ID: 0016
Revises: 0015

A send may carry a validity (``send_sms(valid_for=...)``, by default its kind's:
an ``otp`` is worth five minutes). It is kept on the batch as the moment it ends,
``valid_until``, which every chunk of the batch is held to, including those a route
moved or narrowing cut from it: a chunk whose moment has passed before its vendor
call is never sent, it ends ``expired``. NULL: no limit (every batch stored before).
The relay looks for the batches whose moment has passed: an index on it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("valid_until", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_batches_valid_until", ["valid_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_valid_until")
        batch_op.drop_column("valid_until")

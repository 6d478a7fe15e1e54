"""batches.kind: what a batch is, otp, notice or marketing

Revision ID: 0014
Revises: 0013

A batch is of one message kind (worker/kinds.py): ``otp`` (a code, always in the
priority lane), ``notice`` or ``marketing``; each kind's rules are configured per
kind and account. Batches stored before were sent without one: they read as
``notice``, the kind a send takes when it names none (the column's server default).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="notice"))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("kind")

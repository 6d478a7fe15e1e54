"""chunks: numbers a vendor refused in an answer that accepted the rest of the call

Revision ID: 0013
Revises: 0012

A vendor may take a call and refuse some of its numbers: dxt counts them (``b`` of
``0|a|b|d``), qxs counts the others (successCounts), jinxin counts and may name them
(failCount, failList), orgws names them (FailPhone). ``refused`` keeps how many;
``refused_open`` how many it only counted and no number has been found for yet;
``refused_due_at`` when the chunk's numbers that no delivery report has placed by then
end failed (the relay's sweep, which the partial index serves).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OPEN = sa.text("refused_due_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refused", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("refused_open", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("refused_due_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            "ix_chunks_refused_due_at", ["refused_due_at"], unique=False, postgresql_where=OPEN, sqlite_where=OPEN
        )


def downgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_chunks_refused_due_at")
        batch_op.drop_column("refused_due_at")
        batch_op.drop_column("refused_open")
        batch_op.drop_column("refused")

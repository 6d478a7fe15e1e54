"""number_sends, recent_contents, rejection_counts: frequency caps, duplicate guard, refusals

Revision ID: 0017
Revises: 0016

Without Redis, the per-number frequency caps count a number's sends per fixed window in
``number_sends`` and the duplicate guard keeps the last batch that sent a content to a
number in ``recent_contents`` (both purged once expired). ``rejection_counts`` counts the
numbers refused at intake by account, kind and reason (the ``smsq_rejected_total`` metric).
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "number_sends",
        sa.Column("mobile", sa.String(length=64), nullable=False),
        sa.Column("period", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("window_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mobile", "period", "window_no", name=op.f("pk_number_sends")),
    )
    op.create_index("ix_number_sends_expires_at", "number_sends", ["expires_at"])
    op.create_table(
        "recent_contents",
        sa.Column("mobile", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mobile", "digest", name=op.f("pk_recent_contents")),
    )
    op.create_index("ix_recent_contents_expires_at", "recent_contents", ["expires_at"])
    op.create_table(
        "rejection_counts",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("numbers", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "kind", "reason", name=op.f("pk_rejection_counts")),
    )


def downgrade() -> None:
    op.drop_table("rejection_counts")
    op.drop_index("ix_recent_contents_expires_at", table_name="recent_contents")
    op.drop_table("recent_contents")
    op.drop_index("ix_number_sends_expires_at", table_name="number_sends")
    op.drop_table("number_sends")

"""earlier_sends: a recipient's send that an operator had sent again

Revision ID: 0010
Revises: 0009

``smsq settle ... resend`` sends a chunk's numbers again on their recipient rows;
the send before it (its state, code and vendor id) moves here first, so a number's
history keeps both sends and a late report for the first one is not lost.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "earlier_sends",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("recipient_id", BigId, nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("mobile", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("vendor_id", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("resent_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_earlier_sends_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earlier_sends")),
    )
    with op.batch_alter_table("earlier_sends", schema=None) as batch_op:
        batch_op.create_index("ix_earlier_sends_mobile", ["mobile"], unique=False)
        batch_op.create_index("ix_earlier_sends_recipient_id", ["recipient_id"], unique=False)


def downgrade() -> None:
    op.drop_table("earlier_sends")

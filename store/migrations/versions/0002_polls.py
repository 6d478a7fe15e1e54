"""polls: leases, status, journal, inbound, reports, balances

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index("ix_recipients_mobile_state", ["mobile", "state"], unique=False)
    op.create_table(
        "account_balances",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("balance", sa.Double(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_account_balances")),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("mobile", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("vendor_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.Column("extra", sa.String(length=64), nullable=True),
        sa.Column("dedupe_key", sa.String(length=80), nullable=False),
        sa.Column("journal_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("account", "dedupe_key", name=op.f("uq_inbound_messages_account_dedupe_key")),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_created", ["created_at"], unique=False)

    op.create_table(
        "poll_journal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parsed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poll_journal")),
    )
    with op.batch_alter_table("poll_journal", schema=None) as batch_op:
        batch_op.create_index("ix_poll_journal_state", ["state"], unique=False)

    op.create_table(
        "poll_leases",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("next_allowed_at", sa.DateTime(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("account", "family", name=op.f("pk_poll_leases")),
    )
    op.create_table(
        "poll_status",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("polled_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account", "kind", name=op.f("pk_poll_status")),
    )
    op.create_table(
        "status_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("vendor_id", sa.String(length=64), nullable=True),
        sa.Column("mobile", sa.String(length=32), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=True),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=255), nullable=True),
        sa.Column("reported_at", sa.DateTime(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=160), nullable=False),
        sa.Column("recipient_id", sa.BigInteger(), nullable=True),
        sa.Column("journal_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_reports")),
        sa.UniqueConstraint("account", "dedupe_key", name=op.f("uq_status_reports_account_dedupe_key")),
    )
    with op.batch_alter_table("status_reports", schema=None) as batch_op:
        batch_op.create_index("ix_status_reports_vendor", ["vendor_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_mobile_state")
    with op.batch_alter_table("status_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_status_reports_vendor")

    op.drop_table("status_reports")
    op.drop_table("poll_status")
    op.drop_table("poll_leases")
    with op.batch_alter_table("poll_journal", schema=None) as batch_op:
        batch_op.drop_index("ix_poll_journal_state")

    op.drop_table("poll_journal")
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_created")

    op.drop_table("inbound_messages")
    op.drop_table("account_balances")

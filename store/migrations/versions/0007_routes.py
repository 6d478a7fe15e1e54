"""routes: failover across accounts (batches.route, chunks.content, account_circuits)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("given_content", sa.Text(), nullable=True))
        # The idempotency key of a routed batch belongs to the route, whichever account took it.
        batch_op.create_unique_constraint("uq_batches_route_idempotency_key", ["route", "idempotency_key"])
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content", sa.Text(), nullable=True))
    op.create_table(
        "account_circuits",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=True),
        sa.Column("reopen_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("cooloff", sa.Float(), nullable=False),
        sa.Column("trips", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("probe_chunk_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_account_circuits")),
    )


def downgrade() -> None:
    op.drop_table("account_circuits")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("content")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_constraint("uq_batches_route_idempotency_key", type_="unique")
        batch_op.drop_column("given_content")
        batch_op.drop_column("route")

"""batch_stamps, batches.stamp, chunks.stamp: a batch's Timestamp at its account

Revision ID: 0012
Revises: 0011

orgws groups a batch's calls by their Timestamp, which its document makes the
send time in seconds. Each batch of such an account takes its send second, or
the next one no other batch of the account took: a row of ``batch_stamps``
(primary key account + stamp) is the claim, so two producers at once cannot
take the same second; a batch takes one per account (unique batch + account).
The batch keeps it (``batches.stamp``) and every chunk and retry carries it; a
chunk moved to another account of its route keeps the one it took there
(``chunks.stamp``). Batches stored before have none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stamp", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stamp", sa.BigInteger(), nullable=True))
    op.create_table(
        "batch_stamps",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("stamp", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_batch_stamps_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account", "stamp", name=op.f("pk_batch_stamps")),
        sa.UniqueConstraint("batch_id", "account", name=op.f("uq_batch_stamps_batch_id_account")),
    )


def downgrade() -> None:
    op.drop_table("batch_stamps")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("stamp")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("stamp")

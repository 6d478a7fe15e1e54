"""Personal texts: a send whose numbers each get a text of their own

Revision ID: 0018
Revises: 0017

``send_sms(messages=...)`` and ``send_sms(template=..., rows=...)`` store one batch
whose numbers are grouped by their text: numbers with the same text share chunks, and
each chunk carries its text (``chunks.content``, which a failover already used for a
chunk moved to another vendor). On their way in, staged chunks carry it too:
``split_chunks.content`` (NULL: the batch's one text). ``batches.personal`` marks
such a batch: its ``content`` is the template (or empty for ``messages``), never sent.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("split_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content", sa.Text(), nullable=True))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("personal", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("personal")
    with op.batch_alter_table("split_chunks", schema=None) as batch_op:
        batch_op.drop_column("content")

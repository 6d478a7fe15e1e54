"""narrowing: chunks.narrowed_from and chunks.narrow_calls

A vendor answer that refuses a whole call over a number it does not name (linkws
-11 屏蔽手機號碼) took nothing, so the chunk's numbers are sent again in halves
until the offending numbers are found (tasks/narrowing.py). A chunk made that way
carries the id of the chunk whose refusal started it (``narrowed_from``); that
chunk counts the extra vendor calls its narrowing has made (``narrow_calls``), which
SMSQ_NARROW_MAX_CALLS caps.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("narrowed_from", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("narrow_calls", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("narrow_calls")
        batch_op.drop_column("narrowed_from")

"""recipients: no index on a column the send path writes, room on each page for the update

Revision ID: 0008
Revises: 0007

A chunk's record sets its 100 recipients' state and vendor id. With either column
in an index, PostgreSQL writes every new row version into every index of the
table (five); with neither, and room on the page, the update is "HOT": no index
is touched. Measured, 2,000 chunk updates of 100 rows each: 6.0-6.7 s before,
1.6-2.7 s after, 95 % of the rows updated HOT.

* ``ix_recipients_vendor_id`` served no query: a delivery report is matched by
  the mobile and then the vendor id (tasks/polls.py), which ``ix_recipients_mobile``
  serves;
* ``ix_recipients_mobile_state`` becomes ``ix_recipients_mobile``: a number has
  a few rows (one per send), read and filtered by state;
* ``fillfactor = 50``: a chunk's rows are written together by the split, about
  a page per chunk, so its updated versions need the other half of the page. The
  table does not grow for it: without the room, every updated version went to a
  new page anyway (measured: 30 MB and 34 MB for 200,000 sent recipients).

Building ix_recipients_mobile blocks writes to recipients while it runs (about
a second per million rows): on a large table, upgrade in a quiet hour.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_vendor_id")
        batch_op.drop_index("ix_recipients_mobile_state")
        batch_op.create_index("ix_recipients_mobile", ["mobile"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # New pages only; rows already stored keep their pages until rewritten.
        op.execute("ALTER TABLE recipients SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE recipients RESET (fillfactor)")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_mobile")
        batch_op.create_index("ix_recipients_mobile_state", ["mobile", "state"], unique=False)
        batch_op.create_index("ix_recipients_vendor_id", ["vendor_id"], unique=False)

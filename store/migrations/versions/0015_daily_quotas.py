"""daily_quotas: numbers each account has sent to per Beijing day, for its daily_quota

Revision ID: 0015
Revises: 0014

An account with a ``daily_quota`` counts here the numbers its sends took in, one row
per account and Beijing day, when no Redis is configured (with SMSQ_REDIS_URL, or a
Redis broker, the count lives in Redis: tasks/quota.py). A send takes its share in its
own transaction, so a send rolled back gives it back.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_quotas",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account", "day", name=op.f("pk_daily_quotas")),
    )


def downgrade() -> None:
    op.drop_table("daily_quotas")

"""Alembic environment: the URL comes from smsq's settings (or the caller), never from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from smsq.store.models import Base

config = context.config
url = config.attributes.get("url")
if url is None:
    from smsq.worker.config import settings

    url = settings().database_url

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()

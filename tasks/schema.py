"""Make sure the tables exist before the first query of a process."""

from __future__ import annotations

import threading

from sqlalchemy import inspect

from smsq.store.sql import is_postgres
from smsq.worker.config import Settings
from smsq.worker.db import engine_for, upgrade

_ready: set[str] = set()
_lock = threading.Lock()


class SchemaError(RuntimeError):
    pass


def ensure_schema(conf: Settings) -> None:
    """Embedded (SQLite): migrate in place. Elsewhere: migrations are an operator's
    step (``smsq db upgrade``), so only say clearly that it was not done."""
    url = conf.database_url
    if url in _ready:
        return
    with _lock:
        if url in _ready:
            return
        if not is_postgres(url):  # SQLite
            upgrade(url)
        elif not inspect(engine_for(url)).has_table("alembic_version"):
            raise SchemaError(
                f"the database has no smsq tables yet: run `smsq db upgrade` "
                f"(SMSQ_DATABASE_URL={engine_for(url).url.render_as_string(hide_password=True)})"
            )
        _ready.add(url)


def forget() -> None:
    with _lock:
        _ready.clear()

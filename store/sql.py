"""What differs between PostgreSQL and SQLite, and how a value fits its column.

Every dialect test and every ``INSERT ... ON CONFLICT`` of smsq is here, so the
rest of the code writes one statement for both databases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast, overload

from sqlalchemy import CursorResult, Result
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute

TEXT_KEEP = "keep"  # a Text column's ``info`` key: how many characters of a value are kept


def is_postgres(bind) -> bool:
    """``bind``: a session, a connection, an engine or a database URL."""
    if isinstance(bind, str):
        return bind.startswith("postgresql")
    bind = getattr(bind, "bind", bind)  # a session's engine or connection
    return bind.dialect.name == "postgresql"


def rows_changed(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE run through a session changed. The session types what
    it returns as a plain Result; for these statements it is a CursorResult, which counts."""
    return cast(CursorResult[Any], result).rowcount


def _insert(bind, model):
    return (postgresql if is_postgres(bind) else sqlite).insert(model)


def insert_or_ignore(session, model, rows: Sequence[dict] | dict, keys: Iterable[str] | None, returning=None) -> list:
    """Insert ``rows`` (a dict: one row), skipping those whose ``keys`` are taken (None:
    those that would break any unique key). With ``returning`` (a column), the values of
    the rows inserted."""
    if not rows:
        return []
    stmt = _insert(session, model).on_conflict_do_nothing(index_elements=None if keys is None else list(keys))
    if returning is not None:
        stmt = stmt.returning(returning)
    result = session.execute(stmt.values(**rows)) if isinstance(rows, dict) else session.execute(stmt, rows)
    return [] if returning is None else [row[0] for row in result]


def insert_or_update(session, model, rows: Sequence[dict], keys: Iterable[str], update: Iterable[str]) -> None:
    """Insert ``rows``; a row whose ``keys`` are taken updates the columns ``update`` instead."""
    if not rows:
        return
    stmt = _insert(session, model)
    session.execute(
        stmt.on_conflict_do_update(index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}), rows
    )


def upsert_where(session, model, rows: Sequence[dict], keys: Iterable[str], set_: dict, where, returning) -> list:
    """Insert ``rows``; a row whose ``keys`` are taken is updated with ``set_`` only where
    ``where`` holds on it (else left, and on PostgreSQL locked until the commit). Returns
    ``returning`` (a column) of the rows inserted or updated: a conditional count or claim
    in one statement, which two transactions cannot both win."""
    if not rows:
        return []
    stmt = _insert(session, model)
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_, where=where).returning(returning)
    return [row[0] for row in session.execute(stmt.values(list(rows)))]


def width(column: InstrumentedAttribute) -> int | None:
    """How many characters ``column`` keeps: a String's length, a Text's ``info["keep"]``."""
    col = column.property.columns[0] if hasattr(column, "property") else column
    return getattr(col.type, "length", None) or col.info.get(TEXT_KEEP)


@overload
def fit(column: InstrumentedAttribute, value: str) -> str: ...
@overload
def fit(column: InstrumentedAttribute, value: None) -> None: ...
@overload
def fit(column: InstrumentedAttribute, value: str | None) -> str | None: ...
def fit(column: InstrumentedAttribute, value: str | None) -> str | None:
    """``value`` cut to what ``column`` keeps (None stays None)."""
    if value is None:
        return None
    keep = width(column)
    return value if keep is None else value[:keep]

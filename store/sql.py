"""What differs between PostgreSQL and SQLite, and how a value fits its column.

Every dialect test and every ``INSERT ... ON CONFLICT`` of smsq is here, so the
rest of the code writes one statement for both databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast, overload

from sqlalchemy import CursorResult, DateTime, Result, bindparam, text
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


def upsert_where(session, model, row: dict, keys: Iterable[str], set_: dict, returning) -> list:
    """Insert ``row``; if its ``keys`` are taken, update that row with ``set_`` (which may
    add to what it holds) instead. Returns ``returning`` (a column) of the row."""
    stmt = _insert(session, model)
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_).returning(returning)
    return [r[0] for r in session.execute(stmt.values(**row))]


def upsert_numbers(
    session,
    model,
    mobiles: Sequence[str],
    values: dict[str, Any],
    keys: Sequence[str],
    update: str,
    where: str,
    params: dict[str, Any] | None = None,
) -> list[str]:
    """For each of ``mobiles``, insert a row of ``model`` (its ``mobile`` and ``values``);
    a row whose ``keys`` are taken is updated (``update``: SQL ``SET`` assignments) only
    where ``where`` (SQL on the taken row, the table's name qualifying its columns) holds,
    else left (and on PostgreSQL locked until the commit). Returns the numbers inserted or
    updated: a conditional count or claim of a block of numbers in one statement, which
    two transactions cannot both win. The numbers go as one parameter (PostgreSQL an array,
    SQLite a JSON list), so 5,000 numbers cost one short statement, not 5,000 rows of
    bound values; ``values`` are bound with their columns' types, and ``params`` (named in
    ``update`` or ``where``) as they are, a datetime as the DateTime columns keep it."""
    if not mobiles:
        return []
    table = model.__table__
    postgres = is_postgres(session)
    source = "unnest(CAST(:mobiles AS text[])) AS m(mobile)" if postgres else "json_each(:mobiles) AS m"
    mobile = "m.mobile" if postgres else "m.value"
    columns = ", ".join(["mobile", *values])
    selected = ", ".join([mobile, *(f":{name}" for name in values)])
    statement = text(
        # "WHERE true": SQLite's parser needs it between an INSERT's SELECT and its ON CONFLICT
        f"INSERT INTO {table.name} ({columns}) SELECT {selected} FROM {source} WHERE true "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update} WHERE {where} RETURNING mobile"
    ).bindparams(
        *(bindparam(name, type_=table.c[name].type) for name in values),
        *(bindparam(name, type_=DateTime()) for name, value in (params or {}).items() if isinstance(value, datetime)),
    )
    given = list(mobiles) if postgres else json.dumps(list(mobiles))
    return list(session.execute(statement, {"mobiles": given, **values, **(params or {})}).scalars())


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

"""A large batch's numbers on their way in: ``split_chunks`` rows written in bulk
(tasks/intake.py stages them, store/ledger/cutting.py cuts them into chunks), and an
account's whole blocked list streamed. Each the fastest way its database offers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy.orm import Session

from .sql import is_postgres

COLUMNS = "split_chunks (batch_id, seq, size, mobiles)"

Row = tuple[int, int, str]  # (seq, size, comma-separated numbers)
TextRow = tuple[int, int, str, str]  # (seq, size, comma-separated numbers, their text): personal texts
TEXT_COLUMNS = "split_chunks (batch_id, seq, size, mobiles, content)"


def _driver(session: Session) -> Any:
    """The driver's own connection under the session's (psycopg's or sqlite3's): COPY
    and server-side cursors are the driver's, and each driver types its own."""
    return session.connection().connection.driver_connection


def write_staged(session: Session, batch_id: int, blocks: Iterable[list[Row]], *, copy_per_block: bool = False) -> int:
    """Write the batch's staged rows, block by block as they come (PostgreSQL: COPY);
    return how many numbers they hold. ``copy_per_block``: the blocks are made by queries
    on this session's connection (the send policy's checks counting in the database),
    which a COPY in progress would hold up, so each block gets a COPY of its own (one round
    trip per 5,000 numbers) instead of one COPY for the whole list."""

    def copy_block(copy: Any, block: list[Row]) -> None:
        # Digits and commas only: nothing to escape for COPY's text format.
        copy.write("".join(f"{batch_id}\t{seq}\t{n}\t{mobiles}\n" for seq, n, mobiles in block))

    return _write(session, batch_id, blocks, COLUMNS, copy_block, copy_per_block)


def write_staged_texts(
    session: Session, batch_id: int, blocks: Iterable[list[TextRow]], *, copy_per_block: bool = False
) -> int:
    """``write_staged`` for chunks that carry their own text (tasks/personal.py). A text may
    hold any character, so PostgreSQL's COPY gets each row through the driver, which
    escapes it (``write_row``)."""

    def copy_block(copy: Any, block: list[TextRow]) -> None:
        for row in block:
            copy.write_row((batch_id, *row))

    return _write(session, batch_id, blocks, TEXT_COLUMNS, copy_block, copy_per_block)


def _write(
    session: Session,
    batch_id: int,
    blocks: Iterable[list[Any]],
    columns: str,
    copy_block: Callable[[Any, list[Any]], None],
    copy_per_block: bool,
) -> int:
    """The staged rows written (PostgreSQL: ``copy_block`` into a COPY; SQLite: a prepared
    ``executemany`` per block); the numbers they hold. A row: (seq, size, numbers, ...)."""
    dbapi = _driver(session)
    numbers = 0
    if is_postgres(session):
        with dbapi.cursor() as cursor:
            for group in ([block] for block in blocks) if copy_per_block else [blocks]:
                with cursor.copy(f"COPY {columns} FROM STDIN") as copy:
                    for block in group:
                        copy_block(copy, block)
                        numbers += sum(row[1] for row in block)
        return numbers
    marks = ", ".join("?" * columns.count(","))  # the batch id and the row's fields
    cursor = dbapi.cursor()
    try:
        for block in blocks:
            cursor.executemany(f"INSERT INTO {columns} VALUES ({marks}, ?)", [(batch_id, *row) for row in block])
            numbers += sum(row[1] for row in block)
    finally:
        cursor.close()
    return numbers


def blocked_numbers(session: Session, account: str, fetch: int) -> Iterator[list[str]]:
    """The account's blocked numbers, ``fetch`` at a time (PostgreSQL: a server-side cursor),
    so that a caller keeping less than the numbers never holds them all."""
    postgres = is_postgres(session)
    dbapi = _driver(session)
    cursor = dbapi.cursor(name="smsq_blocked") if postgres else dbapi.cursor()
    try:
        cursor.execute("SELECT mobile FROM blocked_numbers WHERE account = " + ("%s" if postgres else "?"), (account,))
        while rows := cursor.fetchmany(fetch):
            yield [mobile for (mobile,) in rows]
    finally:
        cursor.close()

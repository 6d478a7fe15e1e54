"""Intake: a stream of numbers, as given, becomes a batch's staged chunks.

The numbers are normalised in Python a block at a time (invalid ones are
rejected with a reason) and written by the bulk path of the database into a
temporary table of the transaction: PostgreSQL ``COPY``, SQLite one prepared
``executemany``. One statement then de-duplicates them (first spelling wins
the position), leaves out the account's blocked numbers and groups the rest
into vendor-sized chunks, one ``split_chunks`` row per chunk. That is tens of
thousands of rows for a million numbers instead of a million: the chunk and
recipient rows, with their indexes, are written later by workers
(tasks/split.py), so the producer stays light.

Nothing of the list is held whole in memory: blocks of 5,000 entries.
"""
from __future__ import annotations

import itertools
from typing import Iterator

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from smsq.providers.numbers import normalise_block
from smsq.store.models import SplitChunk

BLOCK = 5000  # entries normalised and written per round trip
STAGE = "smsq_intake"  # the transaction's temporary table: (pos, mobile)
WORK_MEM = "128MB"  # PostgreSQL memory per sort of the grouping statement (a million numbers: ~90 MB)


def stage_numbers(session: Session, numbers: Iterator[str], landline: bool,
                  rejected: list[tuple[str, str]]) -> None:
    """Normalise ``numbers`` into the temporary table; append invalid entries to ``rejected``
    (each spelling once)."""
    postgres = session.bind.dialect.name == "postgresql"
    _create_stage(session, postgres)
    dbapi = session.connection().connection.dbapi_connection
    seen_rejects: set[str] = set()
    if postgres:
        with dbapi.cursor() as cursor, cursor.copy(f"COPY {STAGE} (mobile) FROM STDIN") as copy:
            for valid in _valid_blocks(numbers, landline, rejected, seen_rejects):
                # Normalised numbers are ASCII digits only: nothing to escape for COPY's text format.
                copy.write("\n".join(valid) + "\n")
        return
    cursor = dbapi.cursor()
    try:
        for valid in _valid_blocks(numbers, landline, rejected, seen_rejects):
            cursor.executemany(f"INSERT INTO {STAGE} (mobile) VALUES (?)", [(m,) for m in valid])
    finally:
        cursor.close()


def _create_stage(session: Session, postgres: bool) -> None:
    if postgres:
        # pos numbers the rows in list order; the table goes with the transaction.
        session.execute(text(f"CREATE TEMP TABLE {STAGE} (pos bigint GENERATED ALWAYS AS IDENTITY, "
                             f"mobile varchar(32)) ON COMMIT DROP"))
    else:
        # SQLite has no ON COMMIT DROP: a leftover of this connection is dropped first, and
        # stage_chunks drops it again. The rowid numbers the rows in list order.
        session.execute(text(f"DROP TABLE IF EXISTS temp.{STAGE}"))
        session.execute(text(f"CREATE TEMP TABLE {STAGE} (pos INTEGER PRIMARY KEY, mobile TEXT)"))


def _valid_blocks(numbers: Iterator[str], landline: bool, rejected: list[tuple[str, str]],
                  seen_rejects: set[str]) -> Iterator[list[str]]:
    while True:
        block = list(itertools.islice(numbers, BLOCK))
        if not block:
            return
        valid, invalid = normalise_block(block, landline=landline)
        for raw, reason in invalid:
            key = str(raw)[:64]
            if key not in seen_rejects:
                seen_rejects.add(key)
                rejected.append((str(raw), reason))
        if valid:
            yield valid


def blocked_in_stage(session: Session, account: str) -> list[tuple[str, str]]:
    """(mobile, reason) of the staged numbers the account must not send to."""
    return [(mobile, reason) for mobile, reason in session.execute(text(
        f"SELECT DISTINCT i.mobile, b.reason FROM {STAGE} i JOIN blocked_numbers b "
        f"ON b.account = :account AND b.mobile = i.mobile ORDER BY i.mobile"), {"account": account}).all()]


def stage_chunks(session: Session, batch_id: int, account: str, size: int, *, skip_blocked: bool) -> int:
    """Group the staged numbers into ``split_chunks`` rows of ``size``; return how many numbers.

    Unique numbers are numbered in the order of their first appearance; number n
    goes to chunk n // size, so chunks follow the list and only the last is short.
    ``skip_blocked``: leave out the account's blocked numbers (False when
    ``blocked_in_stage`` found none, which spares a join over the whole list)."""
    postgres = session.bind.dialect.name == "postgresql"
    not_blocked = ("WHERE NOT EXISTS (SELECT 1 FROM blocked_numbers b "
                   "WHERE b.account = :account AND b.mobile = i.mobile)") if skip_blocked else ""
    if postgres:
        # The sorts of a million rows stay in memory (the default work_mem spills them to
        # disk, twice as slow); SET LOCAL ends with the transaction.
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        # A temporary table has no statistics until analysed; without them the planner
        # guesses a few hundred rows and sorts where hashing a million is twice as fast.
        session.execute(text(f"ANALYZE {STAGE}"))
        first_seen = f"SELECT DISTINCT ON (mobile) mobile, pos FROM {STAGE} i {not_blocked} ORDER BY mobile, pos"
        joined = "string_agg(mobile, ',')"
    else:
        first_seen = f"SELECT mobile, min(pos) AS pos FROM {STAGE} i {not_blocked} GROUP BY mobile"
        joined = "group_concat(mobile, ',')"
    # Both aggregates take their rows in the order the window numbered them (list order).
    session.execute(text(
        f"INSERT INTO split_chunks (batch_id, seq, size, mobiles) "
        f"SELECT :batch, seq, count(*), {joined} "
        f"FROM (SELECT mobile, (row_number() OVER (ORDER BY pos) - 1) / :size AS seq "
        f"      FROM ({first_seen}) AS u) AS r "
        f"GROUP BY seq"), {"batch": batch_id, "size": size, "account": account})
    if not postgres:
        session.execute(text(f"DROP TABLE temp.{STAGE}"))
    return session.scalar(select(func.coalesce(func.sum(SplitChunk.size), 0))
                          .where(SplitChunk.batch_id == batch_id))

"""A batch's Timestamp at an account: its send second, unique among the account's batches.

orgws groups the calls of one batch by their Timestamp, which its document makes the
seconds from 1970 to the send time (providers/orgws.py). So every chunk and retry of
a batch carries one value, and two batches of one account never carry the same:
each takes its send second, or, when another batch of the account took that one
(two batches created in the same second), the next free second after it.

The claim is a row of ``batch_stamps`` whose primary key is (account, stamp), taken
by a conditional insert (``INSERT ... ON CONFLICT DO NOTHING``) in the transaction
that stores the batch: of two producers at once, one inserts and the other finds the
second taken (on PostgreSQL it waits for the first to commit or roll back) and tries
the next. The caller claims last in its transaction, so that wait is short. A batch
takes one second per account (a unique key too): two workers moving one batch to
another account of its route at once (tasks/routes.py) end with the one second the
first of them took.

An account that stores more than one batch a second for long runs its stamps ahead
of the clock by as many seconds as it is behind: the vendor's protocol has one batch
per account and second.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import BatchStamp
from .sql import insert_or_ignore

WINDOW = 64  # seconds of taken stamps read at once


def second_of(when: datetime) -> int:
    """Unix seconds of a naive UTC time."""
    return int(when.replace(tzinfo=UTC).timestamp())


def first_free(start: int, taken: Iterable[int]) -> int:
    """The first second from ``start`` on that is not in ``taken``."""
    used = set(taken)
    second = start
    while second in used:
        second += 1
    return second


def claim(session: Session, account: str, batch_id: int, due: datetime) -> int:
    """Take the first second from ``due`` (naive UTC, the batch's send time) on that no
    other batch of ``account`` took, for ``batch_id``, in the caller's transaction."""
    start = second_of(due)
    while True:
        taken = session.scalars(
            select(BatchStamp.stamp).where(
                BatchStamp.account == account, BatchStamp.stamp >= start, BatchStamp.stamp < start + WINDOW
            )
        ).all()
        second = first_free(start, taken)
        if second >= start + WINDOW:  # the whole window is taken: read the next one
            start = second
            continue
        row = dict(account=account, stamp=second, batch_id=batch_id)
        if insert_or_ignore(session, BatchStamp, row, None, returning=BatchStamp.stamp):
            return second
        took = taken_by(session, account, batch_id)
        if took is not None:  # another worker moving this batch to the account took one for it
            return took
        start = second + 1  # another batch took the second since we read


def taken_by(session: Session, account: str, batch_id: int) -> int | None:
    """The second ``batch_id`` took at ``account`` already, if any (a batch moved back and forth)."""
    return session.scalars(
        select(BatchStamp.stamp).where(BatchStamp.account == account, BatchStamp.batch_id == batch_id).limit(1)
    ).first()

"""A worker's claim on a chunk: taken, given back, held; and its queue marks.

Claim: ``pending -> sending`` (attempt + 1) by a conditional update that also
returns the content and the numbers (one transaction; on PostgreSQL one
statement, committed on its own: one round trip). A chunk in any other state
is not claimed: its message was a redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, select, text, update

from smsq.worker.config import Settings
from smsq.worker.db import autocommit, transaction

from ..lifecycle import ChunkState as C
from ..lifecycle import RecipientState as R
from ..lifecycle import chunks_from
from ..models import Batch, Chunk, Recipient, utcnow
from ..sql import fit, is_postgres

# When a chunk's first vendor call was: the retry budget counts from it. Kept in
# first_attempt_at from its first transient failure on; until then it is this claim's.
FIRST_ATTEMPT = func.coalesce(Chunk.first_attempt_at, Chunk.claimed_at)
DUE_SLACK = timedelta(seconds=1)  # a chunk due this soon is claimed now: its countdown ran a little short


@dataclass(frozen=True)
class ClaimedChunk:
    """A chunk this worker claimed (``sending``), with what its vendor call needs."""

    chunk_id: int
    batch_id: int
    seq: int
    account: str
    lane: str
    attempt: int
    content: str
    send_at: datetime | None  # the batch's schedule: reached by the time its chunk is claimed
    batch_created_at: datetime
    recipients: list[tuple[int, str]]  # (recipient id, mobile)
    first_attempt_at: datetime | None = None  # the chunk's first vendor call (this one, for a first claim)
    stamp: int | None = None  # the batch's stamp at this chunk's account (store/stamps.py); None: none
    kind: str = "notice"  # the batch's message kind (worker/kinds.py), whose rules the send is held to
    valid_until: datetime | None = None  # the batch's validity: not sent at all past it; None: no limit


def still_ours(claimed: ClaimedChunk, states=(C.SENDING,)):
    """The claimed chunk as this claim left it: same attempt, and in one of ``states``
    (a late answer also finds it ``unknown``, which the relay makes of a slow claim)."""
    return (Chunk.id == claimed.chunk_id) & (Chunk.attempts == claimed.attempt) & Chunk.state.in_(states)


CLAIMED_FROM = chunks_from(C.SENDING, (C.PENDING,))

# One statement on PostgreSQL: the claim, the batch's content and the chunk's
# queued numbers (the UPDATE in the CTE; the SELECT sees the rows as they were,
# which for recipients is as they are: the claim changes none).
CLAIM_PG = text(f"""
WITH claimed AS (
    UPDATE chunks SET state = '{C.SENDING}', attempts = attempts + 1, claimed_at = :now
    WHERE id = :id AND state = '{C.PENDING}' AND (next_attempt_at IS NULL OR next_attempt_at <= :soon)
      -- a batch cancelled while this chunk was out for a retry: the relay cancels it
      AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = chunks.batch_id AND b.cancelled_at IS NOT NULL)
    RETURNING id, batch_id, seq, account, lane, attempts, content, stamp,
              COALESCE(first_attempt_at, claimed_at) AS first_attempt_at)
-- a chunk's own content and stamp: taken for another account of its route when it was moved
SELECT c.id, c.batch_id, c.seq, c.account, c.lane, c.attempts, COALESCE(c.content, b.content) AS content,
       b.send_at, b.created_at, c.first_attempt_at, COALESCE(c.stamp, b.stamp) AS stamp, b.kind,
       b.valid_until, r.ids, r.mobiles
FROM claimed c JOIN batches b ON b.id = c.batch_id
CROSS JOIN LATERAL (
    SELECT array_agg(q.id ORDER BY q.id) AS ids, array_agg(q.mobile ORDER BY q.id) AS mobiles
    FROM recipients q WHERE q.batch_id = c.batch_id AND q.chunk_seq = c.seq AND q.state = '{R.QUEUED}') r
""")


def claim(conf: Settings, chunk_id: int) -> ClaimedChunk | None:
    """``pending -> sending`` (attempt + 1) and everything the send needs, in one
    transaction; None when the chunk is not ours to send."""
    now = utcnow()
    if not is_postgres(conf.database_url):
        with transaction(conf.database_url) as conn:
            return _claim_portable(conn, chunk_id, now)
    with autocommit(conf.database_url) as conn:  # one statement: atomic, one round trip
        row = conn.execute(CLAIM_PG, {"id": chunk_id, "now": now, "soon": now + DUE_SLACK}).first()
    if row is None:
        return None
    return ClaimedChunk(
        row.id,
        row.batch_id,
        row.seq,
        row.account,
        row.lane,
        row.attempts,
        row.content,
        row.send_at,
        row.created_at,
        list(zip(row.ids or [], row.mobiles or [], strict=True)),
        row.first_attempt_at,
        row.stamp,
        row.kind,
        row.valid_until,
    )


def _claim_portable(conn, chunk_id: int, now: datetime) -> ClaimedChunk | None:
    claimed = conn.execute(
        update(Chunk)
        .where(
            Chunk.id == chunk_id,
            Chunk.state.in_(CLAIMED_FROM),
            (Chunk.next_attempt_at.is_(None)) | (Chunk.next_attempt_at <= now + DUE_SLACK),
            ~exists().where(Batch.id == Chunk.batch_id, Batch.cancelled_at.is_not(None)),
        )
        .values(state=C.SENDING, attempts=Chunk.attempts + 1, claimed_at=now)
        .returning(
            Chunk.id,
            Chunk.batch_id,
            Chunk.seq,
            Chunk.account,
            Chunk.lane,
            Chunk.attempts,
            Chunk.content,
            FIRST_ATTEMPT.label("first_attempt_at"),
            Chunk.stamp,
        )
    ).first()
    if claimed is None:
        return None
    batch = conn.execute(
        select(Batch.content, Batch.send_at, Batch.created_at, Batch.stamp, Batch.kind, Batch.valid_until).where(
            Batch.id == claimed.batch_id
        )
    ).one()
    recipients = conn.execute(
        select(Recipient.id, Recipient.mobile)
        .where(Recipient.batch_id == claimed.batch_id, Recipient.chunk_seq == claimed.seq, Recipient.state == R.QUEUED)
        .order_by(Recipient.id)
    ).all()
    chunk_id, batch_id, seq, account, lane, attempt, content, first_attempt_at, stamp = claimed
    # the chunk's own content and stamp: taken for another account of its route when it was moved
    return ClaimedChunk(
        chunk_id,
        batch_id,
        seq,
        account,
        lane,
        attempt,
        content or batch.content,
        batch.send_at,
        batch.created_at,
        [(rid, mobile) for rid, mobile in recipients],
        first_attempt_at,
        batch.stamp if stamp is None else stamp,
        batch.kind,
        batch.valid_until,
    )


RELEASED_FROM = chunks_from(C.PENDING, (C.SENDING,))


def release_in(conn, claimed: ClaimedChunk, why: str, not_before: datetime | None = None) -> bool:
    """Give a claim back untouched (nothing was sent), in the caller's transaction:
    pending again, attempt not counted, unqueued (the relay publishes it again, after
    ``not_before`` if given). False: the chunk was no longer this claim's."""
    values = dict(state=C.PENDING, attempts=Chunk.attempts - 1, detail=fit(Chunk.detail, why), queued_at=None)
    if not_before is not None:
        values["next_attempt_at"] = not_before
    return bool(conn.execute(update(Chunk).where(still_ours(claimed, RELEASED_FROM)).values(**values)).rowcount)


def release(conf: Settings, claimed: ClaimedChunk, why: str, not_before: datetime | None = None) -> bool:
    """``release_in`` in a transaction of its own."""
    with transaction(conf.database_url) as conn:
        return release_in(conn, claimed, why, not_before)


HELD_FROM = chunks_from(C.PENDING, (C.PENDING,))


def hold(conf: Settings, chunk_ids: list[int], why: str, until: datetime) -> None:
    """Leave unclaimed chunks pending until ``until``, for the relay to publish then."""
    with transaction(conf.database_url) as conn:
        conn.execute(
            update(Chunk)
            .where(Chunk.id.in_(chunk_ids), Chunk.state.in_(HELD_FROM))
            .values(detail=fit(Chunk.detail, why), next_attempt_at=until, queued_at=None)
        )


def unqueue(conn, chunk_ids: list[int], *, pending_only: bool = True, queued_at: datetime | None = None) -> None:
    """Mark chunks as not in the broker (a publish that failed): the relay publishes them at
    its next pass. ``queued_at``: only those marked queued at that time (by this caller)."""
    for start in range(0, len(chunk_ids), 1000):
        where: list[ColumnElement[bool]] = [Chunk.id.in_(chunk_ids[start : start + 1000])]
        if pending_only:
            where.append(Chunk.state == C.PENDING)
        if queued_at is not None:
            where.append(Chunk.queued_at == queued_at)
        conn.execute(update(Chunk).where(*where).values(queued_at=None))


def mark_queued(conn, chunk_ids: list[int], now: datetime) -> None:
    """The relay is publishing these pending chunks now: no other pass publishes them again
    before ``republish_after``."""
    for start in range(0, len(chunk_ids), 500):
        conn.execute(
            update(Chunk)
            .where(Chunk.id.in_(chunk_ids[start : start + 500]), Chunk.state == C.PENDING)
            .values(queued_at=now)
        )


def wake(conn, accounts: list[str], detail_like: str) -> int:
    """Pending chunks of ``accounts`` held with a detail like ``detail_like`` are due now."""
    return conn.execute(
        update(Chunk)
        .where(Chunk.state == C.PENDING, Chunk.account.in_(accounts), Chunk.detail.like(detail_like))
        .values(next_attempt_at=None, queued_at=None)
    ).rowcount

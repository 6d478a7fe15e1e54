"""Chunks whose batch's validity (``batches.valid_until``) passed before their vendor call:
they end ``expired``, and so do their queued numbers. Never sent, never resent: ``expired``
is final (store/lifecycle.py).

Two writers, one conditional update each, so that a chunk is either sent or expired:

* the worker that claimed a chunk past its validity (``sending -> expired``, only while
  the claim is still its own: ``still_ours``), before any vendor call;
* the relay, for the pending chunks of batches past their validity (``pending ->
  expired``): held by an open circuit, waiting for a retry, for a rate-limit slot or in
  the broker. A worker's claim and this update both select ``pending``: one of them wins.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..lifecycle import ChunkState as C
from ..lifecycle import RecipientState as R
from ..lifecycle import chunks_from, recipients_from
from ..models import Batch, Chunk, Recipient
from ..sql import fit, rows_changed
from .claims import ClaimedChunk, still_ours

EXPIRED_CLAIM = chunks_from(C.EXPIRED, (C.SENDING,))
EXPIRED_WAITING = chunks_from(C.EXPIRED, (C.PENDING,))
EXPIRED_WITH_IT = recipients_from(R.EXPIRED, (R.QUEUED,))
STEP = 1000  # chunks per statement for their numbers


def _expire_numbers(session, batch_id: int, seqs: list[int], detail: str, now: datetime) -> int:
    numbers = 0
    for start in range(0, len(seqs), STEP):
        numbers += rows_changed(
            session.execute(
                update(Recipient)
                .where(
                    Recipient.batch_id == batch_id,
                    Recipient.chunk_seq.in_(seqs[start : start + STEP]),
                    Recipient.state.in_(EXPIRED_WITH_IT),
                )
                .values(state=R.EXPIRED, detail=fit(Recipient.detail, detail), updated_at=now)
                .execution_options(synchronize_session=False)
            )
        )
    return numbers


def expire_claimed(session, claimed: ClaimedChunk, detail: str, now: datetime) -> int | None:
    """The claimed chunk ends ``expired`` with its queued numbers (no vendor call was made,
    so the claim's attempt is not counted). Returns how many numbers expired; None: the
    chunk was no longer this claim's (nothing written)."""
    moved = session.execute(
        update(Chunk)
        .where(still_ours(claimed, EXPIRED_CLAIM))
        .values(
            state=C.EXPIRED,
            attempts=Chunk.attempts - 1,
            outcome="expired",
            finished_at=now,
            detail=fit(Chunk.detail, detail),
        )
        .execution_options(synchronize_session=False)
    )
    if not rows_changed(moved):
        return None
    return _expire_numbers(session, claimed.batch_id, [claimed.seq], detail, now)


def expire_waiting(session: Session, now: datetime, detail: str, limit: int) -> list[tuple[int, int, int]]:
    """Pending chunks of batches whose ``valid_until`` is ``now`` or before end ``expired``,
    with their queued numbers (at most ``limit`` chunks; the next pass takes the rest).
    Returns (batch id, chunks, numbers) per batch."""
    found = session.execute(
        select(Chunk.id, Chunk.batch_id)
        .join(Batch, Batch.id == Chunk.batch_id)
        .where(Batch.valid_until <= now, Chunk.state.in_(EXPIRED_WAITING))
        .order_by(Chunk.id)
        .limit(limit)
    ).all()
    by_batch: dict[int, list[int]] = {}
    for chunk_id, batch_id in found:
        by_batch.setdefault(batch_id, []).append(chunk_id)
    expired = []
    for batch_id, chunk_ids in by_batch.items():
        # RETURNING: exactly the chunks this statement moved (a worker may claim one meanwhile).
        seqs = [
            seq
            for (seq,) in session.execute(
                update(Chunk)
                .where(Chunk.id.in_(chunk_ids), Chunk.state.in_(EXPIRED_WAITING))
                .values(state=C.EXPIRED, outcome="expired", finished_at=now, detail=fit(Chunk.detail, detail))
                .returning(Chunk.seq)
                .execution_options(synchronize_session=False)
            ).all()
        ]
        if seqs:
            expired.append((batch_id, len(seqs), _expire_numbers(session, batch_id, seqs, detail, now)))
    return expired

"""Narrowing, written: a claimed chunk whose call the vendor refused over a number it
did not name (tasks/narrowing.py decides where its numbers go). In the caller's
transaction, as failover's move does: the offenders fail with the vendor's code and
words, the rest go to new pending chunks of the same account and batch, and the
refused chunk ends ``narrowed`` (``failed`` when no new chunk came of it).

The new chunks carry the id of the chunk whose refusal started the narrowing
(``narrowed_from``); that chunk counts the extra calls its narrowing has made
(``narrow_calls``, one per new chunk), which ``spend_calls`` holds under a cap with
one conditional update, so two halves narrowed at once cannot both pass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from smsq.providers import SendResult

from ..lifecycle import ChunkState as C
from ..lifecycle import RecipientState as R
from ..lifecycle import chunks_from, recipients_from
from ..models import BlockedNumber, Chunk, Recipient
from ..sql import fit, rows_changed
from .claims import ClaimedChunk, still_ours


@dataclass(frozen=True)
class Refused:
    """The refused chunk, as narrowing needs it."""

    root: int  # the chunk whose refusal started the narrowing (this one, the first time)
    content: str | None  # the chunk's own content (a moved chunk's), None: the batch's
    numbers: list[tuple[int, str]]  # its queued recipients (id, mobile), in the order sent
    blocked: set[str]  # those of its numbers on its account's blocked list


def refused_chunk(session: Session, claimed: ClaimedChunk) -> Refused | None:
    """The claimed chunk, locked, with its queued numbers; None when it is no longer this
    claim's (the relay made it unknown meanwhile)."""
    row = session.execute(
        select(Chunk.narrowed_from, Chunk.content).where(still_ours(claimed)).with_for_update()
    ).first()
    if row is None:
        return None
    numbers = [
        (rid, mobile)
        for rid, mobile in session.execute(
            select(Recipient.id, Recipient.mobile)
            .where(
                Recipient.batch_id == claimed.batch_id,
                Recipient.chunk_seq == claimed.seq,
                Recipient.state == R.QUEUED,
            )
            .order_by(Recipient.id)
        )
    ]
    blocked = set(
        session.scalars(
            select(BlockedNumber.mobile).where(
                BlockedNumber.account == claimed.account, BlockedNumber.mobile.in_([m for _, m in numbers])
            )
        )
    )
    return Refused(row.narrowed_from or claimed.chunk_id, row.content, numbers, blocked)


def spend_calls(session: Session, root: int, calls: int, most: int) -> int | None:
    """Count ``calls`` more extra calls against the narrowing ``root`` started; the total so
    far, or None (nothing counted) when it would pass ``most``."""
    spent = func.coalesce(Chunk.narrow_calls, 0) + calls
    if not rows_changed(
        session.execute(update(Chunk).where(Chunk.id == root, spent <= most).values(narrow_calls=spent))
    ):
        return None
    return session.scalar(select(Chunk.narrow_calls).where(Chunk.id == root))


def spent_calls(session: Session, root: int) -> int:
    """The extra calls the narrowing ``root`` started has made so far."""
    return session.scalar(select(func.coalesce(Chunk.narrow_calls, 0)).where(Chunk.id == root)) or 0


NARROWED_CLAIM = chunks_from(C.NARROWED, (C.SENDING,))
FAILED_CLAIM = chunks_from(C.FAILED, (C.SENDING,))
FAILED_HERE = recipients_from(R.FAILED, (R.QUEUED,))
SENT_AGAIN = recipients_from(R.QUEUED, (R.QUEUED,))


def narrow(
    session: Session,
    claimed: ClaimedChunk,
    result: SendResult,
    refused: Refused,
    *,
    failed: list[int],
    parts: list[list[int]],
    detail: str,
    now: datetime,
) -> list[int] | None:
    """Write a narrowing step: the recipients ``failed`` (ids) fail with the vendor's code and
    words; each of ``parts`` (recipient ids) becomes a new pending chunk; the claimed chunk
    ends ``narrowed`` (``failed`` when ``parts`` is empty) with ``detail``. Returns the new
    chunk ids; None when the claim is no longer this worker's (nothing written)."""
    state = C.NARROWED if parts else C.FAILED
    ends = NARROWED_CLAIM if parts else FAILED_CLAIM
    values = dict(
        state=state,
        outcome=result.outcome.value,
        code=result.code,
        detail=fit(Chunk.detail, detail),
        raw=fit(Chunk.raw, result.raw or ""),
        finished_at=now,
    )
    if not rows_changed(session.execute(update(Chunk).where(still_ours(claimed, ends)).values(**values))):
        return None
    if failed:
        session.execute(
            update(Recipient)
            .where(Recipient.id.in_(failed), Recipient.state.in_(FAILED_HERE))
            .values(
                state=R.FAILED, code=result.code, detail=fit(Recipient.detail, result.message or ""), updated_at=now
            )
        )
    return _new_chunks(session, claimed, refused, parts, now)


def _new_chunks(
    session: Session, claimed: ClaimedChunk, refused: Refused, parts: list[list[int]], now: datetime
) -> list[int]:
    """A pending chunk of the claimed one's account, lane and content for each part (queued
    now: published after the commit), its recipients moved to it."""
    if not parts:
        return []
    first = session.execute(select(func.max(Chunk.seq)).where(Chunk.batch_id == claimed.batch_id)).scalar_one() + 1
    for n, part in enumerate(parts):
        session.execute(
            update(Recipient)
            .where(Recipient.id.in_(part), Recipient.state.in_(SENT_AGAIN))
            .values(chunk_seq=first + n, updated_at=now)
        )
    rows = [
        {
            "batch_id": claimed.batch_id,
            "seq": first + n,
            "account": claimed.account,
            "lane": claimed.lane,
            "size": len(part),
            "state": C.PENDING,
            "attempts": 0,
            "queued_at": now,
            "content": refused.content,
            "narrowed_from": refused.root,
            "stamp": claimed.stamp,  # the Timestamp the refused call carried (store/stamps.py): the halves keep it
        }
        for n, part in enumerate(parts)
    ]
    return list(session.execute(insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True), rows).scalars())

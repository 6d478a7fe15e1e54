"""Chunk and recipient rows made: a batch's staged numbers cut into chunks
(tasks/split.py, tasks/intake.py), and a route's failover moving queued numbers
to new chunks of another account (tasks/routes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from ..lifecycle import ChunkState as C
from ..lifecycle import RecipientState as R
from ..lifecycle import chunks_from, recipients_from
from ..models import Batch, BlockedNumber, Chunk, Recipient, SplitChunk, SplitJob
from ..sql import fit, insert_or_ignore, is_postgres, rows_changed
from .claims import ClaimedChunk, still_ours
from .settling import cancel_pending


@dataclass(frozen=True)
class Cut:
    taken: int  # staged chunks cut by this call
    published: list[tuple[int, str, str]]  # (chunk id, lane, account) to publish after commit
    staged_left: bool  # staged chunks remain (taken by no one, or by another splitter)


def cut(session: Session, batch: Batch, *, limit: int | None, not_before, now) -> Cut:
    """Write chunk and recipient rows for up to ``limit`` staged chunks of ``batch``
    (all with None) and delete them from the stage, in the caller's transaction."""
    taken = select(SplitChunk.seq).where(SplitChunk.batch_id == batch.id).order_by(SplitChunk.seq)
    if limit is not None:
        taken = taken.limit(limit)
    seqs = session.scalars(taken.with_for_update(skip_locked=True)).all()
    if seqs:
        queued_at = None if not_before else now  # a schedule: the relay releases the chunks when due
        _write_chunks(session, batch, seqs, not_before, queued_at)
        _write_recipients(session, batch.id, seqs, now)
        session.execute(delete(SplitChunk).where(SplitChunk.batch_id == batch.id, SplitChunk.seq.in_(seqs)))
        if batch.cancelled_at is not None:  # cancelled while it was being split: never send it
            cancel_pending(session, [batch.id])
    left = session.scalar(select(exists().where(SplitChunk.batch_id == batch.id)))
    if not left:
        session.execute(delete(SplitJob).where(SplitJob.batch_id == batch.id))
    published = (
        []
        if not seqs
        else session.execute(
            select(Chunk.id, Chunk.lane, Chunk.account)
            .where(
                Chunk.batch_id == batch.id, Chunk.seq.in_(seqs), Chunk.state == C.PENDING, Chunk.queued_at.is_not(None)
            )
            .order_by(Chunk.seq)
        ).all()
    )
    return Cut(len(seqs), [(chunk_id, lane, account) for chunk_id, lane, account in published], bool(left))


def write_short(
    session: Session, batch: Batch, rows: list[tuple[int, int, str]], *, not_before, now
) -> list[tuple[int, str, str]]:
    """Chunk and recipient rows of a short list straight from its ``(seq, size, mobiles)``
    rows (tasks/intake.py chunk_short_list): two statements, where staging and cutting
    take seven round trips, the larger part of an OTP's intake on a busy database. Returns
    what ``cut`` does: the ``(chunk id, lane, account)`` to publish after commit."""
    queued_at = None if not_before else now  # a schedule: the relay releases the chunks when due
    chunk_ids = session.scalars(
        insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True),
        [
            {
                "batch_id": batch.id,
                "seq": seq,
                "account": batch.account,
                "lane": batch.lane,
                "size": size,
                "state": C.PENDING,
                "attempts": 0,
                "next_attempt_at": not_before,
                "queued_at": queued_at,
            }
            for seq, size, _ in rows
        ],
    ).all()  # in the rows' order: the chunks' order
    # In list order: a chunk's recipient ids follow the order its numbers are sent in.
    session.execute(
        insert(Recipient),
        [
            {"batch_id": batch.id, "mobile": mobile, "state": R.QUEUED, "chunk_seq": seq, "updated_at": now}
            for seq, _, mobiles in rows
            for mobile in mobiles.split(",")
        ],
    )
    if queued_at is None:
        return []
    return [(chunk_id, batch.lane, batch.account) for chunk_id in chunk_ids]


def _write_chunks(session: Session, batch: Batch, seqs: Sequence[int], not_before, queued_at) -> None:
    rows = select(
        SplitChunk.batch_id,
        SplitChunk.seq,
        literal(batch.account, String),
        literal(batch.lane, String),
        SplitChunk.size,
        literal(C.PENDING.value, String),
        literal(0, Integer),
        bindparam("not_before", not_before, DateTime),
        bindparam("queued_at", queued_at, DateTime),
        SplitChunk.content,  # a personal text's (None: the batch's)
    ).where(SplitChunk.batch_id == batch.id, SplitChunk.seq.in_(seqs))
    columns = ["batch_id", "seq", "account", "lane", "size", "state", "attempts", "next_attempt_at", "queued_at"]
    session.execute(insert(Chunk).from_select([*columns, "content"], rows))


def _write_recipients(session: Session, batch_id: int, seqs: Sequence[int], now) -> None:
    if is_postgres(session):
        # The staged text is split server-side: one statement, no number crosses the wire.
        session.execute(
            text(
                "INSERT INTO recipients (batch_id, mobile, state, chunk_seq, updated_at) "
                f"SELECT s.batch_id, m.mobile, '{R.QUEUED}', s.seq, :now FROM split_chunks s "
                "CROSS JOIN LATERAL unnest(string_to_array(s.mobiles, ',')) WITH ORDINALITY AS m(mobile, i) "
                "WHERE s.batch_id = :batch AND s.seq = ANY(:seqs) ORDER BY s.seq, m.i"
            ),
            {"now": now, "batch": batch_id, "seqs": list(seqs)},
        )
        return
    staged = session.execute(
        select(SplitChunk.seq, SplitChunk.mobiles)
        .where(SplitChunk.batch_id == batch_id, SplitChunk.seq.in_(seqs))
        .order_by(SplitChunk.seq)
    ).all()
    session.execute(
        insert(Recipient),
        [
            {"batch_id": batch_id, "mobile": mobile, "state": R.QUEUED, "chunk_seq": seq, "updated_at": now}
            for seq, mobiles in staged
            for mobile in mobiles.split(",")
        ],
    )


# -- failover ------------------------------------------------------------------

MOVED_CLAIM = chunks_from(C.MOVED, (C.SENDING,))
MOVED_WITH_IT = chunks_from(C.MOVED, (C.PENDING,))
REQUEUED = recipients_from(R.QUEUED, (R.QUEUED,))
BLOCKED_THERE = recipients_from(R.FAILED, REQUEUED)


def move(
    session: Session,
    claimed: ClaimedChunk,
    batch: Batch,
    account: str,
    content: str,
    size: int,
    detail: str,
    now: datetime,
    stamp: int | None = None,
) -> tuple[int, list[int]] | None:
    """Failover, in the caller's transaction: the claimed chunk and the batch's other
    pending chunks of its account become ``moved``; their queued numbers go to new
    chunks of ``size`` numbers on ``account``, with ``content`` (its vendor's) and
    ``stamp`` (the batch's at ``account``, None: the batch's own). Returns (chunks
    moved, new chunk ids); None when the claim is no longer this worker's."""
    detail = fit(Chunk.detail, detail)
    if not rows_changed(
        session.execute(
            update(Chunk).where(still_ours(claimed, MOVED_CLAIM)).values(state=C.MOVED, finished_at=now, detail=detail)
        )
    ):
        return None
    others = (
        session.execute(
            update(Chunk)
            .where(Chunk.batch_id == claimed.batch_id, Chunk.account == claimed.account, Chunk.state.in_(MOVED_WITH_IT))
            .values(state=C.MOVED, finished_at=now, detail=detail)
            .returning(Chunk.seq)
        )
        .scalars()
        .all()
    )
    seqs = [claimed.seq, *others]
    return 1 + len(others), _rechunk(session, batch, seqs, account, content, size, now, stamp)


def _rechunk(
    session: Session,
    batch: Batch,
    seqs: list[int],
    account: str,
    content: str,
    size: int,
    now: datetime,
    stamp: int | None,
) -> list[int]:
    """New chunks of ``size`` for the queued recipients of chunks ``seqs``. A number
    ``account`` must not send to (its blocked list: an unsubscribe at that vendor) fails there
    with the reason, as the producer would have refused it for a batch sent to it directly."""
    first = session.execute(select(func.max(Chunk.seq)).where(Chunk.batch_id == batch.id)).scalar_one() + 1
    queued = and_(Recipient.batch_id == batch.id, Recipient.chunk_seq.in_(seqs), Recipient.state.in_(REQUEUED))
    blocked = session.execute(
        select(Recipient.id, BlockedNumber.reason)
        .join(BlockedNumber, and_(BlockedNumber.account == account, BlockedNumber.mobile == Recipient.mobile))
        .where(queued)
    ).all()
    for rid, reason in blocked:  # under the target account's first new seq: that account refused them
        session.execute(
            update(Recipient)
            .where(Recipient.id == rid, Recipient.state.in_(BLOCKED_THERE))
            .values(
                state=R.FAILED,
                chunk_seq=first,
                code="blocked",
                detail=fit(Recipient.detail, f"blocked for account {account}: {reason}"),
                updated_at=now,
            )
        )
    ids = session.execute(select(Recipient.id).where(queued).order_by(Recipient.id)).scalars().all()
    if not ids:
        return []
    scheduled = batch.send_at is not None and batch.send_at > now  # held by smsq at every vendor
    rows = []
    for n, start in enumerate(range(0, len(ids), size)):
        part = ids[start : start + size]
        session.execute(update(Recipient).where(Recipient.id.in_(part)).values(chunk_seq=first + n, updated_at=now))
        rows.append(
            {
                "batch_id": batch.id,
                "seq": first + n,
                "account": account,
                "lane": batch.lane,
                "size": len(part),
                "state": C.PENDING,
                "attempts": 0,
                "next_attempt_at": batch.send_at if scheduled else None,
                "queued_at": None if scheduled else now,
                "content": None if content == batch.content else content,
                "stamp": stamp,
            }
        )
    return list(session.execute(insert(Chunk).returning(Chunk.id), rows).scalars())


FAILED_CLAIM = chunks_from(C.FAILED, (C.SENDING,))
FAILED_WITH_IT = recipients_from(R.FAILED, (R.QUEUED,))


def fail_claimed(session: Session, claimed: ClaimedChunk, detail: str, now: datetime) -> bool:
    """The claimed chunk failed without a vendor call (no account of its route can carry
    its content): it and its queued numbers become ``failed``. False: no longer ours."""
    if not rows_changed(
        session.execute(
            update(Chunk)
            .where(still_ours(claimed, FAILED_CLAIM))
            .values(state=C.FAILED, finished_at=now, detail=fit(Chunk.detail, detail))
        )
    ):
        return False
    session.execute(
        update(Recipient)
        .where(
            Recipient.batch_id == claimed.batch_id,
            Recipient.chunk_seq == claimed.seq,
            Recipient.state.in_(FAILED_WITH_IT),
        )
        .values(state=R.FAILED, detail=fit(Recipient.detail, detail), updated_at=now)
    )
    return True


REJECT_BLOCK = 5000  # rejected numbers written per statement


def write_rejected(session: Session, batch_id: int, rejected: list[tuple[str, str]], now: datetime) -> None:
    """The numbers refused at intake, as ``rejected`` recipients of the batch with why
    (a number given twice is written once)."""
    for start in range(0, len(rejected), REJECT_BLOCK):
        rows = [
            {
                "batch_id": batch_id,
                "mobile": fit(Recipient.mobile, raw),
                "state": R.REJECTED,
                "detail": fit(Recipient.detail, reason),
                "updated_at": now,
            }
            for raw, reason in rejected[start : start + REJECT_BLOCK]
        ]
        insert_or_ignore(session, Recipient, rows, ["batch_id", "mobile"])

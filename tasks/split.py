"""``smsq.split_batch``: a worker cuts a batch's staged numbers into chunks and publishes them.

The producer (tasks/producer.py) stores a large batch as ``split_chunks`` rows
and one ``split_jobs`` row, and publishes one ``split_batch(batch_id)``. Here,
a block of staged chunks at a time, one transaction writes their chunk and
recipient rows and deletes the staged rows; only after it commits are the
chunk tasks published. So:

* a worker that dies mid-split loses nothing: what it committed is made (and
  the relay publishes chunks whose message it never sent), what it did not is
  still staged, and the relay publishes the split job again
  (``republish_after``) — the next run takes the staged rows that are left;
* a split job delivered twice sends nothing twice: a staged row is taken under
  ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) or the write lock (SQLite), and
  ``send_chunk``'s claim turns away a chunk published twice.

Small batches are cut inline by the producer with the same code (``cut``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import (DateTime, Integer, String, bindparam, delete, exists, func, insert, literal, select,
                        text, update)
from sqlalchemy.orm import Session

from smsq.store.models import Batch, Chunk, Recipient, SplitChunk, SplitJob, utcnow
from smsq.worker.app import smsq_task
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope

from .cancel import cancel_pending
from .publish import GROUP_FROM, GROUP_SIZE, publish_chunk_rows
from .schema import ensure_schema

log = logging.getLogger("smsq.split")

SPLIT_BLOCK = 50  # staged chunks (5,000 numbers for a 100-number vendor) cut per transaction


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
    published = [] if not seqs else session.execute(
        select(Chunk.id, Chunk.lane, Chunk.account).where(
            Chunk.batch_id == batch.id, Chunk.seq.in_(seqs), Chunk.state == "pending",
            Chunk.queued_at.is_not(None)).order_by(Chunk.seq)).all()
    return Cut(len(seqs), [tuple(row) for row in published], bool(left))


def write_short(session: Session, batch: Batch, rows: list[tuple[int, int, str]], *, not_before,
                now) -> list[tuple[int, str, str]]:
    """Chunk and recipient rows of a short list straight from its ``(seq, size, mobiles)``
    rows (tasks/intake.py chunk_short_list): two statements, where staging and cutting
    take seven round trips, the larger part of an OTP's intake on a busy database. Returns
    what ``cut`` does: the ``(chunk id, lane, account)`` to publish after commit."""
    queued_at = None if not_before else now  # a schedule: the relay releases the chunks when due
    chunk_ids = session.scalars(insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True), [
        {"batch_id": batch.id, "seq": seq, "account": batch.account, "lane": batch.lane, "size": size,
         "state": "pending", "attempts": 0, "next_attempt_at": not_before, "queued_at": queued_at}
        for seq, size, _ in rows]).all()  # in the rows' order: the chunks' order
    # In list order: a chunk's recipient ids follow the order its numbers are sent in.
    session.execute(insert(Recipient), [
        {"batch_id": batch.id, "mobile": mobile, "state": "queued", "chunk_seq": seq, "updated_at": now}
        for seq, _, mobiles in rows for mobile in mobiles.split(",")])
    if queued_at is None:
        return []
    return [(chunk_id, batch.lane, batch.account) for chunk_id in chunk_ids]


def _write_chunks(session: Session, batch: Batch, seqs: list[int], not_before, queued_at) -> None:
    rows = select(SplitChunk.batch_id, SplitChunk.seq, literal(batch.account, String), literal(batch.lane, String),
                  SplitChunk.size, literal("pending", String), literal(0, Integer),
                  bindparam("not_before", not_before, DateTime), bindparam("queued_at", queued_at, DateTime)
                  ).where(SplitChunk.batch_id == batch.id, SplitChunk.seq.in_(seqs))
    session.execute(insert(Chunk).from_select(
        ["batch_id", "seq", "account", "lane", "size", "state", "attempts", "next_attempt_at", "queued_at"], rows))


def _write_recipients(session: Session, batch_id: int, seqs: list[int], now) -> None:
    if session.bind.dialect.name == "postgresql":
        # The staged text is split server-side: one statement, no number crosses the wire.
        session.execute(text(
            "INSERT INTO recipients (batch_id, mobile, state, chunk_seq, updated_at) "
            "SELECT s.batch_id, m.mobile, 'queued', s.seq, :now FROM split_chunks s "
            "CROSS JOIN LATERAL unnest(string_to_array(s.mobiles, ',')) WITH ORDINALITY AS m(mobile, i) "
            "WHERE s.batch_id = :batch AND s.seq = ANY(:seqs) ORDER BY s.seq, m.i"),
            {"now": now, "batch": batch_id, "seqs": list(seqs)})
        return
    staged = session.execute(select(SplitChunk.seq, SplitChunk.mobiles).where(
        SplitChunk.batch_id == batch_id, SplitChunk.seq.in_(seqs)).order_by(SplitChunk.seq)).all()
    session.execute(insert(Recipient), [
        {"batch_id": batch_id, "mobile": mobile, "state": "queued", "chunk_seq": seq, "updated_at": now}
        for seq, mobiles in staged for mobile in mobiles.split(",")])


def run_split(conf: Settings, batch_id: int) -> int:
    """Cut the batch's staged chunks a block at a time, publishing each block after its
    commit; return how many chunk tasks were published."""
    published = 0
    with session_scope(conf.database_url, readonly=True) as session:
        staged = staged_counts(session, [batch_id]).get(batch_id, (0, 0))[0]
    # A campaign's chunks go out in groups, for throughput; a smaller batch's a message
    # each, so that all of its chunks are sent side by side at once (tasks/publish.py).
    group_size = GROUP_SIZE if staged >= GROUP_FROM else 1
    while True:
        now = utcnow()
        with session_scope(conf.database_url) as session:
            # A splitter at work: the relay leaves the job alone. (A statement, not an ORM
            # change: another run of the job may delete the row before this one commits.)
            not_before = session.execute(update(SplitJob).where(SplitJob.batch_id == batch_id)
                                         .values(queued_at=now).returning(SplitJob.not_before)).first()
            batch = session.get(Batch, batch_id)
            if not_before is None or batch is None:
                break  # done (by this run or another), or purged
            block = cut(session, batch, limit=SPLIT_BLOCK, not_before=not_before[0], now=now)
        if block.published:
            done = publish_chunk_rows(conf, batch_id, block.published, group_size)
            published += done
            if done < len(block.published):
                # The broker failed: the rest of the chunks are marked for the relay, and the
                # job is given back to it too (its next pass publishes it again).
                with session_scope(conf.database_url) as session:
                    session.execute(update(SplitJob).where(SplitJob.batch_id == batch_id).values(queued_at=None))
                break
        if not block.taken or not block.staged_left:
            break  # all cut; or what is left is being cut by another run of this job
    log.info("batch %s: split, %s chunk task(s) published", batch_id, published)
    return published


@smsq_task(name="smsq.split_batch", ignore_result=True)
def split_batch(batch_id: int) -> int:
    conf = settings()
    ensure_schema(conf)
    return run_split(conf, batch_id)


def staged_counts(session: Session, batch_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{batch id: (chunks, numbers) still to be cut} for those of the batches that have some."""
    if not batch_ids:
        return {}
    return {batch_id: (int(chunks), int(numbers)) for batch_id, chunks, numbers in session.execute(
        select(SplitChunk.batch_id, func.count(), func.sum(SplitChunk.size))
        .where(SplitChunk.batch_id.in_(batch_ids)).group_by(SplitChunk.batch_id)).all()}

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

Small batches are cut inline by the producer with the same code (``cut``, in
store/ledger/cutting.py, which writes the rows).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from smsq.store.ledger import cut
from smsq.store.models import Batch, SplitChunk, SplitJob, utcnow
from smsq.worker.app import smsq_task
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope

from .publish import GROUP_FROM, GROUP_SIZE, publish_chunk_rows
from .schema import ensure_schema

log = logging.getLogger("smsq.split")

SPLIT_BLOCK = 50  # staged chunks (5,000 numbers for a 100-number vendor) cut per transaction


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
            not_before = session.execute(
                update(SplitJob)
                .where(SplitJob.batch_id == batch_id)
                .values(queued_at=now)
                .returning(SplitJob.not_before)
            ).first()
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
    return {
        batch_id: (int(chunks), int(numbers))
        for batch_id, chunks, numbers in session.execute(
            select(SplitChunk.batch_id, func.count(), func.sum(SplitChunk.size))
            .where(SplitChunk.batch_id.in_(batch_ids))
            .group_by(SplitChunk.batch_id)
        ).all()
    }

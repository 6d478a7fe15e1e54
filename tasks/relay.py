"""``smsq.relay``: the outbox relay, run by beat every few seconds.

* ``sending`` chunks older than the send timeout become ``unknown``: their
  worker died or hung after (maybe) calling the vendor, so they must not be
  resent automatically.
* ``pending`` chunks of a cancelled batch (a retry of a chunk that was sending
  when the batch was cancelled) become ``cancelled``.
* ``pending`` chunks that are due and not queued recently are published: a
  broker message that got lost, a publish that failed after commit, a retry
  longer than a countdown, and scheduled sends whose time has come.
* split jobs not queued recently are published again: one whose publish
  failed (the broker was down when the batch was stored), and one whose
  worker died mid-split (the next run cuts what is still staged).
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from sqlalchemy import and_, or_, select, update

from smsq.store.models import Batch, Chunk, Recipient, SplitJob, utcnow
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from .cancel import cancel_stragglers
from .publish import outbox_producer, publish_chunk, publish_split
from .schema import ensure_schema

log = logging.getLogger("smsq.relay")

PASS_LIMIT = 2000  # chunks published per pass; the next pass takes the rest


def expire_sending(conf) -> int:
    now = utcnow()
    cutoff = now - timedelta(seconds=conf.send_timeout)
    with session_scope(conf.database_url) as session:
        stale = session.execute(select(Chunk.id, Chunk.batch_id, Chunk.seq).where(
            Chunk.state == "sending", Chunk.claimed_at < cutoff).limit(PASS_LIMIT)).all()
        for chunk_id, batch_id, seq in stale:
            moved = session.execute(update(Chunk).where(Chunk.id == chunk_id, Chunk.state == "sending").values(
                state="unknown", outcome="ambiguous", finished_at=now,
                detail=f"no outcome recorded within {conf.send_timeout:.0f}s of the claim; "
                       f"the vendor may have accepted it, so it is not resent")).rowcount
            if moved:
                session.execute(update(Recipient).where(
                    Recipient.batch_id == batch_id, Recipient.chunk_seq == seq, Recipient.state == "queued")
                    .values(state="unknown", updated_at=now))
                log.warning("chunk %s (batch %s): sending for too long, now unknown", chunk_id, batch_id)
    return len(stale)


def publish_due(conf) -> int:
    now = utcnow()
    stale_queue = now - timedelta(seconds=conf.republish_after)
    with session_scope(conf.database_url) as session:
        due = session.execute(select(Chunk.id, Chunk.lane, Chunk.batch_id, Chunk.account).where(
            Chunk.state == "pending",
            or_(Chunk.next_attempt_at.is_(None), Chunk.next_attempt_at <= now),
            or_(Chunk.queued_at.is_(None), Chunk.queued_at <= stale_queue),
        ).order_by(Chunk.id).limit(PASS_LIMIT)).all()
        if due:
            ids = [chunk_id for chunk_id, *_ in due]
            for start in range(0, len(ids), 500):
                session.execute(update(Chunk).where(and_(Chunk.id.in_(ids[start:start + 500]),
                                                         Chunk.state == "pending")).values(queued_at=now))
    if due:
        with outbox_producer(conf) as producer:
            for chunk_id, lane, batch_id, account in due:
                publish_chunk(chunk_id, lane, batch_id=batch_id, account=account, producer=producer)
    if due:
        log.info("relay: published %s due chunks", len(due))
    return len(due)


def publish_due_splits(conf) -> int:
    """Publish again the split jobs nobody published or worked on for ``republish_after``."""
    now = utcnow()
    stale_queue = now - timedelta(seconds=conf.republish_after)
    with session_scope(conf.database_url) as session:
        due = session.execute(select(SplitJob.batch_id, Batch.lane, Batch.account)
                              .join(Batch, Batch.id == SplitJob.batch_id)
                              .where(or_(SplitJob.queued_at.is_(None), SplitJob.queued_at <= stale_queue))
                              .order_by(SplitJob.batch_id).limit(PASS_LIMIT)).all()
        if due:
            session.execute(update(SplitJob).where(SplitJob.batch_id.in_([b for b, _, _ in due]))
                            .values(queued_at=now))
    published = sum(publish_split(conf, batch_id, lane, account) for batch_id, lane, account in due)
    if due:
        log.info("relay: published %s split job(s)", published)
    return published


def cancel_late(conf) -> int:
    with session_scope(conf.database_url) as session:
        cancelled = cancel_stragglers(session)
    if cancelled:
        log.info("relay: cancelled %s chunks of cancelled batches", cancelled)
    return cancelled


def run_relay() -> dict[str, int]:
    conf = settings()
    ensure_schema(conf)
    return {"expired": expire_sending(conf), "cancelled": cancel_late(conf), "published": publish_due(conf),
            "splits": publish_due_splits(conf)}


@shared_task(name="smsq.relay", ignore_result=True)
def relay() -> dict[str, int]:
    return run_relay()

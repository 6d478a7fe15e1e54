"""``smsq.relay``: the outbox relay, run every few seconds — sent by beat, and run by
every worker itself (scheduler/relay_timer.py), so that neither a stopped beat nor a
lost broker message strands a chunk. A lease row in the database (the same kind
the polls take) lets one pass through per interval, whoever runs it.

* ``sending`` chunks older than the send timeout become ``unknown``: their
  worker died or hung after (maybe) calling the vendor, so they must not be
  resent automatically.
* ``pending`` chunks of a cancelled batch (a retry of a chunk that was sending
  when the batch was cancelled) become ``cancelled``.
* ``pending`` chunks of a batch whose validity (``valid_for``) has passed become
  ``expired`` with their numbers, wherever they wait (an open circuit, a retry, the
  broker): never sent (tasks/validity.py).
* ``pending`` chunks that are due and not queued recently are published: a
  broker message that got lost, a publish that failed after commit, a retry
  longer than a countdown, and scheduled sends whose time has come. A chunk
  whose time comes within ``release_ahead`` is published a little early with a
  countdown to its time: the worker takes it at that time, not up to a relay
  interval later. Until the worker claims it, it is still ``pending`` in the
  database: ``smsq cancel`` stops it, and a redelivered or second message for it
  finds it claimed and sends nothing.
* split jobs not queued recently are published again: one whose publish
  failed (the broker was down when the batch was stored), and one whose
  worker died mid-split (the next run cuts what is still staged).
* numbers a vendor refused by count only (dxt ``b``, qxs successCounts) are
  placed: those of their accepted chunk that no delivery report placed within
  ``SMSQ_REPORT_WAIT`` (or, sooner, all that are left once reports placed every
  other number) become ``failed``, one UPDATE per chunk.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from smsq.store import leases, ledger
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Batch, Chunk, SplitJob, utcnow
from smsq.worker.app import smsq_task
from smsq.worker.config import settings
from smsq.worker.db import session_scope
from smsq.worker.services import Outage, describe, unreachable_kind

from . import validity
from .cancel import cancel_stragglers
from .publish import MAX_COUNTDOWN, outbox_producer, publish_chunk, publish_split
from .schema import ensure_schema

log = logging.getLogger("smsq.relay")

PASS_LIMIT = 2000  # chunks published per pass; the next pass takes the rest
RELAY_LEASE = ("*", "relay")  # the relay's poll_leases row: "*" is no account's name


def expire_sending(conf) -> int:
    cutoff = utcnow() - timedelta(seconds=conf.send_timeout)
    detail = (
        f"no outcome recorded within {conf.send_timeout:.0f}s of the claim; "
        f"the vendor may have accepted it, so it is not resent"
    )
    with session_scope(conf.database_url) as session:
        found, expired = ledger.expire(session, cutoff, detail, PASS_LIMIT)
    for chunk_id, batch_id in expired:
        log.warning("chunk %s (batch %s): sending for too long, now unknown", chunk_id, batch_id)
    return found


def release_ahead(conf) -> float:
    """Seconds before its time that a waiting chunk is published, with a countdown to
    that time. Two relay intervals: passes drift (a busy host, the lease changing hands),
    and the pass before the time must still catch it. At most a broker countdown
    (``MAX_COUNTDOWN``), and half of ``republish_after``, so that a message on its way
    is never taken for a lost one."""
    return min(2 * conf.relay_interval, MAX_COUNTDOWN, conf.republish_after / 2)


def _countdown(due_at: datetime | None, now: datetime) -> float | None:
    """Seconds from ``now`` to ``due_at``; None when it is due already."""
    if due_at is None or due_at <= now:
        return None
    return (due_at - now).total_seconds()


def publish_due(conf) -> int:
    now = utcnow()
    stale_queue = now - timedelta(seconds=conf.republish_after)
    ahead = now + timedelta(seconds=release_ahead(conf))
    with session_scope(conf.database_url) as session:
        due = session.execute(
            select(Chunk.id, Chunk.lane, Chunk.batch_id, Chunk.account, Chunk.next_attempt_at)
            .where(
                Chunk.state == ChunkState.PENDING,
                or_(Chunk.next_attempt_at.is_(None), Chunk.next_attempt_at <= ahead),
                or_(Chunk.queued_at.is_(None), Chunk.queued_at <= stale_queue),
            )
            .order_by(Chunk.id)
            .limit(PASS_LIMIT)
        ).all()
        if due:
            ledger.mark_queued(session, [chunk_id for chunk_id, *_ in due], now)
    published = 0
    try:
        if due:
            with outbox_producer(conf) as producer:
                for chunk_id, lane, batch_id, account, due_at in due:
                    publish_chunk(
                        chunk_id,
                        lane,
                        batch_id=batch_id,
                        account=account,
                        producer=producer,
                        countdown=_countdown(due_at, utcnow()),
                    )
                    published += 1
    except Exception:
        # The broker is gone: what was not published is due again at the next pass,
        # not SMSQ_REPUBLISH_AFTER later.
        unpublished = [chunk_id for chunk_id, *_ in due[published:]]
        with session_scope(conf.database_url) as session:
            ledger.unqueue(session, unpublished, queued_at=now)
        raise
    if due:
        log.info("relay: published %s due chunks", len(due))
    return len(due)


def publish_due_splits(conf) -> int:
    """Publish again the split jobs nobody published or worked on for ``republish_after``."""
    now = utcnow()
    stale_queue = now - timedelta(seconds=conf.republish_after)
    with session_scope(conf.database_url) as session:
        due = session.execute(
            select(SplitJob.batch_id, Batch.lane, Batch.account)
            .join(Batch, Batch.id == SplitJob.batch_id)
            .where(or_(SplitJob.queued_at.is_(None), SplitJob.queued_at <= stale_queue))
            .order_by(SplitJob.batch_id)
            .limit(PASS_LIMIT)
        ).all()
        if due:
            session.execute(update(SplitJob).where(SplitJob.batch_id.in_([b for b, _, _ in due])).values(queued_at=now))
    published = sum(publish_split(conf, batch_id, lane, account) for batch_id, lane, account in due)
    if due:
        log.info("relay: published %s split job(s)", published)
    return published


def report_wait_words(seconds: float) -> str:
    """``48 h``, ``90 min``, ``30 s``: SMSQ_REPORT_WAIT as a number's detail says it."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h (SMSQ_REPORT_WAIT)"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min (SMSQ_REPORT_WAIT)"
    return f"{seconds:g} s (SMSQ_REPORT_WAIT)"


def place_refusals(conf) -> int:
    """Fail the numbers a vendor refused by count only, once it is known which."""
    with session_scope(conf.database_url) as session:
        placed = ledger.place_refusals(session, utcnow(), report_wait_words(conf.report_wait), PASS_LIMIT)
    for chunk_id, batch_id, failed in placed:
        log.info(
            "chunk %s (batch %s): %s number(s) the vendor refused without naming them, failed",
            chunk_id,
            batch_id,
            failed,
        )
    return sum(failed for _, _, failed in placed)


def cancel_late(conf) -> int:
    with session_scope(conf.database_url) as session:
        cancelled = cancel_stragglers(session)
    if cancelled:
        log.info("relay: cancelled %s chunks of cancelled batches", cancelled)
    return cancelled


def run_relay() -> dict[str, int]:
    conf = settings()
    ensure_schema(conf)
    return {
        "expired": expire_sending(conf),
        "cancelled": cancel_late(conf),
        "past_validity": validity.expire_waiting(conf),  # before the publishes: an expired chunk is never sent
        "refused": place_refusals(conf),  # (before the publishes: the database alone, a broker down or not)
        "published": publish_due(conf),
        "splits": publish_due_splits(conf),
    }


def run_relay_if_leased() -> dict[str, int] | None:
    """One relay pass, if no other process had one within the relay interval."""
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url) as session:
        if not leases.take(session, *RELAY_LEASE, max(0.0, conf.relay_interval - leases.MARGIN)):
            return None
    return run_relay()


_outages: dict[str, Outage] = {}


def relay_once() -> dict[str, int] | None:
    """``run_relay_if_leased``, saying once per outage that a service cannot be reached
    (the next pass tries again) instead of a traceback every few seconds."""
    try:
        result = run_relay_if_leased()
    except Exception as exc:
        kind = unreachable_kind(exc)
        if kind is None:
            raise
        if kind not in _outages:
            _outages[kind] = Outage(log, describe(kind), "the relay tries again every interval")
        _outages[kind].down(exc)
        return None
    for outage in _outages.values():
        outage.up()
    return result


@smsq_task(name="smsq.relay", ignore_result=True)
def relay() -> dict[str, int] | None:
    return relay_once()

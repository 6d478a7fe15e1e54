"""``smsq.send_chunk``: one vendor call for one chunk, at most once per claim.

1. Claim: ``pending -> sending`` (attempts + 1) by a conditional update. A
   message for a chunk in any other state is a redelivery: do nothing.
2. Take a token from the account's shared rate limiter.
3. Call the provider; record the outcome by the taxonomy:

   accepted                  -> accepted; recipients sent (vendor ids kept)
   transient                 -> pending again after a backoff, up to max_attempts
   rate_limited              -> pending after the vendor's interval; not counted as an attempt
   auth / balance            -> failed, logged as an alert; the account's circuit opens
                                (tasks/circuit.py): its other chunks wait without calling the vendor
   invalid_request / blocked -> failed
   ambiguous                 -> unknown: never resent automatically

4. A chunk that ended ``failed`` or ``unknown`` ends the task as a Celery
   failure (``ChunkFailed`` / ``ChunkUnknown``, declared expected: logged
   without a traceback, and acked like any finished task), so Flower does not
   show it as a plain success.

The record transaction also appends the call (account, outcome, seconds) to
``vendor_calls``, which `smsq metrics` counts: no extra transaction per chunk.

Failover routes (tasks/routes.py) hook in at two marked places: before the call
(the account's circuit admits the chunk, or the chunk waits or moves to the
route's next account) and after it (a call that trips the circuit moves the
numbers of a routed batch on instead of failing them).

A worker that dies between claim and record leaves the chunk ``sending``; the
relay turns it ``unknown`` after the send timeout, because the vendor may have
accepted it.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from celery import shared_task
from sqlalchemy import and_, bindparam, exists, select, update

from smsq.providers import Outcome, SendContext, SendResult
from smsq.providers.base import BEIJING, RAW_KEEP
from smsq.store.models import Batch, Chunk, PollStatus, Recipient, VendorCall, utcnow
from smsq.worker.clients import provider_for
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope
from smsq.worker.limiter import limiter

from . import circuit, routes
from .publish import MAX_COUNTDOWN, chunk_label, publish_chunk
from .schema import ensure_schema

log = logging.getLogger("smsq.send")


class ChunkNotSent(Exception):
    """A chunk's vendor call ended without the vendor taking it (or without
    knowing whether it did). Raised after the outcome is recorded, so that the
    task ends as a failure in Flower and the worker log; nothing is retried by it."""


class ChunkFailed(ChunkNotSent):
    """The chunk is ``failed``: the vendor refused it (auth, balance, invalid, blocked)
    or transient errors used up every attempt."""


class ChunkUnknown(ChunkNotSent):
    """The chunk is ``unknown``: the vendor may have accepted it; it is never resent
    automatically (``smsq settle`` decides)."""


@dataclass(frozen=True)
class Work:
    chunk_id: int
    batch_id: int
    seq: int
    account: str
    lane: str
    attempt: int
    content: str
    send_at: datetime | None
    batch_created_at: datetime
    recipients: list[tuple[int, str]]  # (recipient id, mobile)


def claim(conf: Settings, chunk_id: int) -> Work | None:
    now = utcnow()
    with session_scope(conf.database_url) as session:
        claimed = session.execute(
            update(Chunk)
            .where(Chunk.id == chunk_id, Chunk.state == "pending",
                   (Chunk.next_attempt_at.is_(None)) | (Chunk.next_attempt_at <= now + timedelta(seconds=1)),
                   # a batch cancelled while this chunk was out for a retry: the relay cancels it
                   ~exists().where(Batch.id == Chunk.batch_id, Batch.cancelled_at.is_not(None)))
            .values(state="sending", attempts=Chunk.attempts + 1, claimed_at=now)
        ).rowcount
        if claimed != 1:
            return None
        chunk = session.get(Chunk, chunk_id)
        batch = session.get(Batch, chunk.batch_id)
        recipients = session.execute(
            select(Recipient.id, Recipient.mobile)
            .where(Recipient.batch_id == chunk.batch_id, Recipient.chunk_seq == chunk.seq,
                   Recipient.state == "queued")
            .order_by(Recipient.id)).all()
        # chunk.content: prepared for another vendor of the route when the chunk was moved
        return Work(chunk.id, chunk.batch_id, chunk.seq, chunk.account, chunk.lane, chunk.attempts,
                    chunk.content or batch.content, batch.send_at, batch.created_at, [tuple(r) for r in recipients])


def release(conf: Settings, work: Work, why: str, not_before: datetime | None = None) -> None:
    """Give a claim back untouched (nothing was sent): pending again, attempt not counted.
    The relay publishes it again (after ``not_before``, if given)."""
    values = dict(state="pending", attempts=Chunk.attempts - 1, detail=why[:500], queued_at=None)
    if not_before is not None:
        values["next_attempt_at"] = not_before
    with session_scope(conf.database_url) as session:
        session.execute(update(Chunk).where(Chunk.id == work.chunk_id, Chunk.state == "sending").values(**values))


def account_held_until(conf: Settings, account: str) -> tuple[datetime, str] | None:
    """While the account's circuit is open (its send failed with auth or balance, or ran
    out of retries): until when its other chunks wait, and why. Calling the vendor again
    with a wrong password is how accounts get locked (dxt -10: 帐号已被锁定)."""
    return circuit.held_until(conf, account)


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of 2, 4, 8 ... seconds, at most a minute."""
    ceiling = min(MAX_COUNTDOWN, 2.0 ** attempt)
    return random.uniform(ceiling / 2, ceiling)


def _chunk_is_ours(work: Work):
    # The relay may have turned a slow claim 'unknown'; a late real answer still wins.
    return and_(Chunk.id == work.chunk_id, Chunk.attempts == work.attempt,
                Chunk.state.in_(("sending", "unknown")))


def record(conf: Settings, work: Work, result: SendResult,
           call_seconds: float | None = None) -> tuple[str, float | None]:
    """Store the outcome; return the chunk's new state and, for a retry, the delay.
    ``call_seconds``: how long the vendor call took, kept in ``vendor_calls``
    (None: no vendor call was made)."""
    now = utcnow()
    base = dict(outcome=result.outcome.value, code=result.code, detail=(result.message or "")[:1000],
                raw=(result.raw or "")[:RAW_KEEP])
    retry_in: float | None = None
    if result.outcome is Outcome.OK:
        state = "accepted"
        values = dict(base, state=state, finished_at=now, vendor_ref=result.batch_ref)
    elif result.outcome is Outcome.AMBIGUOUS:
        state = "unknown"
        values = dict(base, state=state, finished_at=now)
    elif result.outcome is Outcome.RATE_LIMITED:
        state, retry_in = "pending", result.retry_after or 30.0
        values = dict(base, state=state, attempts=Chunk.attempts - 1)
    elif result.outcome is Outcome.TRANSIENT and work.attempt < conf.max_attempts:
        state, retry_in = "pending", backoff(work.attempt)
        values = dict(base, state=state)
    else:  # final failures, and transient ones out of attempts
        state = "failed"
        values = dict(base, state=state, finished_at=now)
        if result.outcome is Outcome.TRANSIENT:
            values["detail"] = f"gave up after {work.attempt} attempts: {result.message or ''}"[:1000]
    if retry_in is not None:
        due = now + timedelta(seconds=retry_in)
        values.update(next_attempt_at=due, queued_at=now if retry_in <= MAX_COUNTDOWN else None)

    with session_scope(conf.database_url) as session:
        if call_seconds is not None:  # the call happened, whatever becomes of the chunk row
            session.add(VendorCall(account=work.account, outcome=result.outcome.value,
                                   seconds=call_seconds, created_at=now))
        changed = session.execute(update(Chunk).where(_chunk_is_ours(work)).values(**values)).rowcount
        if changed != 1:
            log.warning("chunk %s: outcome %s not recorded, the chunk moved on", work.chunk_id, state)
            return state, None
        _record_recipients(session, work, result, state, now)
    return state, retry_in


def _record_recipients(session, work: Work, result: SendResult, state: str, now: datetime) -> None:
    if state == "pending":
        return  # recipients stay queued for the retry
    where = and_(Recipient.batch_id == work.batch_id, Recipient.chunk_seq == work.seq,
                 Recipient.state.in_(("queued", "unknown")))
    if state == "accepted":
        ids = result.vendor_ids if len(result.vendor_ids) == len(work.recipients) else []
        if ids:  # one id per number, in the order sent
            table = Recipient.__table__  # Core executemany: one statement, 100 parameter sets
            session.connection().execute(
                update(table).where(table.c.id == bindparam("rid")).values(
                    state="sent", vendor_id=bindparam("vid"), updated_at=now),
                [{"rid": rid, "vid": vid[:64]} for (rid, _), vid in zip(work.recipients, ids)])
        else:
            # One id for the whole call (or ids we cannot pair with numbers): the
            # chunk keeps the vendor's reference; reports are matched by mobile.
            single = result.batch_ref if result.batch_ref and len(result.batch_ref) <= 64 and \
                "," not in result.batch_ref else None
            session.execute(update(Recipient).where(where).values(state="sent", vendor_id=single, updated_at=now))
        for mobile, reason in result.failed_numbers.items():
            session.execute(update(Recipient).where(
                Recipient.batch_id == work.batch_id, Recipient.mobile == mobile).values(
                state="failed", code=result.code, detail=reason[:255], updated_at=now))
        return
    session.execute(update(Recipient).where(where).values(
        state="unknown" if state == "unknown" else "failed", code=result.code,
        detail=(result.message or "")[:255], updated_at=now))


def run_chunk(chunk_id: int) -> str:
    """Everything send_chunk does, without Celery in the way."""
    conf = settings()
    ensure_schema(conf)
    work = claim(conf, chunk_id)
    if work is None:
        log.info("chunk %s: not pending (already claimed or done); nothing to do", chunk_id)
        return "skipped"
    if not work.recipients:  # every number of the chunk was settled elsewhere (an operator)
        record(conf, work, SendResult(Outcome.OK, message="no recipient left to send"))
        return "accepted"
    # -- failover routes: the account's circuit admits the chunk, or it waits or moves --
    admitted = routes.before_call(conf, work)
    if isinstance(admitted, str):
        return admitted  # "held", "moved" or "failed"
    try:
        account = conf.account(work.account)
        provider = provider_for(account)
        waited = limiter(conf.redis_url).acquire(account.name, account.rate_limit)
    except Exception as exc:
        release(conf, work, f"not sent: {type(exc).__name__}: {exc}")
        raise
    if waited > 1:
        log.info("chunk %s: waited %.1fs for account %s's rate limit", chunk_id, waited, account.name)
    numbers = [mobile for _, mobile in work.recipients]
    vendor_time = None
    if work.send_at and work.send_at > utcnow():  # naive UTC -> the vendors' Beijing clock
        vendor_time = work.send_at.replace(tzinfo=timezone.utc).astimezone(BEIJING)
    context = SendContext(work.batch_id, work.seq, work.attempt, work.batch_created_at)
    # Past this line the vendor may act on the request: no exception may turn
    # it back into 'pending'. An error recording the result leaves 'sending',
    # which the relay settles as 'unknown'.
    started = time.monotonic()
    result = provider.send(numbers, work.content, vendor_time, context)
    seconds = time.monotonic() - started
    # -- failover routes: the circuit hears the answer; a routed chunk that tripped it moves on --
    if routes.after_call(conf, work, result, seconds, probe=admitted.probe):
        return "moved"
    state, retry_in = record(conf, work, result, call_seconds=seconds)
    level = logging.WARNING if state in ("failed", "unknown") else logging.INFO
    if result.outcome in (Outcome.AUTH, Outcome.BALANCE):
        level = logging.ERROR  # the account needs an operator
        flag_account(conf, account.name, result)
    elif result.outcome is Outcome.OK:
        clear_flag(conf, account.name)
    log.log(level, "chunk %s (batch %s, %s numbers, account %s): %s -> %s %s %s", chunk_id, work.batch_id,
            len(numbers), account.name, result.outcome.value, state, result.code or "", result.message or "")
    if retry_in is not None and retry_in <= MAX_COUNTDOWN:
        publish_chunk(chunk_id, work.lane, batch_id=work.batch_id, account=work.account, countdown=retry_in)
    if state in ("failed", "unknown"):
        raise not_sent(state, work, result)
    return state


def not_sent(state: str, work: Work, result: SendResult) -> ChunkNotSent:
    """``chunk 12 (batch 3, shop-dxt): unknown — ambiguous: read timeout ...``; the vendor's
    code and message, never numbers or content."""
    why = " ".join(part for part in (result.outcome.value + ":", result.code, result.message) if part)
    error = ChunkUnknown if state == "unknown" else ChunkFailed
    return error(f"{chunk_label(work.chunk_id, work.batch_id, work.account)}: {state} — {why}"[:500])


def flag_account(conf: Settings, account: str, result: SendResult) -> None:
    """Show the account as unhealthy in `smsq accounts` (kind "send")."""
    with session_scope(conf.database_url) as session:
        row = session.get(PollStatus, (account, "send")) or PollStatus(account=account, kind="send")
        row.polled_at, row.outcome, row.items = utcnow(), result.outcome.value, 0
        row.detail = f"{result.code or ''} {result.message or ''}".strip()[:1000]
        session.merge(row)


def clear_flag(conf: Settings, account: str) -> None:
    """A send went through: the account is healthy again (a no-op when it was)."""
    with session_scope(conf.database_url) as session:
        session.execute(update(PollStatus).where(PollStatus.account == account, PollStatus.kind == "send",
                                                 PollStatus.outcome != "ok")
                        .values(outcome="ok", detail="a send was accepted since", polled_at=utcnow()))


# `throws`: an expected end, logged in one line without a traceback. With late
# acks the message is still acked (task_acks_on_failure_or_timeout), so a failed
# or unknown chunk is not delivered again.
@shared_task(name="smsq.send_chunk", ignore_result=True, acks_late=True, throws=(ChunkFailed, ChunkUnknown))
def send_chunk(chunk_id: int) -> str:
    return run_chunk(int(chunk_id))

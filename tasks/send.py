"""``smsq.send_chunk``: one vendor call for one chunk, at most once per claim.

1. Take a slot from the account's shared rate limiter, without waiting. No
   slot: the message goes back to the queue with the wait as a short
   countdown, and the worker slot takes other work (nothing was claimed, no
   attempt counted, no database transaction spent). An OTP (priority lane)
   books the next slot that frees and its message carries the booking, which
   it redeems when it comes back.
2. Claim: ``pending -> sending`` (attempts + 1) by a conditional update that
   also returns the content and the numbers (one transaction; on PostgreSQL one
   statement, committed on its own: one round trip). A message for
   a chunk in any other state is a redelivery: do nothing, and give the
   limiter's slot back.
3. Call the provider; decide once what its answer means (tasks/decisions.py) and
   record the outcome (the second and last transaction of an accepted chunk; on
   PostgreSQL again one statement) by the taxonomy:

   accepted                  -> accepted; recipients sent (vendor ids kept)
   transient                 -> pending again after a backoff, for SMSQ_RETRY_FOR
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

Groups. A campaign's message names several chunks of its batch (``then``,
tasks/publish.py). They are sent one after another, each exactly as a chunk of
its own (its slot, its claim right before its call, its record), so a worker
that dies mid-group leaves every chunk in a true state (a chunk not yet claimed
is pending, and its message is delivered again). After a slow vendor call
(``_slow_vendor``), while the process has idle slots, the rest is handed on, a
message each, for them to send side by side; a chunk that finds no rate-limit
slot goes back to the queue with the rest of its group.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, exists, func, insert, select, text, update

from smsq.providers import Outcome, Provider, SendContext, SendResult
from smsq.providers.base import RAW_KEEP
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Batch, Chunk, Recipient, VendorCall, utcnow
from smsq.worker import slots
from smsq.worker.app import smsq_task
from smsq.worker.clients import provider_for
from smsq.worker.config import Settings, knowing, settings
from smsq.worker.db import autocommit, session_scope, transaction
from smsq.worker.limiter import WINDOW_MARGIN, Limiter, Taken, limiter

from . import circuit, routes
from .account_health import clear_flag, flag_account
from .decisions import Decision, Policy, decide
from .outcome_keeper import SPOOLED, keep_outcome, with_db_retry
from .publish import MAX_COUNTDOWN, chunk_label, publish_chunk, publish_chunk_rows
from .schema import ensure_schema
from .unknown_account import UNKNOWN_ACCOUNT_RETRY, say_unknown, wake, why_unknown

log = logging.getLogger("smsq.send")

# A claim quicker than this leaves the rate-limit slot where it was taken:
# half the limiter's margin, the other half being for the trip to the vendor.
CLAIM_WITHIN_MARGIN = WINDOW_MARGIN / 2
# A slot booked for an OTP that frees within this is waited for in the worker slot
# (a few times at most: a clock a little behind), not through the broker.
BOOKING_NAP, BOOKING_NAPS = 0.05, 3
# A refused bulk chunk told of a slot that frees within this waits for it here too:
# going back through the broker (a publish with a countdown, a delivery held until
# due, an ack) costs more worker CPU than the nap costs the slot. The limiter tells
# that short a wait to a caller within half a place of the next free slot; at
# 100 calls/s at 200 ms, 4 in 10 of the chunks that went back did so for 5 ms.
SLOT_NAP = 0.02
# After a vendor call slower than SLOW_CALL that was also SLOW_SHARE times the rest
# of its chunk's work (_slow_vendor), the rest of a group is handed on to the
# process's idle slots, if it has enough (worker/slots.py): one slot sending the
# group in turn would make the batch wait on a slow vendor.
SLOW_CALL, SLOW_SHARE = 0.1, 15
# When a chunk's first vendor call was: the retry budget counts from it. Kept in
# first_attempt_at from its first transient failure on; until then it is this claim's.
FIRST_ATTEMPT = func.coalesce(Chunk.first_attempt_at, Chunk.claimed_at)


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
    send_at: datetime | None  # the batch's schedule: reached by the time its chunk is claimed
    batch_created_at: datetime
    recipients: list[tuple[int, str]]  # (recipient id, mobile)
    first_attempt_at: datetime | None = None  # the chunk's first vendor call (this one, for a first claim)


def claim(conf: Settings, chunk_id: int) -> Work | None:
    """``pending -> sending`` (attempt + 1) and everything the send needs, in one
    transaction; None when the chunk is not ours to send."""
    now = utcnow()
    if not conf.database_url.startswith("postgresql"):
        with transaction(conf.database_url) as conn:
            return _claim_portable(conn, chunk_id, now)
    with autocommit(conf.database_url) as conn:  # one statement: atomic, one round trip
        row = conn.execute(CLAIM_PG, {"id": chunk_id, "now": now, "soon": now + timedelta(seconds=1)}).first()
    if row is None:
        return None
    return Work(row.id, row.batch_id, row.seq, row.account, row.lane, row.attempts, row.content,
                row.send_at, row.created_at, list(zip(row.ids or [], row.mobiles or [])), row.first_attempt_at)


# One statement on PostgreSQL: the claim, the batch's content and the chunk's
# queued numbers (the UPDATE in the CTE; the SELECT sees the rows as they were,
# which for recipients is as they are: the claim changes none).
CLAIM_PG = text("""
WITH claimed AS (
    UPDATE chunks SET state = 'sending', attempts = attempts + 1, claimed_at = :now
    WHERE id = :id AND state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= :soon)
      -- a batch cancelled while this chunk was out for a retry: the relay cancels it
      AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = chunks.batch_id AND b.cancelled_at IS NOT NULL)
    RETURNING id, batch_id, seq, account, lane, attempts, content,
              COALESCE(first_attempt_at, claimed_at) AS first_attempt_at)
-- a chunk's own content: prepared for another vendor of its route when it was moved
SELECT c.id, c.batch_id, c.seq, c.account, c.lane, c.attempts, COALESCE(c.content, b.content) AS content,
       b.send_at, b.created_at, c.first_attempt_at,
       r.ids, r.mobiles
FROM claimed c JOIN batches b ON b.id = c.batch_id
CROSS JOIN LATERAL (
    SELECT array_agg(q.id ORDER BY q.id) AS ids, array_agg(q.mobile ORDER BY q.id) AS mobiles
    FROM recipients q WHERE q.batch_id = c.batch_id AND q.chunk_seq = c.seq AND q.state = 'queued') r
""")


def _claim_portable(conn, chunk_id: int, now: datetime) -> Work | None:
    claimed = conn.execute(
        update(Chunk)
        .where(Chunk.id == chunk_id, Chunk.state == "pending",
               (Chunk.next_attempt_at.is_(None)) | (Chunk.next_attempt_at <= now + timedelta(seconds=1)),
               ~exists().where(Batch.id == Chunk.batch_id, Batch.cancelled_at.is_not(None)))
        .values(state="sending", attempts=Chunk.attempts + 1, claimed_at=now)
        .returning(Chunk.id, Chunk.batch_id, Chunk.seq, Chunk.account, Chunk.lane, Chunk.attempts,
                   Chunk.content, FIRST_ATTEMPT)).first()
    if claimed is None:
        return None
    batch = conn.execute(select(Batch.content, Batch.send_at, Batch.created_at)
                         .where(Batch.id == claimed.batch_id)).one()
    recipients = conn.execute(
        select(Recipient.id, Recipient.mobile)
        .where(Recipient.batch_id == claimed.batch_id, Recipient.chunk_seq == claimed.seq,
               Recipient.state == "queued")
        .order_by(Recipient.id)).all()
    # the chunk's own content: prepared for another vendor of its route when it was moved
    return Work(*claimed[:6], claimed.content or batch.content, batch.send_at, batch.created_at,
                [tuple(r) for r in recipients], claimed[7])


def release(conf: Settings, work: Work, why: str, not_before: datetime | None = None) -> None:
    """Give a claim back untouched (nothing was sent): pending again, attempt not counted.
    The relay publishes it again (after ``not_before``, if given)."""
    values = dict(state="pending", attempts=Chunk.attempts - 1, detail=why[:500], queued_at=None)
    if not_before is not None:
        values["next_attempt_at"] = not_before
    with transaction(conf.database_url) as conn:
        conn.execute(update(Chunk).where(Chunk.id == work.chunk_id, Chunk.state == "sending").values(**values))


def hold(conf: Settings, chunk_ids: list[int], why: str, until: datetime) -> None:
    """Leave unclaimed chunks pending until ``until``, for the relay to publish then."""
    with transaction(conf.database_url) as conn:
        conn.execute(update(Chunk).where(Chunk.id.in_(chunk_ids), Chunk.state == "pending")
                     .values(detail=why[:500], next_attempt_at=until, queued_at=None))


def account_held_until(conf: Settings, account: str) -> tuple[datetime, str] | None:
    """While the account's circuit is open (its send failed with auth or balance, or ran
    out of retries): until when its other chunks wait, and why. Calling the vendor again
    with a wrong password is how accounts get locked (dxt -10: 帐号已被锁定)."""
    return circuit.held_until(conf, account)


def _chunk_is_ours(work: Work):
    # The relay may have turned a slow claim 'unknown'; a late real answer still wins.
    return and_(Chunk.id == work.chunk_id, Chunk.attempts == work.attempt,
                Chunk.state.in_(("sending", "unknown")))


def decided(conf: Settings, work: Work, result: SendResult, probe: bool = False) -> Decision:
    """What the answer ``result`` to the claimed chunk's call means, now (tasks/decisions.py)."""
    return decide(result, work.attempt, work.first_attempt_at, utcnow(), Policy.of(conf), probe=probe)


def record(conf: Settings, work: Work, result: SendResult, decision: Decision,
           call_seconds: float | None = None) -> tuple[str, float | None]:
    """Store the outcome as ``decision`` says (tasks/decisions.py); return the chunk's new
    state and, for a retry, the delay. ``call_seconds``: how long the vendor call took,
    kept in ``vendor_calls`` (None: no vendor call was made)."""
    now = utcnow()
    state, retry_in = decision.next_state, decision.wait
    values = dict(outcome=result.outcome.value, code=result.code, detail=decision.detail,
                  raw=(result.raw or "")[:RAW_KEEP], state=state.value)
    if retry_in is None:
        values.update(finished_at=now)
    elif not decision.attempt_counts:  # rate limited: the call is given back
        values.update(attempts=Chunk.attempts - 1)
    else:  # [retry budget] transient failures: retried for SMSQ_RETRY_FOR from the first call
        values.update(first_attempt_at=FIRST_ATTEMPT)
    if state is ChunkState.ACCEPTED:
        values.update(vendor_ref=result.batch_ref)
    if retry_in is not None:
        values.update(next_attempt_at=decision.retry_at, queued_at=now if retry_in <= MAX_COUNTDOWN else None)

    if state == "accepted" and call_seconds is not None and not result.failed_numbers and \
            conf.database_url.startswith("postgresql"):
        # the common answer, every number taken: one statement (tasks/send.py RECORD_ACCEPTED_PG)
        if not _record_accepted_pg(conf, work, result, values, call_seconds, now):
            log.warning("chunk %s: outcome %s not recorded, the chunk moved on", work.chunk_id, state)
        return state, None
    with transaction(conf.database_url) as conn:
        if call_seconds is not None:  # the call happened, whatever becomes of the chunk row
            conn.execute(insert(VendorCall).values(account=work.account, outcome=result.outcome.value,
                                                   seconds=call_seconds, created_at=now))
        changed = conn.execute(update(Chunk).where(_chunk_is_ours(work)).values(**values)).rowcount
        if changed != 1:
            log.warning("chunk %s: outcome %s not recorded, the chunk moved on", work.chunk_id, state)
            return state, None
        _record_recipients(conn, work, result, state, now)
    return state, retry_in


# An accepted chunk, all in one statement (so one round trip, committed on its own):
# the chunk's outcome if the chunk is still ours (_chunk_is_ours), its numbers
# 'sent' only then, and the call counted in vendor_calls whatever became of the
# chunk (as record() does). Data-modifying CTEs all see the rows as they were
# before the statement, hence the recipients' "the chunk was ours" test reads
# the chunk update's RETURNING instead of the table.
RECORD_ACCEPTED_PG = """
WITH ours AS (
    UPDATE chunks SET state = 'accepted', outcome = :outcome, code = :code, detail = :detail, raw = :raw,
                      finished_at = :now, vendor_ref = :vendor_ref
    WHERE id = :id AND attempts = :attempt AND state IN ('sending', 'unknown')
    RETURNING id),
called AS (
    INSERT INTO vendor_calls (account, outcome, seconds, created_at) VALUES (:account, :outcome, :seconds, :now)),
sent AS (
    UPDATE recipients AS r SET state = 'sent', vendor_id = {vendor_id}, updated_at = :now
    {numbers} AND r.state IN ('queued', 'unknown') AND EXISTS (SELECT 1 FROM ours))
SELECT count(*) FROM ours
"""
# each number with its own vendor id, in the order sent. The ids go as one text each,
# split by the server: the driver builds an array parameter in Python, checking every
# element for quoting, which cost a third of the record's CPU.
RECORD_ACCEPTED_WITH_IDS_PG = text(RECORD_ACCEPTED_PG.format(
    vendor_id="v.vid", numbers="FROM unnest(CAST(string_to_array(:rids, ',') AS bigint[]), "
                                 "string_to_array(:vids, :sep)) AS v(rid, vid) WHERE r.id = v.rid"))
# vendor ids that the separator could cut (or an empty id, which a split can drop)
# go as an array
RECORD_ACCEPTED_WITH_ID_ARRAY_PG = text(RECORD_ACCEPTED_PG.format(
    vendor_id="v.vid", numbers="FROM unnest(CAST(:rids AS bigint[]), CAST(:vids AS text[])) AS v(rid, vid) "
                                 "WHERE r.id = v.rid"))
ID_SEPARATOR = "\x1f"  # ASCII unit separator: in no vendor's id
# one id for the whole call (or none)
RECORD_ACCEPTED_ONE_ID_PG = text(RECORD_ACCEPTED_PG.format(
    vendor_id="CAST(:vid AS text)", numbers="WHERE r.batch_id = :batch AND r.chunk_seq = :seq"))


def _record_accepted_pg(conf: Settings, work: Work, result: SendResult, values: dict,
                        call_seconds: float, now: datetime) -> bool:
    params = {"id": work.chunk_id, "attempt": work.attempt, "now": now, "account": work.account,
              "seconds": call_seconds, "vendor_ref": values["vendor_ref"],
              **{key: values[key] for key in ("outcome", "code", "detail", "raw")}}
    ids = result.vendor_ids if len(result.vendor_ids) == len(work.recipients) else []
    if ids:
        vids = [vid[:64] for vid in ids]
        if all(vids) and not any(ID_SEPARATOR in vid for vid in vids):
            statement = RECORD_ACCEPTED_WITH_IDS_PG
            params.update(rids=",".join(str(rid) for rid, _ in work.recipients), vids=ID_SEPARATOR.join(vids),
                          sep=ID_SEPARATOR)
        else:
            statement = RECORD_ACCEPTED_WITH_ID_ARRAY_PG
            params.update(rids=[rid for rid, _ in work.recipients], vids=vids)
    else:
        statement = RECORD_ACCEPTED_ONE_ID_PG
        params.update(vid=_single_id(result), batch=work.batch_id, seq=work.seq)
    with autocommit(conf.database_url) as conn:
        return conn.execute(statement, params).scalar() == 1


def _single_id(result: SendResult) -> str | None:
    """One id for the whole call (or ids we cannot pair with numbers): the chunk keeps
    the vendor's reference; reports are matched by mobile."""
    ref = result.batch_ref
    return ref if ref and len(ref) <= 64 and "," not in ref else None


# Every number of an accepted chunk with its own vendor id, in one statement
# (an UPDATE per row was 100 round trips a chunk).
SENT_WITH_IDS_PG = text("""
UPDATE recipients AS r SET state = 'sent', vendor_id = v.vid, updated_at = :now
FROM unnest(CAST(:rids AS bigint[]), CAST(:vids AS text[])) AS v(rid, vid)
WHERE r.id = v.rid AND r.state IN ('queued', 'unknown')
""")


def _record_sent_with_ids(conn, pairs: list[tuple[int, str]], now: datetime) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(SENT_WITH_IDS_PG, {"now": now, "rids": [rid for rid, _ in pairs],
                                        "vids": [vid for _, vid in pairs]})
        return
    table = Recipient.__table__  # SQLite, in-process: executemany costs no round trips
    # (an IN list cannot go into an executemany)
    still_ours = (table.c.state == "queued") | (table.c.state == "unknown")
    conn.execute(update(table).where(table.c.id == bindparam("rid"), still_ours)
                 .values(state="sent", vendor_id=bindparam("vid"), updated_at=now),
                 [{"rid": rid, "vid": vid} for rid, vid in pairs])


def _record_recipients(conn, work: Work, result: SendResult, state: str, now: datetime) -> None:
    if state == "pending":
        # recipients stay queued for the retry; a late answer (from the spool) to a chunk the
        # relay had turned 'unknown' gives its numbers back to the retry
        conn.execute(update(Recipient).where(
            Recipient.batch_id == work.batch_id, Recipient.chunk_seq == work.seq,
            Recipient.state == "unknown").values(state="queued", updated_at=now))
        return
    where = and_(Recipient.batch_id == work.batch_id, Recipient.chunk_seq == work.seq,
                 Recipient.state.in_(("queued", "unknown")))
    if state == "accepted":
        ids = result.vendor_ids if len(result.vendor_ids) == len(work.recipients) else []
        if ids:  # one id per number, in the order sent
            _record_sent_with_ids(conn, [(rid, vid[:64]) for (rid, _), vid in zip(work.recipients, ids)], now)
        else:
            conn.execute(update(Recipient).where(where).values(state="sent", vendor_id=_single_id(result),
                                                               updated_at=now))
        for mobile, reason in result.failed_numbers.items():
            conn.execute(update(Recipient).where(
                Recipient.batch_id == work.batch_id, Recipient.mobile == mobile).values(
                state="failed", code=result.code, detail=reason[:255], updated_at=now))
        return
    conn.execute(update(Recipient).where(where).values(
        state="unknown" if state == "unknown" else "failed", code=result.code,
        detail=(result.message or "")[:255], updated_at=now))


@dataclass
class Pace:
    """How long the vendor took to answer a chunk's call (None: no call was made)."""
    seconds: float | None = None


def run_group(chunk_ids: list[int], account: str | None = None, lane: str | None = None,
              label: str | None = None, booking: str | None = None) -> str:
    """Send a group's chunks one after another (see the module's docstring); return the
    last chunk's state. A chunk that ended failed or unknown does not stop the group:
    the group ends as that failure once the rest is done."""
    with slots.occupied():
        return _run_group(settings(), chunk_ids, account, lane, label, booking)


def _run_group(conf: Settings, chunk_ids: list[int], account: str | None, lane: str | None,
               label: str | None, booking: str | None) -> str:
    not_sent_: list[ChunkNotSent] = []
    state = "skipped"
    for at, chunk_id in enumerate(chunk_ids):
        rest, pace, started = chunk_ids[at + 1:], Pace(), time.monotonic()
        try:
            state = run_chunk(chunk_id, account, lane, label=label if not rest and not at else None,
                              booking=booking if not at else None, then=rest, pace=pace)
        except ChunkNotSent as exc:
            not_sent_.append(exc)
            state = "unknown" if isinstance(exc, ChunkUnknown) else "failed"
        except BaseException:
            try:
                hand_on(conf, rest, lane, account)  # the rest is not this failure's
            except Exception:  # the relay publishes them in time; the failure above is the news
                log.exception("chunk %s: could not hand the rest of its group on", chunk_id)
            raise
        if state == "deferred":
            break  # gone back to the queue with the rest of the group
        if rest and _slow_vendor(pace, time.monotonic() - started) and _free_for(rest):
            hand_on(conf, rest, lane, account)  # slots free to send it side by side
            break
    if len(not_sent_) == 1:
        raise not_sent_[0]
    if not_sent_:
        error = ChunkUnknown if any(isinstance(e, ChunkUnknown) for e in not_sent_) else ChunkFailed
        raise error(f"{len(not_sent_)} chunks not sent: " + "; ".join(map(str, not_sent_)))
    return state


def _slow_vendor(pace: Pace, chunk_seconds: float) -> bool:
    """The vendor, not this busy process, made the chunk slow: its call took over
    SLOW_CALL and SLOW_SHARE times the chunk's own work (limiter, claim, record).
    Under a busy GIL every step of a chunk waits alike (measured at zero latency
    with 64 threads: calls of 45 ms at the median, 160 ms at p99, at 1.6 and 11
    times the rest of the chunk); a slow vendor stretches the call alone."""
    call = pace.seconds
    return call is not None and call > SLOW_CALL and call > SLOW_SHARE * (chunk_seconds - call)


def _free_for(rest: list[int]) -> bool:
    idle = slots.idle()
    return idle is None or idle >= len(rest)


def hand_on(conf: Settings, chunk_ids: list[int], lane: str | None, account: str | None) -> None:
    """Publish the rest of a group a message each, for other worker slots. What the broker
    does not take is left to the relay (marked unqueued)."""
    if chunk_ids and account and lane:
        publish_chunk_rows(conf, None, [(chunk_id, lane, account) for chunk_id in chunk_ids], group_size=1)


def run_chunk(chunk_id: int, account: str | None = None, lane: str | None = None, label: str | None = None,
              booking: str | None = None, then: list[int] | None = None, pace: Pace | None = None) -> str:
    """Everything send_chunk does for one chunk, without Celery in the way. ``account``
    and ``lane`` come with the message (a message without them, from an earlier
    version, costs one read to learn them); so does ``booking``, the rate-limit
    slot booked for a refused OTP. ``then``: the rest of the chunk's group, which
    goes back to the queue with it when the account has no slot ("deferred").
    ``pace`` hears how long the vendor call took."""
    conf = settings()
    ensure_schema(conf)
    if account is None or lane is None:
        found = _account_and_lane(conf, chunk_id)
        if found is None:
            log.info("chunk %s: not pending (already claimed or done); nothing to do", chunk_id)
            return "skipped"
        account, lane = found
    if account not in conf.accounts:  # added to the file since this process read it, or not here
        conf = knowing(account)
        if account not in conf.accounts:
            wait_for_account(conf, [chunk_id, *(then or [])], account)
            return "deferred"
        wake(conf, {account})  # its chunks that waited for it need not wait longer
    # The token before the claim: a chunk that finds none costs no database
    # transaction, only its message going back to the queue.
    bucket, rate = limiter(conf.redis_url), conf.account(account).rate_limit
    asked, taken = take_slot(bucket, account, rate, lane, booking)
    if not taken.ok:
        come_back(conf, chunk_id, lane, account, taken.wait, label, booking=taken.booking, then=then)
        return "deferred"
    try:
        work = with_db_retry(conf, claim, conf, chunk_id)  # [db outage] rides out a short one
        if work is not None and work.recipients:
            provider = _provider_or_release(conf, work)
    except BaseException:
        bucket.give_back(account, taken.ticket)
        raise
    if work is None or not work.recipients:  # no vendor call comes of the slot: another chunk may have it
        bucket.give_back(account, taken.ticket)
    if work is None:
        log.info("chunk %s: not pending (already claimed or done); nothing to do", chunk_id)
        return "skipped"
    if not work.recipients:  # every number of the chunk was settled elsewhere (an operator)
        nothing = SendResult(Outcome.OK, message="no recipient left to send")
        record(conf, work, nothing, decided(conf, work, nothing))
        return "accepted"
    try:
        # -- failover routes: the account's circuit admits the chunk, or it waits or moves --
        admitted = routes.before_call(conf, work)
        if isinstance(admitted, str):
            bucket.give_back(account, taken.ticket)  # no vendor call comes of the slot
            return admitted  # "held", "moved" or "failed"
        # The slot counts from when the call starts, not from before the claim: a
        # claim that waited (a busy database) moves the slot to now. A quick one
        # is within the limiter's margin and saves the round trip.
        if time.monotonic() - asked > CLAIM_WITHIN_MARGIN and not bucket.stamp(account, rate, taken.ticket):
            release(conf, work, f"the claim outlasted account {account}'s rate-limit slot; the relay sends it again")
            log.warning("chunk %s: rate-limit slot lost while claiming; given back to the relay", chunk_id)
            return "released"
    except BaseException as exc:
        _release_unsent(conf, work, exc)
        raise
    return send_claimed(conf, work, provider, probe=admitted.probe, pace=pace)


def wait_for_account(conf: Settings, chunk_ids: list[int], account: str) -> None:
    """An account this worker does not know, even after reading its file again: the
    chunks stay pending, with the reason for `smsq send --wait`, and the relay
    publishes them again later (tasks/unknown_account.py). Nothing was claimed."""
    why = why_unknown(conf, account)
    hold(conf, chunk_ids, why, utcnow() + timedelta(seconds=UNKNOWN_ACCOUNT_RETRY))
    say_unknown(conf, chunk_ids[0], why, account)


def _release_unsent(conf: Settings, work: Work, exc: BaseException) -> None:
    """[redis outage] Between the claim and the vendor call something failed (Redis gone
    while the slot was stamped, the database while the circuit was read, the account's
    client that could not be built): no call was
    made, so the claim goes back (pending, the attempt not counted) and the relay
    publishes the chunk again. Left 'sending', it would turn 'unknown' after the send
    timeout although its numbers never left. (A release that fails too leaves it so:
    the safe side.)"""
    try:
        release(conf, work, f"not sent: {type(exc).__name__}: {exc}")
    except Exception:
        log.exception("chunk %s: could not give the claim back; the relay settles it after the send timeout",
                      work.chunk_id)
    else:
        log.warning("chunk %s: not sent (%s); given back to the relay", work.chunk_id, type(exc).__name__)


def take_slot(bucket: Limiter, account: str, rate: float, lane: str,
              booking: str | None) -> tuple[float, Taken]:
    """The account's rate-limit slot, or the answer to come back with; and when it was
    asked for. An OTP does not queue behind a blast: refused, it books the next slot
    that frees and comes back for it with the booking. A booked slot only moments
    away, or a free one a bulk chunk is told of, is waited for here rather than
    through the broker."""
    for _ in range(BOOKING_NAPS + 1):
        asked = time.monotonic()
        taken = bucket.try_take(account, rate, jump=lane == "priority") if booking is None \
            else bucket.redeem(account, rate, booking)
        if taken.ok or taken.wait > (SLOT_NAP if taken.booking is None else BOOKING_NAP):
            break
        booking = taken.booking
        time.sleep(taken.wait)
    return asked, taken


def _provider_or_release(conf: Settings, work: Work) -> Provider:
    try:
        return provider_for(conf.account(work.account))
    except Exception as exc:
        _release_unsent(conf, work, exc)
        raise


def send_claimed(conf: Settings, work: Work, provider: Provider, probe: bool = False,
                 pace: Pace | None = None) -> str:
    """Call the vendor for a claimed chunk and record what it said. ``probe``: the chunk
    is its account's half-open probe (tasks/circuit.py); ``pace`` hears how long the call took."""
    chunk_id, account = work.chunk_id, provider.account
    numbers = [mobile for _, mobile in work.recipients]
    context = SendContext(work.batch_id, work.seq, work.attempt, work.batch_created_at)
    # Past this line the vendor may act on the request: no exception may turn
    # it back into 'pending'. [db outage] The answer is recorded through a database
    # outage, or kept in the local spool and recorded later (tasks/outcome_keeper.py).
    started = time.monotonic()
    # No send time: a scheduled chunk is claimed at its time (the relay releases it then),
    # so the vendor sends it now (see tasks/producer.py for why smsq holds it itself).
    result = provider.send(numbers, work.content, None, context)
    seconds = time.monotonic() - started
    if pace is not None:
        pace.seconds = seconds
    decision = decided(conf, work, result, probe)  # once: for the circuit, a move, and the record
    # -- failover routes: the circuit hears the answer; a routed chunk that tripped it moves on --
    if routes.after_call(conf, work, result, decision, seconds):
        return "moved"
    state, retry_in = keep_outcome(conf, work, result, decision, seconds)
    if state == SPOOLED:
        return state
    level = logging.WARNING if state in ("failed", "unknown") else logging.INFO
    if result.outcome in (Outcome.AUTH, Outcome.BALANCE):
        level = logging.ERROR  # the account needs an operator
    log.log(level, "chunk %s (batch %s, %s numbers, account %s): %s -> %s %s %s", chunk_id, work.batch_id,
            len(numbers), account.name, result.outcome.value, state, result.code or "", result.message or "")
    after_record(conf, work, result, retry_in)
    if state in ("failed", "unknown"):
        raise not_sent(state, work, result)
    return state


def after_record(conf: Settings, work: Work, result: SendResult, retry_in: float | None) -> None:
    """What follows a recorded answer, whether it was recorded at once or from the spool:
    the account's health flag, and a short retry's message."""
    if result.outcome in (Outcome.AUTH, Outcome.BALANCE):
        flag_account(conf, work.account, result)
    elif result.outcome is Outcome.OK:
        clear_flag(conf, work.account)
    if retry_in is not None and retry_in <= MAX_COUNTDOWN:
        publish_chunk(work.chunk_id, work.lane, batch_id=work.batch_id, account=work.account, countdown=retry_in)


def _account_and_lane(conf: Settings, chunk_id: int) -> tuple[str, str] | None:
    with session_scope(conf.database_url, readonly=True) as session:
        row = session.execute(select(Chunk.account, Chunk.lane).where(
            Chunk.id == chunk_id, Chunk.state == "pending")).first()
    return None if row is None else (row.account, row.lane)


def come_back(conf: Settings, chunk_id: int, lane: str, account: str, wait: float,
              label: str | None = None, booking: str | None = None, then: list[int] | None = None) -> None:
    """The account has no slot for ``wait`` seconds: the message goes back to the
    queue for that long (nothing is claimed, no attempt counted) and this
    worker slot takes other work; it carries the ``booking`` of the slot booked
    for it, if any, and ``then``, the rest of its group. A wait longer than a
    broker countdown may be goes to the database for the relay (which publishes
    without the booking: it is given back)."""
    ids = [chunk_id, *(then or [])]
    if wait > MAX_COUNTDOWN:
        _forget_booking(conf, account, booking)
        hold(conf, ids, f"waiting for account {account}'s rate limit", utcnow() + timedelta(seconds=wait))
        return
    try:
        publish_chunk(chunk_id, lane, account=account, countdown=wait, label=label, booking=booking, then=then)
    except Exception:
        # The broker refused it: the relay publishes unqueued chunks at its next pass.
        log.exception("chunk %s: could not give it back to the queue; the relay will", chunk_id)
        _forget_booking(conf, account, booking)
        with transaction(conf.database_url) as conn:
            conn.execute(update(Chunk).where(Chunk.id.in_(ids), Chunk.state == "pending")
                         .values(queued_at=None))


def _forget_booking(conf: Settings, account: str, booking: str | None) -> None:
    if booking is not None:  # no message comes back with it: the slot is free for others
        limiter(conf.redis_url).give_back(account, booking)


def not_sent(state: str, work: Work, result: SendResult) -> ChunkNotSent:
    """``chunk 12 (batch 3, shop-dxt): unknown — ambiguous: read timeout ...``; the vendor's
    code and message, never numbers or content."""
    why = " ".join(part for part in (result.outcome.value + ":", result.code, result.message) if part)
    error = ChunkUnknown if state == "unknown" else ChunkFailed
    return error(f"{chunk_label(work.chunk_id, work.batch_id, work.account)}: {state} — {why}"[:500])


# `throws`: an expected end, logged in one line without a traceback. With late
# acks the message is still acked (task_acks_on_failure_or_timeout), so a failed
# or unknown chunk is not delivered again.
@smsq_task(name="smsq.send_chunk", bind=True, ignore_result=True, acks_late=True,
             throws=(ChunkFailed, ChunkUnknown))
def send_chunk(self, chunk_id: int, account: str | None = None, lane: str | None = None,
               booking: str | None = None, then: list[int] | None = None, **newer: object) -> str:
    # ``then``: the rest of the chunk's group (tasks/publish.py). ``newer``: fields a later
    # version adds to the message are ignored, so that workers of two versions can share
    # the queues during a rolling upgrade (the chunk's claim decides).
    ids = [int(chunk_id), *(int(i) for i in then or [])]
    return run_group(ids, account, lane, label=getattr(self.request, "argsrepr", None), booking=booking)

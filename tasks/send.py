"""``smsq.send_chunk``: one vendor call for one chunk, at most once per claim.

1. Take a slot from the account's shared rate limiter, without waiting. No
   slot: the message goes back to the queue with the wait as a short
   countdown, and the worker slot takes other work (nothing was claimed, no
   attempt counted, no database transaction spent). An OTP (priority lane)
   books the next slot that frees and its message carries the booking, which
   it redeems when it comes back.
2. Claim: ``pending -> sending`` (attempts + 1) by a conditional update that
   also returns the content and the numbers (store/ledger/claims.py: one
   transaction; on PostgreSQL one statement, committed on its own: one round
   trip). A message for a chunk in any other state is a redelivery: do
   nothing, and give the limiter's slot back. A chunk claimed past its batch's
   validity (``valid_for``) ends ``expired`` there, before the circuit and the
   call (tasks/validity.py).
3. Call the provider; decide once what its answer means (tasks/decisions.py:
   accepted, pending to retry, failed, unknown; whether the account's circuit
   opens) and record it (tasks/outcomes.py; the second and last transaction of
   an accepted chunk, on PostgreSQL again one statement: store/ledger/records.py).
   A refusal over a number the vendor did not name (linkws -11) is narrowed instead:
   the offenders fail, the rest goes to new chunks, sent as any (tasks/narrowing.py).

4. A chunk that ended ``failed``, ``unknown`` or ``expired`` ends the task as a Celery
   failure (``ChunkFailed`` / ``ChunkUnknown`` / ``ChunkExpired``, declared expected: logged
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
from datetime import timedelta

from sqlalchemy import select

from smsq.providers import Outcome, Provider, SendContext, SendResult
from smsq.store import ledger
from smsq.store.ledger import ClaimedChunk
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Chunk, utcnow
from smsq.worker import slots
from smsq.worker.app import smsq_task
from smsq.worker.clients import provider_for
from smsq.worker.config import Settings, knowing, settings
from smsq.worker.db import session_scope, transaction
from smsq.worker.limiter import WINDOW_MARGIN, Limiter, Taken, limiter

from . import circuit, narrowing, policy, routes, validity
from .outcome_keeper import keep_outcome, with_db_retry
from .outcomes import ChunkRun, after_record, decided, record
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


NOT_SENT = (ChunkState.FAILED, ChunkState.UNKNOWN)  # recorded states that end the task as a failure


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


class ChunkExpired(ChunkNotSent):
    """The chunk is ``expired``: its batch's validity (valid_for) passed before its vendor
    call, so it was not sent, and never will be."""


def expired(claimed: ClaimedChunk) -> ChunkExpired:
    """``chunk 12 (batch 3, shop-dxt): expired — not sent: its validity ... (valid until ...)``."""
    until = validity.clock(claimed.valid_until) if claimed.valid_until else "?"
    return ChunkExpired(
        f"{chunk_label(claimed.chunk_id, claimed.batch_id, claimed.account)}: expired — "
        f"{validity.EXPIRED_DETAIL} (valid until {until})"
    )


def _run_of(exc: ChunkNotSent) -> ChunkRun:
    if isinstance(exc, ChunkUnknown):
        return ChunkRun.UNKNOWN
    return ChunkRun.EXPIRED if isinstance(exc, ChunkExpired) else ChunkRun.FAILED


def _group_error(errors: list[ChunkNotSent]) -> type[ChunkNotSent]:
    """The failure a group with several chunks not sent ends as: unknown if any is, expired
    if all are, else failed."""
    if any(isinstance(e, ChunkUnknown) for e in errors):
        return ChunkUnknown
    return ChunkExpired if all(isinstance(e, ChunkExpired) for e in errors) else ChunkFailed


@dataclass
class Pace:
    """How long the vendor took to answer a chunk's call (None: no call was made)."""

    seconds: float | None = None


def run_group(
    chunk_ids: list[int],
    account: str | None = None,
    lane: str | None = None,
    label: str | None = None,
    booking: str | None = None,
) -> ChunkRun:
    """Send a group's chunks one after another (see the module's docstring); return the
    last chunk's state. A chunk that ended failed or unknown does not stop the group:
    the group ends as that failure once the rest is done."""
    with slots.occupied():
        return _run_group(settings(), chunk_ids, account, lane, label, booking)


def _run_group(
    conf: Settings, chunk_ids: list[int], account: str | None, lane: str | None, label: str | None, booking: str | None
) -> ChunkRun:
    not_sent_: list[ChunkNotSent] = []
    state = ChunkRun.SKIPPED
    for at, chunk_id in enumerate(chunk_ids):
        rest, pace, started = chunk_ids[at + 1 :], Pace(), time.monotonic()
        try:
            state = run_chunk(
                chunk_id,
                account,
                lane,
                label=label if not rest and not at else None,
                booking=booking if not at else None,
                then=rest,
                pace=pace,
            )
        except ChunkNotSent as exc:
            not_sent_.append(exc)
            state = _run_of(exc)
        except BaseException:
            try:
                hand_on(conf, rest, lane, account)  # the rest is not this failure's
            except Exception:  # the relay publishes them in time; the failure above is the news
                log.exception("chunk %s: could not hand the rest of its group on", chunk_id)
            raise
        if state in (ChunkRun.DEFERRED, ChunkRun.WAITING):
            break  # gone back to the queue, or to wait for the send window, with the rest of the group
        if rest and _slow_vendor(pace, time.monotonic() - started) and _free_for(rest):
            hand_on(conf, rest, lane, account)  # slots free to send it side by side
            break
    if len(not_sent_) == 1:
        raise not_sent_[0]
    if not_sent_:
        raise _group_error(not_sent_)(f"{len(not_sent_)} chunks not sent: " + "; ".join(map(str, not_sent_)))
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


def run_chunk(
    chunk_id: int,
    account: str | None = None,
    lane: str | None = None,
    label: str | None = None,
    booking: str | None = None,
    then: list[int] | None = None,
    pace: Pace | None = None,
) -> ChunkRun:
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
            return ChunkRun.SKIPPED
        account, lane = found
    if account not in conf.accounts:  # added to the file since this process read it, or not here
        conf = knowing(account)
        if account not in conf.accounts:
            wait_for_account(conf, [chunk_id, *(then or [])], account)
            return ChunkRun.DEFERRED
        wake(conf, {account})  # its chunks that waited for it need not wait longer
    # The token before the claim: a chunk that finds none costs no database
    # transaction, only its message going back to the queue.
    bucket, rate = limiter(conf.redis_url), conf.account(account).rate_limit
    asked, taken = take_slot(bucket, account, rate, lane, booking)
    if taken.ticket is None:  # no slot now: ask again when one frees
        come_back(conf, chunk_id, lane, account, taken.wait, label, booking=taken.booking, then=then)
        return ChunkRun.DEFERRED
    return _claim_and_send(conf, chunk_id, Slot(bucket, account, rate, taken.ticket, asked), pace, then or [])


@dataclass(frozen=True)
class Slot:
    """The account's rate-limit slot a chunk took, and when it asked for it."""

    bucket: Limiter
    account: str
    rate: float
    ticket: str  # the limiter's name for the slot
    asked: float

    def give_back(self) -> None:
        self.bucket.give_back(self.account, self.ticket)


def _claim_and_send(conf: Settings, chunk_id: int, slot: Slot, pace: Pace | None, then: list[int]) -> ChunkRun:
    """Claim the chunk with its slot taken, and send it (or say why not). ``then``: the rest
    of its group, which waits with it for a send window that closed."""
    try:
        claimed = with_db_retry(conf, ledger.claim, conf, chunk_id)  # [db outage] rides out a short one
        if claimed is not None and claimed.recipients:
            provider = _provider_or_release(conf, claimed)
    except BaseException:
        slot.give_back()
        raise
    if claimed is None or not claimed.recipients:  # no vendor call comes of the slot: another chunk may have it
        slot.give_back()
    if claimed is None:
        log.info("chunk %s: not pending (already claimed or done); nothing to do", chunk_id)
        return ChunkRun.SKIPPED
    if not claimed.recipients:  # every number of the chunk was settled elsewhere (an operator)
        nothing = SendResult(Outcome.OK, message="no recipient left to send")
        record(conf, claimed, nothing, decided(conf, claimed, nothing))
        return ChunkRun.ACCEPTED
    try:
        admitted = _before_call(conf, claimed, slot, then)
    except BaseException as exc:
        _release_unsent(conf, claimed, exc)
        raise
    if admitted is ChunkRun.EXPIRED:
        raise expired(claimed)
    if isinstance(admitted, ChunkRun):
        return admitted  # held, moved, failed, or given back to the relay
    return send_claimed(conf, claimed, provider, probe=admitted.probe, pace=pace)


def wait_for_window(conf: Settings, claimed: ClaimedChunk, then: list[int]) -> bool:
    """A chunk claimed outside its send window (a campaign running when the window closed, a
    retry due at night) goes back to ``pending`` until the next opening, its attempt not
    counted, and the rest of its group (the same batch and account) waits with it, unclaimed:
    the relay publishes them at the opening. True: it waits (no vendor call)."""
    now = utcnow()
    opening = policy.window_hold(conf, claimed, now)
    if opening is None:
        return False
    if opening - now <= policy.SLACK:  # the relay's countdown to the opening ran a little short
        time.sleep((opening - now).total_seconds())  # never a call before the opening
        return False
    why = policy.window_detail(policy.chunk_rules(conf, claimed).send_window, opening, now)
    ledger.release(conf, claimed, why, opening)
    if then:
        ledger.hold(conf, then, why, opening)
    log.info(
        "chunk %s (batch %s, account %s)%s: %s",
        claimed.chunk_id,
        claimed.batch_id,
        claimed.account,
        f" and {len(then)} more of its group" if then else "",
        why,
    )
    return True


def _before_call(conf: Settings, claimed: ClaimedChunk, slot: Slot, then: list[int]) -> circuit.Admission | ChunkRun:
    """What comes between the claim and the vendor call: the chunk's validity, its send
    window (``then``: the rest of its group, which waits with it), its route's circuit,
    the rate-limit slot's stamp. The admission to call the vendor, or what became
    of the chunk instead (its slot then given back: no vendor call comes of it)."""
    # -- send policy: a chunk past its batch's validity (valid_for) ends expired, unsent: checked
    # first after the claim, which makes it this worker's alone, so no call can follow the check
    if validity.expire_if_lapsed(conf, claimed):
        slot.give_back()
        return ChunkRun.EXPIRED
    # -- send policy: a chunk claimed outside its kind's send window waits for the opening --
    if wait_for_window(conf, claimed, then):
        slot.give_back()
        return ChunkRun.WAITING
    # -- failover routes: the account's circuit admits the chunk, or it waits or moves --
    admitted = routes.before_call(conf, claimed)
    if isinstance(admitted, ChunkRun):
        slot.give_back()
        return admitted  # held, moved or failed
    # The slot counts from when the call starts, not from before the claim: a
    # claim that waited (a busy database) moves the slot to now. A quick one
    # is within the limiter's margin and saves the round trip.
    if time.monotonic() - slot.asked > CLAIM_WITHIN_MARGIN and not slot.bucket.stamp(
        slot.account, slot.rate, slot.ticket
    ):
        ledger.release(
            conf, claimed, f"the claim outlasted account {slot.account}'s rate-limit slot; the relay sends it again"
        )
        log.warning("chunk %s: rate-limit slot lost while claiming; given back to the relay", claimed.chunk_id)
        return ChunkRun.RELEASED
    return admitted


def wait_for_account(conf: Settings, chunk_ids: list[int], account: str) -> None:
    """An account this worker does not know, even after reading its file again: the
    chunks stay pending, with the reason for `smsq send --wait`, and the relay
    publishes them again later (tasks/unknown_account.py). Nothing was claimed."""
    why = why_unknown(conf, account)
    ledger.hold(conf, chunk_ids, why, utcnow() + timedelta(seconds=UNKNOWN_ACCOUNT_RETRY))
    say_unknown(conf, chunk_ids[0], why, account)


def _release_unsent(conf: Settings, claimed: ClaimedChunk, exc: BaseException) -> None:
    """[redis outage] Between the claim and the vendor call something failed (Redis gone
    while the slot was stamped, the database while the circuit was read, the account's
    client that could not be built): no call was
    made, so the claim goes back (pending, the attempt not counted) and the relay
    publishes the chunk again. Left 'sending', it would turn 'unknown' after the send
    timeout although its numbers never left. (A release that fails too leaves it so:
    the safe side.)"""
    try:
        ledger.release(conf, claimed, f"not sent: {type(exc).__name__}: {exc}")
    except Exception:
        log.exception(
            "chunk %s: could not give the claim back; the relay settles it after the send timeout", claimed.chunk_id
        )
    else:
        log.warning("chunk %s: not sent (%s); given back to the relay", claimed.chunk_id, type(exc).__name__)


def take_slot(bucket: Limiter, account: str, rate: float, lane: str, booking: str | None) -> tuple[float, Taken]:
    """The account's rate-limit slot, or the answer to come back with; and when it was
    asked for. An OTP does not queue behind a blast: refused, it books the next slot
    that frees and comes back for it with the booking. A booked slot only moments
    away, or a free one a bulk chunk is told of, is waited for here rather than
    through the broker."""
    for _ in range(BOOKING_NAPS + 1):
        asked = time.monotonic()
        taken = (
            bucket.try_take(account, rate, jump=lane == "priority")
            if booking is None
            else bucket.redeem(account, rate, booking)
        )
        if taken.ok or taken.wait > (SLOT_NAP if taken.booking is None else BOOKING_NAP):
            break
        booking = taken.booking
        time.sleep(taken.wait)
    return asked, taken


def _provider_or_release(conf: Settings, claimed: ClaimedChunk) -> Provider:
    try:
        return provider_for(conf.account(claimed.account))
    except Exception as exc:
        _release_unsent(conf, claimed, exc)
        raise


def send_claimed(
    conf: Settings, claimed: ClaimedChunk, provider: Provider, probe: bool = False, pace: Pace | None = None
) -> ChunkRun:
    """Call the vendor for a claimed chunk and record what it said. ``probe``: the chunk
    is its account's half-open probe (tasks/circuit.py); ``pace`` hears how long the call took."""
    chunk_id, account = claimed.chunk_id, provider.account
    numbers = [mobile for _, mobile in claimed.recipients]
    context = SendContext(claimed.batch_id, claimed.seq, claimed.attempt, claimed.batch_created_at, claimed.stamp)
    # Past this line the vendor may act on the request: no exception may turn
    # it back into 'pending'. [db outage] The answer is recorded through a database
    # outage, or kept in the local spool and recorded later (tasks/outcome_keeper.py).
    started = time.monotonic()
    # No send time: a scheduled chunk is claimed at its time (the relay releases it then),
    # so the vendor sends it now (see tasks/producer.py for why smsq holds it itself).
    result = provider.send(numbers, claimed.content, None, context)
    seconds = time.monotonic() - started
    if pace is not None:
        pace.seconds = seconds
    decision = decided(conf, claimed, result, probe)  # once: for the circuit, a move, and the record
    # -- failover routes: the circuit hears the answer; a routed chunk that tripped it moves on --
    if routes.after_call(conf, claimed, result, decision, seconds):
        return ChunkRun.MOVED
    if decision.narrows:  # refused over a number it did not name: its offenders fail, the rest goes again
        run = narrowing.narrow(conf, claimed, result, decision, seconds)
        if run == ChunkRun.FAILED:
            raise not_sent(ChunkState.FAILED, claimed, result)
        return run
    state, retry_in = keep_outcome(conf, claimed, result, decision, seconds)
    if state == ChunkRun.SPOOLED:
        return ChunkRun.SPOOLED
    level = logging.WARNING if state in NOT_SENT else logging.INFO
    if result.outcome in (Outcome.AUTH, Outcome.BALANCE):
        level = logging.ERROR  # the account needs an operator
    log.log(
        level,
        "chunk %s (batch %s, %s numbers, account %s): %s -> %s %s %s",
        chunk_id,
        claimed.batch_id,
        len(numbers),
        account.name,
        result.outcome.value,
        state,
        result.code or "",
        result.message or "",
    )
    after_record(conf, claimed, result, retry_in)
    if state in NOT_SENT:
        raise not_sent(state, claimed, result)
    return ChunkRun(state)


def _account_and_lane(conf: Settings, chunk_id: int) -> tuple[str, str] | None:
    with session_scope(conf.database_url, readonly=True) as session:
        row = session.execute(
            select(Chunk.account, Chunk.lane).where(Chunk.id == chunk_id, Chunk.state == ChunkState.PENDING)
        ).first()
    return None if row is None else (row.account, row.lane)


def come_back(
    conf: Settings,
    chunk_id: int,
    lane: str,
    account: str,
    wait: float,
    label: str | None = None,
    booking: str | None = None,
    then: list[int] | None = None,
) -> None:
    """The account has no slot for ``wait`` seconds: the message goes back to the
    queue for that long (nothing is claimed, no attempt counted) and this
    worker slot takes other work; it carries the ``booking`` of the slot booked
    for it, if any, and ``then``, the rest of its group. A wait longer than a
    broker countdown may be goes to the database for the relay (which publishes
    without the booking: it is given back)."""
    ids = [chunk_id, *(then or [])]
    if wait > MAX_COUNTDOWN:
        _forget_booking(conf, account, booking)
        ledger.hold(conf, ids, f"waiting for account {account}'s rate limit", utcnow() + timedelta(seconds=wait))
        return
    try:
        publish_chunk(chunk_id, lane, account=account, countdown=wait, label=label, booking=booking, then=then)
    except Exception:
        # The broker refused it: the relay publishes unqueued chunks at its next pass.
        log.exception("chunk %s: could not give it back to the queue; the relay will", chunk_id)
        _forget_booking(conf, account, booking)
        with transaction(conf.database_url) as conn:
            ledger.unqueue(conn, ids)


def _forget_booking(conf: Settings, account: str, booking: str | None) -> None:
    if booking is not None:  # no message comes back with it: the slot is free for others
        limiter(conf.redis_url).give_back(account, booking)


def not_sent(state: ChunkState, claimed: ClaimedChunk, result: SendResult) -> ChunkNotSent:
    """``chunk 12 (batch 3, shop-dxt): unknown — ambiguous: read timeout ...``; the vendor's
    code and message, never numbers or content."""
    why = " ".join(part for part in (result.outcome.value + ":", result.code, result.message) if part)
    error = ChunkUnknown if state == ChunkState.UNKNOWN else ChunkFailed
    return error(f"{chunk_label(claimed.chunk_id, claimed.batch_id, claimed.account)}: {state} — {why}"[:500])


# `throws`: an expected end, logged in one line without a traceback. With late
# acks the message is still acked (task_acks_on_failure_or_timeout), so a failed
# or unknown chunk is not delivered again.
@smsq_task(
    name="smsq.send_chunk",
    bind=True,
    ignore_result=True,
    acks_late=True,
    throws=(ChunkFailed, ChunkUnknown, ChunkExpired),
)
def send_chunk(
    self,
    chunk_id: int,
    account: str | None = None,
    lane: str | None = None,
    booking: str | None = None,
    then: list[int] | None = None,
    **newer: object,
) -> str:
    # ``then``: the rest of the chunk's group (tasks/publish.py). ``newer``: fields a later
    # version adds to the message are ignored, so that workers of two versions can share
    # the queues during a rolling upgrade (the chunk's claim decides).
    ids = [int(chunk_id), *(int(i) for i in then or [])]
    return run_group(ids, account, lane, label=getattr(self.request, "argsrepr", None), booking=booking)

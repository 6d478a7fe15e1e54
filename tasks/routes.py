"""Failover routes: a send through ``[routes.NAME]`` goes to the first account that can send,
and numbers that were never sent move to the next account when one fails.

Decisions:

* **Choosing at intake.** ``send_sms(account="shop")`` takes the route's first account
  whose circuit admits sends (tasks/circuit.py: closed, or a probe is free), prepares
  the content for that account and chunks for its vendor's size. The batch keeps the
  route's name and the content as given (``batches.route``, ``batches.given_content``).
  When no account can send, the first one takes the batch and its chunks wait.
* **What moves.** Only chunks that are ``pending`` — never handed to a vendor, or
  answered with a refusal that says the vendor did not take them (auth, balance, a
  transient error on the last attempt) — and of those only the numbers still
  ``queued``. A chunk that may have reached its vendor (``sending`` in another
  worker, ``unknown``) never moves, so no number is sent twice.
* **When.** A chunk of a routed batch that finds its account's circuit open at claim
  time, or whose own call just tripped the circuit, moves itself *and* every other
  pending chunk of its batch on that account in one go, so the numbers are re-split
  to the next vendor's chunk size (100 numbers per dxt call become 500 per linkws
  call). The next account is the first of the route, in order of preference, whose
  circuit admits sends and whose vendor can carry the content (charset, length,
  signature rule: prepared again from the content as given). A content no usable
  account can carry fails the chunk with each account's reason.
* **One transaction.** The old chunks become ``moved`` (detail "moved to shop-linkws:
  shop-dxt auth -7 ..."), the new chunks are inserted with seq numbers after the
  batch's highest, the recipients get the new seq, and the vendor call is recorded,
  all in one commit: a crash leaves the old chunks or the new ones, never both, never
  neither. The new chunks are published after the commit; a lost publish is the
  relay's to repeat, as for any pending chunk.
* **Nowhere to go.** When no other account of the route can send, the chunk waits like
  a held chunk, until the earliest ``reopen_at`` of the route's accounts.
* A chunk moved away carries its own prepared content (``chunks.content``) when it
  differs from the batch's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from smsq.providers import ContentError, SendResult, provider_class
from smsq.providers.base import BEIJING
from smsq.store.models import Batch, BlockedNumber, Chunk, Recipient, VendorCall, utcnow
from smsq.worker.config import Settings
from smsq.worker.db import session_scope
from smsq.worker.route_config import Route

from . import circuit
from .decisions import Decision
from .publish import publish_chunks
from .schema import ensure_schema

log = logging.getLogger("smsq.routes")

MOVE_TRIES = 3  # two workers moving chunks of one batch at once may pick the same seq numbers


@dataclass(frozen=True)
class Target:
    account: str  # the account that takes the batch now
    route: str | None  # None: the caller named an account


@dataclass(frozen=True)
class Move:
    kind: str  # moved | failed | wait | lost (the chunk is no longer ours to move)
    detail: str = ""
    until: datetime | None = None  # wait: when to look again
    new_chunks: tuple[int, ...] = ()


# -- intake -----------------------------------------------------------------

def choose_account(conf: Settings, name: str, now: datetime | None = None) -> Target:
    """The account a send to ``name`` (an account or a route) goes to."""
    if name not in conf.routes:
        conf.account(name)  # UnknownAccountError, naming accounts and routes
        return Target(name, None)
    route = conf.route_or_account(name)
    ensure_schema(conf)
    now = now or utcnow()
    with session_scope(conf.database_url, readonly=True) as session:
        rows = circuit.circuits(session, route.accounts)
    first = next((a for a in route.accounts if circuit.usable(rows.get(a), now, conf)), route.accounts[0])
    return Target(first, route.name)


def prepared_for(conf: Settings, account: str, content: str) -> str:
    """The content as ``account``'s vendor will get it; ContentError when it cannot carry it."""
    acct = conf.account(account)
    return provider_class(acct.provider)(acct, client=None).prepare_content(content)


# -- the send path ----------------------------------------------------------

def before_call(conf: Settings, work) -> circuit.Admission | str:
    """Admit the claimed chunk to its vendor, or say what became of it instead:
    "moved" (to the route's next account), "held" (waits), "failed" (content)."""
    admitted = circuit.admit(conf, work.account, work.chunk_id)
    if isinstance(admitted, circuit.Admission):
        return admitted
    why = f"{work.account} {admitted.why}".strip()
    route = route_of(conf, work.batch_id)
    if route is None:
        return hold(conf, work, admitted.until, f"the account's last send failed ({admitted.why})")
    return settle_move(conf, work, move(conf, work, route, why))


def after_call(conf: Settings, work, result: SendResult, decision: Decision, seconds: float) -> bool:
    """Tell the circuit what the call said (its ``decision``, tasks/decisions.py); for a routed
    batch whose call tripped it, move the numbers on. True: the chunk was moved (or waits),
    so the caller records nothing."""
    # Past the vendor call nothing here may keep record() from storing the outcome: a
    # failure below is logged and the chunk is recorded as if it had no route.
    try:
        circuit.after_call(conf, work.account, decision)
        if not decision.moves_on_route:
            return False
        route = route_of(conf, work.batch_id)
        if route is None:
            return False
        outcome = move(conf, work, route, f"{work.account} {decision.reason}", call=(result, seconds))
    except Exception:  # the move's transaction rolled back: the chunk is still ours, 'sending'
        log.exception("chunk %s (batch %s): the circuit or the move failed; recording the outcome as it is",
                      work.chunk_id, work.batch_id)
        return False
    if outcome.kind == "lost":
        return False  # the relay made it unknown meanwhile: record() settles the late answer
    settle_move(conf, work, outcome)
    return True


def settle_move(conf: Settings, work, outcome: Move) -> str:
    if outcome.kind == "moved":
        log.warning("chunk %s (batch %s): %s", work.chunk_id, work.batch_id, outcome.detail)
        if outcome.new_chunks:
            publish_chunks(conf, work.batch_id, chunk_ids=outcome.new_chunks)
        return "moved"
    if outcome.kind == "failed":
        log.error("chunk %s (batch %s): failed, %s", work.chunk_id, work.batch_id, outcome.detail)
        return "failed"
    if outcome.kind == "wait":
        log.warning("chunk %s (batch %s, account %s): %s", work.chunk_id, work.batch_id, work.account,
                    outcome.detail)
        return "held"
    return "skipped"


def hold(conf: Settings, work, until: datetime, why: str) -> str:
    from .send import release  # send.py calls this module; imported late to keep one direction at load

    detail = f"held until {_clock(until)} Beijing time: {why}"
    release(conf, work, detail, until)
    log.warning("chunk %s (batch %s, account %s): %s", work.chunk_id, work.batch_id, work.account, detail)
    return "held"


def _clock(until: datetime) -> str:
    return f"{until.replace(tzinfo=timezone.utc).astimezone(BEIJING):%H:%M:%S}"


def _mine(work):
    """The claimed chunk, still as this claim left it."""
    return and_(Chunk.id == work.chunk_id, Chunk.state == "sending", Chunk.attempts == work.attempt)


def route_of(conf: Settings, batch_id: int) -> Route | None:
    """The batch's route, if it has one with another account to go to."""
    with session_scope(conf.database_url, readonly=True) as session:
        name = session.scalar(select(Batch.route).where(Batch.id == batch_id))
    return conf.routes.get(name) if name else None


# -- moving -----------------------------------------------------------------

def move(conf: Settings, work, route: Route, why: str, call: tuple[SendResult, float] | None = None,
         now: datetime | None = None) -> Move:
    """Move the claimed chunk ``work`` and the batch's other pending chunks of its account to
    the route's next usable account, in one transaction (see the module docstring)."""
    for attempt in range(MOVE_TRIES):
        try:
            return _move_once(conf, work, route, why, call, now or utcnow())
        except IntegrityError:  # another worker took the same new seq numbers: count again
            if attempt == MOVE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _move_once(conf, work, route, why, call, now) -> Move:
    with session_scope(conf.database_url) as session:
        if call is not None:  # the call happened, whatever becomes of the chunk
            result, seconds = call
            session.add(VendorCall(account=work.account, outcome=result.outcome.value, seconds=seconds,
                                   created_at=now))
        batch = session.get(Batch, work.batch_id)
        rows = circuit.circuits(session, route.accounts)
        candidates = [a for a in route.accounts if a != work.account and circuit.usable(rows.get(a), now, conf)]
        refused = []
        for target in candidates:
            try:
                content = prepared_for(conf, target, batch.given_content or batch.content)
            except ContentError as exc:
                refused.append(f"{target}: {exc}")
                continue
            detail = f"moved to {target}: {why}"[:1000]
            if not session.execute(update(Chunk).where(_mine(work)).values(
                    state="moved", finished_at=now, detail=detail)).rowcount:
                session.rollback()  # not even the call: record() counts it with the late answer
                return Move("lost")
            others = session.execute(update(Chunk).where(
                Chunk.batch_id == work.batch_id, Chunk.account == work.account, Chunk.state == "pending")
                .values(state="moved", finished_at=now, detail=detail).returning(Chunk.seq)).scalars().all()
            new = _rechunk(session, conf, batch, [work.seq, *others], target, content, now)
            return Move("moved", f"{1 + len(others)} chunk(s) {detail} -> {len(new)} new chunk(s)",
                        new_chunks=tuple(new))
        if refused:
            _fail(session, work, now, "cannot move to another account of route "
                  f"{route.name}: " + "; ".join(refused))
            return Move("failed", "; ".join(refused))
        reopen = [r.reopen_at for a, r in rows.items() if a != work.account and r.reopen_at and r.reopen_at > now]
        own = rows.get(work.account)
        if own is not None and own.reopen_at and own.reopen_at > now:
            reopen.append(own.reopen_at)
        until = min(reopen, default=now + timedelta(seconds=circuit.PROBE_WAIT))
        detail = f"held until {_clock(until)} Beijing time: no account of route {route.name} can send now ({why})"
        # Given back untouched, as send.release does, in the transaction that recorded the call.
        if not session.execute(update(Chunk).where(_mine(work)).values(
                state="pending", attempts=Chunk.attempts - 1, detail=detail[:500], queued_at=None,
                next_attempt_at=until)).rowcount:
            session.rollback()
            return Move("lost")
        return Move("wait", detail, until)


def _rechunk(session, conf: Settings, batch: Batch, seqs: list[int], account: str, content: str, now: datetime) -> list[int]:
    """New chunks of ``account``'s size for the queued recipients of chunks ``seqs``. A number
    ``account`` must not send to (its blocked list: an unsubscribe at that vendor) fails there
    with the reason, as the producer would have refused it for a batch sent to it directly."""
    cls = provider_class(conf.account(account).provider)
    first = session.scalar(select(func.max(Chunk.seq)).where(Chunk.batch_id == batch.id)) + 1
    queued = and_(Recipient.batch_id == batch.id, Recipient.chunk_seq.in_(seqs), Recipient.state == "queued")
    blocked = session.execute(select(Recipient.id, BlockedNumber.reason).join(BlockedNumber, and_(
        BlockedNumber.account == account, BlockedNumber.mobile == Recipient.mobile)).where(queued)).all()
    for rid, reason in blocked:  # under the target account's first new seq: that account refused them
        session.execute(update(Recipient).where(Recipient.id == rid).values(
            state="failed", chunk_seq=first, code="blocked", detail=f"blocked for account {account}: {reason}"[:255],
            updated_at=now))
    ids = session.execute(select(Recipient.id).where(queued).order_by(Recipient.id)).scalars().all()
    if not ids:
        return []
    size = cls.max_numbers
    scheduled = batch.send_at is not None and batch.send_at > now  # held by smsq at every vendor
    rows = []
    for n, start in enumerate(range(0, len(ids), size)):
        part = ids[start:start + size]
        session.execute(update(Recipient).where(Recipient.id.in_(part)).values(chunk_seq=first + n, updated_at=now))
        rows.append({"batch_id": batch.id, "seq": first + n, "account": account, "lane": batch.lane,
                     "size": len(part), "state": "pending", "attempts": 0,
                     "next_attempt_at": batch.send_at if scheduled else None,
                     "queued_at": None if scheduled else now,
                     "content": None if content == batch.content else content})
    return list(session.execute(insert(Chunk).returning(Chunk.id), rows).scalars())


def _fail(session, work, now: datetime, detail: str) -> None:
    if session.execute(update(Chunk).where(_mine(work)).values(state="failed", finished_at=now, detail=detail[:1000]))\
            .rowcount:
        session.execute(update(Recipient).where(
            Recipient.batch_id == work.batch_id, Recipient.chunk_seq == work.seq, Recipient.state == "queued")
            .values(state="failed", detail=detail[:255], updated_at=now))


# -- reading ----------------------------------------------------------------

def recipients_by_account(session, batch: Batch, counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """{account: {recipient state: count}}: which account holds (sent, delivered, ...) which
    numbers. A batch that never moved has one account: its counts, less the rejected."""
    if batch.route is None:
        held = {state: n for state, n in counts.items() if state != "rejected"}
        return {batch.account: held} if held else {}
    out: dict[str, dict[str, int]] = {}
    for account, state, n in session.execute(
            select(Chunk.account, Recipient.state, func.count())
            .join(Chunk, and_(Chunk.batch_id == Recipient.batch_id, Chunk.seq == Recipient.chunk_seq))
            .where(Recipient.batch_id == batch.id).group_by(Chunk.account, Recipient.state)).all():
        out.setdefault(account, {})[state] = n
    return out

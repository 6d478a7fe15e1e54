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
  differs from the batch's, and its own stamp (``chunks.stamp``) when its new account's
  vendor groups a batch's calls by one (orgws Timestamp, store/stamps.py): the batch's
  own is unique only among its first account's batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError

from smsq.providers import ContentError, Provider, SendResult, provider_class
from smsq.providers.base import BEIJING
from smsq.store import ledger, stamps
from smsq.store.ledger import ClaimedChunk
from smsq.store.lifecycle import RecipientState
from smsq.store.models import Batch, Chunk, Recipient, utcnow
from smsq.store.sql import fit
from smsq.worker.config import Settings
from smsq.worker.db import session_scope
from smsq.worker.route_config import Route

from . import circuit
from .decisions import Decision
from .outcomes import ChunkRun
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


def before_call(conf: Settings, claimed: ClaimedChunk) -> circuit.Admission | ChunkRun:
    """Admit the claimed chunk to its vendor, or say what became of it instead:
    "moved" (to the route's next account), "held" (waits), "failed" (content)."""
    admitted = circuit.admit(conf, claimed.account, claimed.chunk_id)
    if isinstance(admitted, circuit.Admission):
        return admitted
    why = f"{claimed.account} {admitted.why}".strip()
    route = route_of(conf, claimed.batch_id)
    if route is None:
        return _wait_for_circuit(conf, claimed, admitted.until, f"the account's circuit is open ({admitted.why})")
    return settle_move(conf, claimed, move(conf, claimed, route, why))


def after_call(conf: Settings, claimed: ClaimedChunk, result: SendResult, decision: Decision, seconds: float) -> bool:
    """Tell the circuit what the call said (its ``decision``, tasks/decisions.py); for a routed
    batch whose call tripped it, move the numbers on. True: the chunk was moved (or waits),
    so the caller records nothing."""
    # Past the vendor call nothing here may keep record() from storing the outcome: a
    # failure below is logged and the chunk is recorded as if it had no route.
    try:
        circuit.after_call(conf, claimed.account, decision)
        if not decision.moves_on_route:
            return False
        route = route_of(conf, claimed.batch_id)
        if route is None:
            return False
        outcome = move(conf, claimed, route, f"{claimed.account} {decision.reason}", call=(result, seconds))
    except Exception:  # the move's transaction rolled back: the chunk is still ours, 'sending'
        log.exception(
            "chunk %s (batch %s): the circuit or the move failed; recording the outcome as it is",
            claimed.chunk_id,
            claimed.batch_id,
        )
        return False
    if outcome.kind == "lost":
        return False  # the relay made it unknown meanwhile: record() settles the late answer
    settle_move(conf, claimed, outcome)
    return True


def settle_move(conf: Settings, claimed: ClaimedChunk, outcome: Move) -> ChunkRun:
    if outcome.kind == "moved":
        log.warning("chunk %s (batch %s): %s", claimed.chunk_id, claimed.batch_id, outcome.detail)
        if outcome.new_chunks:
            publish_chunks(conf, claimed.batch_id, chunk_ids=outcome.new_chunks)
        return ChunkRun.MOVED
    if outcome.kind == "failed":
        log.error("chunk %s (batch %s): failed, %s", claimed.chunk_id, claimed.batch_id, outcome.detail)
        return ChunkRun.FAILED
    if outcome.kind == "wait":
        log.warning(
            "chunk %s (batch %s, account %s): %s", claimed.chunk_id, claimed.batch_id, claimed.account, outcome.detail
        )
        return ChunkRun.HELD
    return ChunkRun.SKIPPED


def _wait_for_circuit(conf: Settings, claimed: ClaimedChunk, until: datetime, why: str) -> ChunkRun:
    """Give the claim back untouched, to wait until ``until`` (its account's circuit is open)."""
    detail = f"held until {_clock(until)} Beijing time: {why}"
    ledger.release(conf, claimed, detail, until)
    log.warning("chunk %s (batch %s, account %s): %s", claimed.chunk_id, claimed.batch_id, claimed.account, detail)
    return ChunkRun.HELD


def _clock(until: datetime) -> str:
    return f"{until.replace(tzinfo=UTC).astimezone(BEIJING):%H:%M:%S}"


def route_of(conf: Settings, batch_id: int) -> Route | None:
    """The batch's route, if it has one with another account to go to."""
    with session_scope(conf.database_url, readonly=True) as session:
        name = session.scalar(select(Batch.route).where(Batch.id == batch_id))
    return conf.routes.get(name) if name else None


# -- moving -----------------------------------------------------------------


def move(
    conf: Settings,
    claimed: ClaimedChunk,
    route: Route,
    why: str,
    call: tuple[SendResult, float] | None = None,
    now: datetime | None = None,
) -> Move:
    """Move the claimed chunk and the batch's other pending chunks of its account to
    the route's next usable account, in one transaction (see the module docstring)."""
    for attempt in range(MOVE_TRIES):
        try:
            return _move_once(conf, claimed, route, why, call, now or utcnow())
        except IntegrityError:  # another worker took the same new seq numbers: count again
            if attempt == MOVE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _move_once(conf, claimed: ClaimedChunk, route: Route, why: str, call, now: datetime) -> Move:
    with session_scope(conf.database_url) as session:
        if call is not None:  # the call happened, whatever becomes of the chunk
            result, seconds = call
            ledger.count_call(session, claimed.account, result.outcome.value, seconds, now)
        batch = session.get_one(Batch, claimed.batch_id)
        rows = circuit.circuits(session, route.accounts)
        candidates = [a for a in route.accounts if a != claimed.account and circuit.usable(rows.get(a), now, conf)]
        refused = []
        for target in candidates:
            try:
                content = prepared_for(conf, target, batch.given_content or batch.content)
            except ContentError as exc:
                refused.append(f"{target}: {exc}")
                continue
            detail = f"moved to {target}: {why}"
            provider = provider_class(conf.account(target).provider)
            stamp = _stamp_at(session, provider, target, batch, now)
            moved = ledger.move(session, claimed, batch, target, content, provider.max_numbers, detail, now, stamp)
            if moved is None:
                session.rollback()  # not even the call: record() counts it with the late answer
                return Move("lost")
            count, new = moved
            return Move(
                "moved",
                f"{count} chunk(s) {fit(Chunk.detail, detail)} -> {len(new)} new chunk(s)",
                new_chunks=tuple(new),
            )
        if refused:
            ledger.fail_claimed(
                session, claimed, f"cannot move to another account of route {route.name}: " + "; ".join(refused), now
            )
            return Move("failed", "; ".join(refused))
        return _wait(session, claimed, route, rows, why, now)


def _stamp_at(session, provider: type[Provider], account: str, batch: Batch, now: datetime) -> int | None:
    """The batch's stamp at ``account``, for a vendor that groups a batch's calls by one
    (orgws): a batch's own is unique only among its own account's batches, so at another
    account it takes one there (now: the moved chunks' send time), or the one it took
    there before. None: the batch's own, or none wanted."""
    if not provider.batch_stamp or account == batch.account:
        return None
    return stamps.taken_by(session, account, batch.id) or stamps.claim(session, account, batch.id, now)


def _wait(session, claimed: ClaimedChunk, route: Route, rows: dict, why: str, now: datetime) -> Move:
    """No account of the route can send now: the claim is given back untouched, as
    ledger.release does, in the transaction that recorded the call, until the earliest
    time one of the route's accounts may send again."""
    reopen = [r.reopen_at for a, r in rows.items() if a != claimed.account and r.reopen_at and r.reopen_at > now]
    own = rows.get(claimed.account)
    if own is not None and own.reopen_at and own.reopen_at > now:
        reopen.append(own.reopen_at)
    until = min(reopen, default=now + timedelta(seconds=circuit.PROBE_WAIT))
    detail = f"held until {_clock(until)} Beijing time: no account of route {route.name} can send now ({why})"
    if not ledger.release_in(session, claimed, detail, until):
        session.rollback()
        return Move("lost")
    return Move("wait", detail, until)


# -- reading ----------------------------------------------------------------


def recipients_by_account(session, batch: Batch, counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """{account: {recipient state: count}}: which account holds (sent, delivered, ...) which
    numbers. A batch that never moved has one account: its counts, less the rejected."""
    if batch.route is None:
        held = {state: n for state, n in counts.items() if state != RecipientState.REJECTED}
        return {batch.account: held} if held else {}
    out: dict[str, dict[str, int]] = {}
    for account, state, n in session.execute(
        select(Chunk.account, Recipient.state, func.count())
        .join(Chunk, and_(Chunk.batch_id == Recipient.batch_id, Chunk.seq == Recipient.chunk_seq))
        .where(Recipient.batch_id == batch.id)
        .group_by(Chunk.account, Recipient.state)
    ).all():
        out.setdefault(account, {})[state] = n
    return out

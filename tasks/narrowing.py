"""Narrowing: a vendor refused a whole call over a number in it that it did not name.

linkws answers -11 (屏蔽手機號碼, blocked number) to a BatchSend2 of 500 numbers that
holds one blocked number, and sends none of them; which number it was, only its
NotSend poll says, later. The provider marks such an answer ``refused_whole``
(providers/base.py; each vendor module says which of its codes qualify and why), and
tasks/decisions.py decides ``narrowed`` (``failed`` for a chunk of one number).
Because the refusal took nothing, the other numbers may be sent again, and smsq
finds the offenders instead of failing every number of the chunk:

* the numbers the vendor named, and those its blocked-number poll already put on the
  account's blocked list, are the offenders: they fail with the vendor's code and
  words, and the rest goes to one new chunk;
* none known: the numbers go to two new chunks, halves in the order sent. A half the
  vendor accepts is done; a refused half is narrowed again; a chunk of one number
  refused is its own offender.

Each offender ends ``failed`` with the vendor's code and message and goes on the
account's blocked list with the reason (tasks/blocklist.py), so later sends skip it.
Each step is one transaction (store/ledger/narrowing.py): the refused chunk ends
``narrowed`` (or ``failed``), its numbers are in new pending chunks of the same
account and batch, and the call is counted; the new chunks are published after the
commit like any chunk (a lost publish is the relay's), so every extra call takes a
rate-limit slot as any send does. Finding k offenders among n numbers costs at most
2·k·⌈log2 n⌉ extra calls (19 calls in all for one among 500); ``SMSQ_NARROW_MAX_CALLS``
caps the extra calls one refused chunk's narrowing may make, and past it the numbers
left fail with the vendor's code, as they did before narrowing. Each step logs one
line: the chunk, its sizes, and the calls spent.

A step the database cannot take (an outage past ``SMSQ_DB_RETRY_FOR``), or a chunk no
longer this worker's, is recorded as a plain refusal instead: every number failed with
the code (tasks/outcome_keeper.py keeps it through the outage).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from smsq.providers import SendResult
from smsq.store import ledger
from smsq.store.ledger import ClaimedChunk
from smsq.store.lifecycle import ChunkState
from smsq.store.models import utcnow
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

from .blocklist import block_refused
from .decisions import Decision, split_refused
from .outcome_keeper import keep_outcome, with_db_retry
from .outcomes import ChunkRun
from .publish import chunk_label, publish_chunks

log = logging.getLogger("smsq.narrowing")

STEP_TRIES = 3  # two steps of one batch at once may pick the same seq numbers for their new chunks


@dataclass(frozen=True)
class Step:
    """One narrowing step, as written."""

    numbers: int  # queued numbers of the refused chunk
    offenders: list[str]  # failed as the refusal's cause, and blocked
    known: int  # offenders known from the answer or the blocked list (not found by halving)
    parts: list[int]  # sizes of the new chunks
    calls: int  # extra calls its narrowing has made so far, these new chunks included
    left: int = 0  # numbers failed with the vendor's code because the cap was reached
    new_chunks: tuple[int, ...] = ()  # the new chunks' ids


def narrow(conf: Settings, claimed: ClaimedChunk, result: SendResult, decision: Decision, seconds: float) -> ChunkRun:
    """Record the refused chunk's narrowing step and publish its new chunks (module docstring).
    Returns ``narrowed``, or ``failed`` when no new chunk came of it; a step that could not
    be written is recorded as the refusal it is (``failed``, or ``spooled``)."""
    try:
        step = with_db_retry(conf, _step, conf, claimed, result, seconds)
    except Exception:
        log.exception("chunk %s: narrowing failed; recording the refusal as it is", claimed.chunk_id)
        step = None
    if step is None:
        plain = dataclasses.replace(decision, next_state=ChunkState.FAILED, narrows=False)
        state, _ = keep_outcome(conf, claimed, result, plain, seconds)
        return ChunkRun(state)
    log.warning(
        "%s: refused whole, %s: %s",
        chunk_label(claimed.chunk_id, claimed.batch_id, claimed.account),
        refusal(result),
        describe(step, result, conf.narrow_max_calls),
    )
    if step.new_chunks:
        publish_chunks(conf, claimed.batch_id, chunk_ids=step.new_chunks)
        return ChunkRun.NARROWED
    return ChunkRun.FAILED


def _step(conf: Settings, claimed: ClaimedChunk, result: SendResult, seconds: float) -> Step | None:
    for attempt in range(STEP_TRIES):
        try:
            return _step_once(conf, claimed, result, seconds)
        except IntegrityError:  # another step or move of the batch took the same new seq numbers
            if attempt == STEP_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _step_once(conf: Settings, claimed: ClaimedChunk, result: SendResult, seconds: float) -> Step | None:
    """One narrowing step in one transaction; None when the chunk is no longer this claim's."""
    now, most = utcnow(), conf.narrow_max_calls
    with session_scope(conf.database_url) as session:
        refused = ledger.refused_chunk(session, claimed)
        if refused is None:
            return None  # the relay made it unknown meanwhile: the caller records the late answer
        known = {m for _, m in refused.numbers} & (set(result.failed_numbers) | refused.blocked)
        split = split_refused(refused.numbers, known)
        parts, left = split.parts, []
        calls = ledger.spend_calls(session, refused.root, len(parts), most) if parts else None
        if parts and calls is None:  # the cap is reached: the rest fails with the code, as before narrowing
            parts, left = [], [number for part in split.parts for number in part]
        if calls is None:
            calls = ledger.spent_calls(session, refused.root)
        ledger.count_call(session, claimed.account, result.outcome.value, seconds, now)
        offenders = [mobile for _, mobile in split.offenders]
        step = Step(len(refused.numbers), offenders, len(known), [len(p) for p in parts], calls, len(left))
        new = ledger.narrow(
            session,
            claimed,
            result,
            refused,
            failed=[rid for rid, _ in split.offenders + left],
            parts=[[rid for rid, _ in part] for part in parts],
            detail=f"{result.message or refusal(result)}; refused whole: {describe(step, result, most)}",
            now=now,
        )
        if new is None:
            session.rollback()
            return None
        block_refused(session, claimed.account, offenders, f"refused by the vendor: {refusal(result)}")
    return dataclasses.replace(step, new_chunks=tuple(new))


def refusal(result: SendResult) -> str:
    """``-11 屏蔽手機號碼 (blocked number)``: the vendor's code and words."""
    return " ".join(part for part in (result.code, result.message) if part) or result.outcome.value


def describe(step: Step, result: SendResult, most: int) -> str:
    """``500 numbers: 2 new chunks of 250+250 (narrowing: 2 of at most 100 extra calls)``."""
    said = []
    if step.offenders:
        known = f" ({step.known} named by the vendor or on the blocked list)" if step.known else ""
        said.append(f"{len(step.offenders)} failed as its cause and blocked{known}")
    if step.parts:
        said.append(f"{len(step.parts)} new chunk(s) of {'+'.join(map(str, step.parts))}")
    if step.left:
        said.append(f"the cap is reached: the {step.left} numbers left fail with {result.code or 'its code'}")
    numbers = f"{step.numbers} number{'s' if step.numbers != 1 else ''}"
    return f"{numbers}: {'; '.join(said)} (narrowing: {step.calls} of at most {most} extra calls)"

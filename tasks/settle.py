"""Operators settle what smsq refuses to guess: chunks left ``unknown`` (the vendor
may or may not have accepted them) and chunks that ``failed``.

``accepted``  the vendor did take it (its console says so): recipients become sent
``failed``    it did not, and should not go out: recipients become failed
``resend``    it did not, and should: the chunk is pending again and the relay
              publishes it. Only an operator may decide this for an unknown chunk.
              Its numbers' sends so far move to ``earlier_sends`` first, so a
              number's history keeps both sends, each with its vendor id and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from smsq.store import ledger
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Batch, Chunk
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from .publish import publish_chunk, publish_chunks
from .schema import ensure_schema

ACTIONS = ("accepted", "failed", "resend")
SETTLE_STATES = (ChunkState.UNKNOWN, ChunkState.FAILED)


def problem_chunks(batch_id: int) -> list[dict]:
    """A batch's chunks that need an operator: unknown and failed ones, with why."""
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url, readonly=True) as session:
        rows = (
            session.execute(
                select(Chunk).where(Chunk.batch_id == batch_id, Chunk.state.in_(SETTLE_STATES)).order_by(Chunk.seq)
            )
            .scalars()
            .all()
        )
        return [
            {
                "chunk_id": c.id,
                "seq": c.seq,
                "size": c.size,
                "state": c.state,
                "outcome": c.outcome,
                "code": c.code,
                "detail": c.detail,
                "attempts": c.attempts,
            }
            for c in rows
        ]


def _allowed(action: str) -> tuple[str, ...]:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    return (ChunkState.UNKNOWN,) if action == "accepted" else SETTLE_STATES


def _why(action: str, note: str) -> str:
    return f"settled by an operator: {action}" + (f" ({note})" if note else "")


def settle(chunk_id: int, action: str, note: str = "") -> str:
    """Apply an operator's decision to an unknown or failed chunk; return what was done."""
    allowed = _allowed(action)
    conf = settings()
    ensure_schema(conf)
    why = _why(action, note)
    with session_scope(conf.database_url) as session:
        chunk = session.get(Chunk, chunk_id)
        if chunk is None:
            raise LookupError(f"no chunk {chunk_id}")
        if chunk.state not in allowed:
            raise ValueError(
                f"chunk {chunk_id} is {chunk.state}; only {' or '.join(allowed)} chunks can be settled as {action}"
            )
        # The state condition again: a report settling the chunk meanwhile wins.
        ledger.settle(session, chunk.batch_id, chunk.state, action, why, chunk_id=chunk_id)
        lane, batch_id, account = chunk.lane, chunk.batch_id, chunk.account
    if action == "resend":
        publish_chunk(chunk_id, lane, batch_id=batch_id, account=account)
    return why


@dataclass(frozen=True)
class BatchSettlement:
    batch_id: int
    state: str  # the chunks that were settled were in this state
    action: str
    chunks: int
    numbers: int
    detail: str

    def as_dict(self) -> dict:
        return {
            "batch_id": self.batch_id,
            "state": self.state,
            "action": self.action,
            "chunks": self.chunks,
            "numbers": self.numbers,
            "detail": self.detail,
        }


def settle_batch(batch_id: int, state: str, action: str, note: str = "") -> BatchSettlement:
    """Settle every chunk of a batch that is in ``state`` (unknown or failed) at once,
    with the same meaning as ``settle`` for each. Raises LookupError for an unknown
    batch, ValueError for an action the state does not allow."""
    allowed = _allowed(action)
    if state not in allowed:
        raise ValueError(
            f"{state!r} chunks cannot be settled as {action}; {action} settles {' or '.join(allowed)} chunks"
        )
    conf = settings()
    ensure_schema(conf)
    why = _why(action, note)
    with session_scope(conf.database_url) as session:
        if session.get(Batch, batch_id) is None:
            raise LookupError(f"no batch {batch_id}")
        ids, numbers = ledger.settle(session, batch_id, state, action, why)
    if action == "resend" and ids:
        publish_chunks(conf, batch_id)
    return BatchSettlement(batch_id, state, action, len(ids), numbers, why)

"""Operators settle what smsq refuses to guess: chunks left ``unknown`` (the vendor
may or may not have accepted them) and chunks that ``failed``.

``accepted``  the vendor did take it (its console says so): recipients become sent
``failed``    it did not, and should not go out: recipients become failed
``resend``    it did not, and should: the chunk is pending again and the relay
              publishes it. Only an operator may decide this for an unknown chunk.
"""
from __future__ import annotations

from sqlalchemy import select, update

from smsq.store.models import Chunk, Recipient, utcnow
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from .publish import publish_chunk
from .schema import ensure_schema

ACTIONS = ("accepted", "failed", "resend")


def problem_chunks(batch_id: int) -> list[dict]:
    """A batch's chunks that need an operator: unknown and failed ones, with why."""
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url, readonly=True) as session:
        rows = session.execute(select(Chunk).where(Chunk.batch_id == batch_id, Chunk.state.in_(("unknown", "failed")))
                               .order_by(Chunk.seq)).scalars().all()
        return [{"chunk_id": c.id, "seq": c.seq, "size": c.size, "state": c.state, "outcome": c.outcome,
                 "code": c.code, "detail": c.detail, "attempts": c.attempts} for c in rows]


def settle(chunk_id: int, action: str, note: str = "") -> str:
    """Apply an operator's decision to an unknown or failed chunk; return what was done."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    conf = settings()
    ensure_schema(conf)
    now = utcnow()
    why = f"settled by an operator: {action}" + (f" ({note})" if note else "")
    with session_scope(conf.database_url) as session:
        chunk = session.get(Chunk, chunk_id)
        if chunk is None:
            raise LookupError(f"no chunk {chunk_id}")
        allowed = ("unknown",) if action == "accepted" else ("unknown", "failed")
        if chunk.state not in allowed:
            raise ValueError(f"chunk {chunk_id} is {chunk.state}; only {' or '.join(allowed)} chunks can be "
                             f"settled as {action}")
        recipients = update(Recipient).where(Recipient.batch_id == chunk.batch_id, Recipient.chunk_seq == chunk.seq,
                                             Recipient.state.in_(("unknown", "failed", "queued")))
        if action == "resend":
            chunk.state, chunk.next_attempt_at, chunk.queued_at, chunk.finished_at = "pending", None, now, None
            chunk.detail = why
            session.execute(recipients.values(state="queued", code=None, detail=None, updated_at=now))
        else:
            chunk.state, chunk.finished_at, chunk.detail = action, now, why
            session.execute(recipients.values(state="sent" if action == "accepted" else "failed",
                                              detail=why[:255], updated_at=now))
        lane, batch_id, account = chunk.lane, chunk.batch_id, chunk.account
    if action == "resend":
        publish_chunk(chunk_id, lane, batch_id=batch_id, account=account)
    return why

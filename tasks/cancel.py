"""Cancelling a batch: its chunks still waiting are never sent.

A chunk is cancelled only by the conditional update ``pending -> cancelled``,
the mirror of ``send_chunk``'s claim ``pending -> sending``: whichever commits
first wins the row, so a chunk is either cancelled or sent, never both. What
was already sending or had an outcome cannot be called back; it is reported.

The batch keeps ``cancelled_at``: a chunk that was sending when the batch was
cancelled and comes back to ``pending`` for a retry is refused by the claim and
cancelled by the relay's next pass (``cancel_stragglers``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from smsq.store.ledger import cancel_pending
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Batch, Chunk, utcnow
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from .schema import ensure_schema


@dataclass(frozen=True)
class CancelResult:
    batch_id: int
    cancelled_chunks: int  # pending chunks that will never be sent
    cancelled_numbers: int
    sending_chunks: int  # in the vendor's hands right now: they may still go out
    sending_numbers: int
    done: dict[str, int]  # chunks that already had an outcome, by state (cancelled earlier included)

    def as_dict(self) -> dict:
        return {
            "batch_id": self.batch_id,
            "cancelled_chunks": self.cancelled_chunks,
            "cancelled_numbers": self.cancelled_numbers,
            "sending_chunks": self.sending_chunks,
            "sending_numbers": self.sending_numbers,
            "done": self.done,
        }


CATCH_UP = 5  # counts of a batch's chunks, each cancelling what came back to pending meanwhile


def cancel_batch(batch_id: int) -> CancelResult:
    """Cancel what of the batch is still pending; report what was sending or done.
    Raises LookupError for an unknown batch. Cancelling twice cancels nothing more."""
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"no batch {batch_id}")
        if batch.cancelled_at is None:
            batch.cancelled_at = utcnow()
            session.flush()
        chunks, numbers = cancel_pending(session, [batch_id])
        for _ in range(CATCH_UP):
            by_state = {
                state: (count, size)
                for state, count, size in session.execute(
                    select(Chunk.state, func.count(), func.coalesce(func.sum(Chunk.size), 0))
                    .where(Chunk.batch_id == batch_id)
                    .group_by(Chunk.state)
                ).all()
            }
            if ChunkState.PENDING not in by_state:
                break
            # A chunk that was sending when the update ran has come back to pending since
            # (a busy vendor: it waits for its retry), committed by its worker: cancel it too.
            more, more_numbers = cancel_pending(session, [batch_id])
            chunks, numbers = chunks + more, numbers + more_numbers
    sending, sending_numbers = by_state.pop(ChunkState.SENDING, (0, 0))
    coming_back = by_state.pop(
        ChunkState.PENDING, (0, 0)
    )  # still returning after CATCH_UP tries: the relay cancels them
    sending, sending_numbers = sending + coming_back[0], sending_numbers + coming_back[1]
    done = {state: count for state, (count, _) in sorted(by_state.items())}
    if chunks:
        done[ChunkState.CANCELLED] -= chunks  # "done" is what had an outcome before this call
        if not done[ChunkState.CANCELLED]:
            del done[ChunkState.CANCELLED]
    return CancelResult(batch_id, chunks, numbers, sending, int(sending_numbers), done)


def cancel_stragglers(session: Session) -> int:
    """Relay: cancel chunks back in ``pending`` whose batch was cancelled meanwhile."""
    chunks, _ = cancel_pending(session, select(Batch.id).where(Batch.cancelled_at.is_not(None)))
    return chunks


__all__ = ["cancel_batch", "CancelResult"]

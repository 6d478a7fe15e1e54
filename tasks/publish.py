"""Publishing chunk tasks. Messages carry the chunk id and nothing else:
no numbers, no content, no credentials (Flower, logs and the broker show them).
What Flower shows as the task's arguments (``argsrepr``) also names the batch
and the account, so an operator can tell the rows apart; those are ids and
configured names, never secrets."""
from __future__ import annotations

import logging
from typing import Iterable

from sqlalchemy import select, update

from smsq.store.models import Chunk
from smsq.worker.app import get_app
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

log = logging.getLogger("smsq.publish")

SEND_CHUNK = "smsq.send_chunk"
# The longest broker countdown smsq ever asks for. A Redis broker redelivers an
# unacked delayed message after its visibility timeout (an hour here), so long
# waits (schedules, rate-limit intervals) live in the database and the relay
# releases them; a countdown is only for short backoffs and poll windows.
MAX_COUNTDOWN = 60.0


def bounded(countdown: float | None) -> float | None:
    if countdown is not None and not 0 <= countdown <= MAX_COUNTDOWN:
        raise ValueError(f"countdown {countdown!r} s: waits over {MAX_COUNTDOWN:.0f} s belong to the relay")
    return countdown


def chunk_label(chunk_id: int, batch_id: int | None = None, account: str | None = None) -> str:
    """``chunk 12 (batch 3, shop-dxt)``: how a chunk is named in Flower and in task errors."""
    about = ([f"batch {batch_id}"] if batch_id is not None else []) + ([account] if account else [])
    return f"chunk {chunk_id}" + (f" ({', '.join(about)})" if about else "")


def publish_chunk(chunk_id: int, lane: str, *, batch_id: int | None = None, account: str | None = None,
                  countdown: float | None = None, producer=None) -> None:
    get_app().send_task(SEND_CHUNK, args=[chunk_id], queue=f"smsq.{lane}", countdown=bounded(countdown),
                        argsrepr=chunk_label(chunk_id, batch_id, account), kwargsrepr="{}",
                        producer=producer)


def publish_chunks(conf: Settings, batch_id: int, chunk_ids: Iterable[int] | None = None) -> int:
    """Publish every chunk of a freshly committed batch (or only ``chunk_ids``: new chunks
    of a failover move). On a broker failure the unpublished chunks are marked unqueued
    so the relay publishes them at once."""
    with session_scope(conf.database_url) as session:
        query = select(Chunk.id, Chunk.lane, Chunk.account).where(
            Chunk.batch_id == batch_id, Chunk.state == "pending", Chunk.queued_at.is_not(None))
        if chunk_ids is not None:
            query = query.where(Chunk.id.in_(list(chunk_ids)))
        rows = session.execute(query.order_by(Chunk.seq)).all()
    done = 0
    try:
        # One producer (one broker connection) for the whole batch.
        with get_app().producer_or_acquire() as producer:
            for chunk_id, lane, account in rows:
                publish_chunk(chunk_id, lane, batch_id=batch_id, account=account, producer=producer)
                done += 1
    except Exception:
        log.exception("batch %s: publishing stopped after %s of %s chunks; the relay will publish "
                      "the rest", batch_id, done, len(rows))
        rest = [chunk_id for chunk_id, _, _ in rows[done:]]
        with session_scope(conf.database_url) as session:
            for start in range(0, len(rest), 1000):
                session.execute(update(Chunk).where(Chunk.id.in_(rest[start:start + 1000]))
                                .values(queued_at=None))
    return done

"""Why a batch is not moving: what ``smsq send --wait`` says when nothing changes.

A batch waits for one of a few reasons, and each has its own cure:

* it is **scheduled** (``send_at``) and the relay releases it then;
* it **waits for its send window** (a kind's ``send_window``, tasks/policy.py) and the
  relay releases it when the window opens;
* its account is **held** after an auth or balance failure (see tasks/send.py);
* some chunks **wait for a retry** after a transient failure, or for an account
  the worker does not know (tasks/unknown_account.py): the detail of the next
  one due says which;
* **no worker takes its lane's queue**: nothing consumes ``smsq.priority`` or
  ``smsq.bulk`` (no ``smsq worker`` running, or one started with another
  ``SMSQ_CONFIG``/``SMSQ_HOME`` and so another database and broker).

The first three are read from the database. The last is asked of the
workers themselves where the broker carries broadcasts (Redis, RabbitMQ);
kombu's SQLite transport does not, so there a queue whose messages sit
untouched while nothing is ``sending`` is what tells.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from smsq.providers.base import BEIJING
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Batch, Chunk, SplitChunk, utcnow
from smsq.worker.app import get_app
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope

from . import circuit
from .policy import batch_window, window_detail, window_wait
from .schema import ensure_schema


def _clock(value: datetime) -> str:
    return value.replace(tzinfo=UTC).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def lane_consumers(conf: Settings, queue: str) -> list[str] | None:
    """The workers consuming ``queue``, or None where the broker cannot tell (SQLite)."""
    if conf.embedded:
        return None
    replies = get_app().control.inspect(timeout=1.0).active_queues() or {}
    return sorted(worker for worker, queues in replies.items() if any(q.get("name") == queue for q in queues))


def queue_length(queue: str) -> int | None:
    """Messages waiting in a broker queue (any transport kombu knows), None if it cannot be read."""
    try:
        with get_app().connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:  # a queue nobody declared yet, or a broker that does not say
        return None


def why_waiting(batch_id: int, *, stalled_for: float = 0.0, ask_workers: bool = True) -> list[str]:
    """Plain sentences on why the batch's unfinished chunks are not moving (empty: nothing to say).
    ``stalled_for``: seconds the caller has seen no change, so a queue that is merely busy is
    not called unconsumed. ``ask_workers``: False reads the database only (no broadcast)."""
    conf = settings()
    ensure_schema(conf)
    now = utcnow()
    reasons: list[str] = []
    with session_scope(conf.database_url, readonly=True) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"no batch {batch_id}")
        counts = dict(
            session.execute(
                select(Chunk.state, func.count()).where(Chunk.batch_id == batch_id).group_by(Chunk.state)
            ).all()
        )
        retrying, next_retry, next_detail = _retries_later(session, batch_id, now)
        to_split = session.scalar(select(func.count()).where(SplitChunk.batch_id == batch_id))
    pending, sending = counts.get(ChunkState.PENDING, 0), counts.get(ChunkState.SENDING, 0)
    if to_split and stalled_for >= 5:
        reasons.append(
            f"{to_split} chunk(s) are still to be cut from the stored numbers by a worker on "
            f"smsq.{batch.lane} (the split job; the relay publishes it again if it was lost)"
        )
    if not pending and not sending:
        return reasons
    if batch.send_at is not None and batch.send_at > now and retrying:
        reasons.append(f"scheduled: the relay releases it at {_clock(batch.send_at)} (Beijing time)")
    opening = window_wait(conf, batch, bool(pending) and batch.cancelled_at is None, now)
    if opening is not None:
        window = batch_window(conf, batch)
        reasons.append(f"{window_detail(window, opening, now)}: the relay releases its chunks then")
    held = circuit.held_until(conf, batch.account)
    if held is not None:
        until, why = held
        reasons.append(
            f"account {batch.account} is held until {_clock(until)} (Beijing time): its circuit "
            f"is open ({why}); fix the account, then its chunks go out"
        )
    elif next_retry is not None and opening is None and not (batch.send_at is not None and batch.send_at > now):
        reasons.append(
            f"{retrying} chunk(s) wait to retry, the next at {_clock(next_retry)} (Beijing time)"
            + (f": {next_detail}" if next_detail else "")
        )
    due = pending - retrying
    if due and not sending and ask_workers:
        reasons.extend(_unconsumed(conf, f"smsq.{batch.lane}", stalled_for))
    return reasons


def _retries_later(session: Session, batch_id: int, now: datetime) -> tuple[int, datetime | None, str | None]:
    """How many chunks wait to retry after ``now``, the earliest retry's time and the detail
    that chunk's last attempt left (None, None when no chunk waits)."""
    waiting = (Chunk.batch_id == batch_id, Chunk.state == ChunkState.PENDING, Chunk.next_attempt_at > now)
    count, first = session.execute(select(func.count(), func.min(Chunk.next_attempt_at)).where(*waiting)).one()
    if not count:
        return 0, None, None
    detail = session.scalar(select(Chunk.detail).where(*waiting).order_by(Chunk.next_attempt_at).limit(1))
    return count, first, detail


def _unconsumed(conf: Settings, queue: str, stalled_for: float) -> list[str]:
    """A sentence when no worker takes ``queue``: none consumes it, or (the workers not
    answering) its messages lie untouched after ``stalled_for`` seconds without change."""
    consumers = lane_consumers(conf, queue)
    if consumers == []:
        return [
            f"no worker consumes {queue}: start one with `smsq worker` (same SMSQ_CONFIG and database as this command)"
        ]
    if consumers is None and stalled_for >= 5:
        waiting = queue_length(queue)
        if waiting:
            return [
                f"no worker seems to take {queue}: {waiting} message(s) untouched for "
                f"{stalled_for:.0f}s; is `smsq worker` running with this SMSQ_CONFIG "
                f"({conf.config_path})?"
            ]
    return []

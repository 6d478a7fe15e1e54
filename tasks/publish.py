"""Publishing tasks: chunk tasks and split jobs. A chunk's message carries the chunk
id and the names of its account and lane (so that a worker can ask the account's
rate limiter before it touches the database, and give a chunk back to its own
queue); a split job's carries the batch id: no numbers, no content, no
credentials (Flower, logs and the broker show them). A campaign's chunks (a
batch of ``GROUP_FROM`` chunks or more) go out in groups: one message names up
to ``GROUP_SIZE`` chunks of the batch (``then``), which a worker sends one after
another (tasks/send.py); the broker's delivery, ack and publish are then paid
once per group, not per chunk. What Flower shows as the
task's arguments (``argsrepr``) also names the batch and the account, so an
operator can tell the rows apart; those are ids and configured names, never
secrets.

Every publish here follows a commit (the outbox), so a broker that fails or
hangs must not hold the caller: ``outbox_producer`` publishes on connections
of its own with connect and socket timeouts and a short retry policy. What
could not be published is marked for the relay, which publishes it once the
broker answers again; the database already holds it, so nothing is lost.
Those connections are kept in a pool per process (``OUTBOX_CONNECTIONS``): a
new connection for each ``send_sms`` cost 20 ms of the caller's CPU (two Redis
sockets, a queue declaration, redis-py reading its own version from the
installed package's metadata), the larger part of an OTP's intake.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import select, update

from smsq.store import ledger
from smsq.store.lifecycle import ChunkState
from smsq.store.models import Chunk, SplitJob
from smsq.worker.app import get_app
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

log = logging.getLogger("smsq.publish")

SEND_CHUNK = "smsq.send_chunk"
SPLIT_BATCH = "smsq.split_batch"
# A publish gives up after about BROKER_TIMEOUT * (retries + 1) seconds, whatever the
# broker does: refuses (at once), or accepts the connection and never answers (a
# socket timeout per attempt). Celery's default policy has no socket timeout at all.
BROKER_TIMEOUT = 3.0
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# The longest broker countdown smsq ever asks for. A Redis broker redelivers an
# unacked delayed message after its visibility timeout (an hour here), so long
# waits (schedules, rate-limit intervals) live in the database and the relay
# releases them; a countdown is only for short backoffs and poll windows.
MAX_COUNTDOWN = 60.0
# Chunks of a campaign carried by one message. At a quick vendor a group is sent
# in a few tens of milliseconds; at a slow one the worker hands the rest of the
# group on to idle slots after the first slow call (tasks/send.py). OTPs (the
# priority lane) go one per message.
GROUP_SIZE = 10
# Batches of fewer chunks than this go a chunk per message: all of them at once
# on as many slots is what makes a small batch quick at a slow vendor.
GROUP_FROM = 100


def bounded(countdown: float | None) -> float | None:
    if countdown is not None and not 0 <= countdown <= MAX_COUNTDOWN:
        raise ValueError(f"countdown {countdown!r} s: waits over {MAX_COUNTDOWN:.0f} s belong to the relay")
    return countdown


def chunk_label(
    chunk_id: int, batch_id: int | None = None, account: str | None = None, then: list[int] | None = None
) -> str:
    """``chunk 12 (batch 3, shop-dxt)``, or for a group ``chunks 12-21 (batch 3, shop-dxt)``:
    how a chunk is named in Flower and in task errors."""
    about = ([f"batch {batch_id}"] if batch_id is not None else []) + ([account] if account else [])
    named = f"chunk {chunk_id}"
    if then:
        consecutive = then == list(range(chunk_id + 1, chunk_id + 1 + len(then)))
        named = f"chunks {chunk_id}-{then[-1]}" if consecutive else f"chunks {chunk_id} and {len(then)} more"
    return named + (f" ({', '.join(about)})" if about else "")


# Outbox connections kept per process: as many callers (threads) publish at once;
# one more waits for a free connection for up to BROKER_TIMEOUT.
OUTBOX_CONNECTIONS = 16
_pools: dict = {}  # (process id, app, broker URL) -> kombu ConnectionPool
_pools_lock = threading.Lock()


def _outbox_pool(conf: Settings):
    app = get_app()
    # Keyed by the process id: a forked child (a web server's worker, a prefork
    # child) never uses its parent's sockets.
    key = (os.getpid(), id(app), conf.broker_url)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            options: dict = {}
            if not conf.embedded:
                # (The embedded SQLAlchemy transport hands its options to create_engine: none there.)
                options = {
                    "connect_timeout": BROKER_TIMEOUT,
                    "transport_options": {"socket_timeout": BROKER_TIMEOUT, "socket_connect_timeout": BROKER_TIMEOUT},
                }
            pool = _pools[key] = app.connection_for_write(**options).Pool(limit=OUTBOX_CONNECTIONS)
    return pool


@contextmanager
def outbox_producer(conf: Settings) -> Iterator:
    """A producer on a pooled connection whose every wait is bounded (see above). A
    connection that saw an error is closed, not handed to the next caller: kombu
    reconnects a broken one on the next publish, but only after a failed attempt."""
    app = get_app()
    pool = _outbox_pool(conf)
    connection = pool.acquire(block=True, timeout=BROKER_TIMEOUT)
    try:
        yield app.amqp.Producer(connection)
    except BaseException:
        try:
            pool.replace(connection)
        except Exception:  # closing a broken connection: nothing more to do with it
            log.debug("closing a failed outbox connection", exc_info=True)
        raise
    connection.release()


def publish_chunk(
    chunk_id: int,
    lane: str,
    *,
    batch_id: int | None = None,
    account: str | None = None,
    countdown: float | None = None,
    producer=None,
    label: str | None = None,
    booking: str | None = None,
    then: list[int] | None = None,
) -> None:
    """``label``: what Flower shows (default ``chunk_label(...)``); a chunk given back to the
    queue keeps the one it came with. ``booking``: the ticket of the rate-limit slot booked
    for the chunk (an OTP's), redeemed when it comes back. ``then``: the ids of the chunks
    of the same batch and account sent after it by the same message (a group)."""
    kwargs: dict = {"account": account, "lane": lane} if account else {}
    if account and booking:
        kwargs["booking"] = booking
    if account and then:
        kwargs["then"] = list(then)
    get_app().send_task(
        SEND_CHUNK,
        args=[chunk_id],
        kwargs=kwargs,
        queue=f"smsq.{lane}",
        countdown=bounded(countdown),
        argsrepr=label or chunk_label(chunk_id, batch_id, account, kwargs.get("then")),
        kwargsrepr=repr(kwargs),
        producer=producer,
        retry_policy=PUBLISH_RETRY,
    )


def publish_split(conf: Settings, batch_id: int, lane: str, account: str) -> bool:
    """Publish the split job of a committed batch. False: the broker did not take it, and
    the job is marked for the relay's next pass."""
    try:
        with outbox_producer(conf) as producer:
            get_app().send_task(
                SPLIT_BATCH,
                args=[batch_id],
                queue=f"smsq.{lane}",
                argsrepr=f"batch {batch_id} ({account})",
                kwargsrepr="{}",
                producer=producer,
                retry_policy=PUBLISH_RETRY,
            )
        return True
    except Exception as exc:
        log.warning("batch %s: the broker did not take the split job (%s); the relay will publish it", batch_id, exc)
    with session_scope(conf.database_url) as session:
        session.execute(update(SplitJob).where(SplitJob.batch_id == batch_id).values(queued_at=None))
    return False


def publish_chunks(conf: Settings, batch_id: int, chunk_ids: Iterable[int] | None = None) -> int:
    """Publish every queued pending chunk of a freshly committed batch (or only ``chunk_ids``:
    the new chunks of a failover move); see publish_chunk_rows."""
    with session_scope(conf.database_url) as session:
        query = select(Chunk.id, Chunk.lane, Chunk.account).where(
            Chunk.batch_id == batch_id, Chunk.state == ChunkState.PENDING, Chunk.queued_at.is_not(None)
        )
        if chunk_ids is not None:
            query = query.where(Chunk.id.in_(list(chunk_ids)))
        rows = session.execute(query.order_by(Chunk.seq)).all()
    return publish_chunk_rows(conf, batch_id, rows)


def groups(rows, size: int) -> Iterator[list[tuple[int, str, str]]]:
    """``(chunk id, lane, account)`` rows in publishing order, cut into the runs one message
    carries: up to ``size`` bulk chunks of one account; a priority chunk alone."""
    run: list = []
    for row in rows:
        if run and (len(run) >= size or row[1] != "bulk" or run[0][1:] != tuple(row[1:])):
            yield run
            run = []
        run.append(tuple(row))
    if run:
        yield run


def publish_chunk_rows(conf: Settings, batch_id: int | None, rows, group_size: int = 1) -> int:
    """Publish ``(chunk id, lane, account)`` rows over one connection, in groups of up to
    ``group_size`` (1: a message each); return how many chunks went. On a broker failure
    the unpublished chunks are marked unqueued so the relay publishes them at its next pass."""
    done = 0
    try:
        with outbox_producer(conf) as producer:
            for run in groups(rows, group_size):
                chunk_id, lane, account = run[0]
                publish_chunk(
                    chunk_id,
                    lane,
                    batch_id=batch_id,
                    account=account,
                    producer=producer,
                    then=[row[0] for row in run[1:]],
                )
                done += len(run)
    except Exception as exc:
        log.warning(
            "batch %s: publishing stopped after %s of %s chunks (%s); the relay will publish the rest",
            batch_id,
            done,
            len(rows),
            exc,
        )
        rest = [chunk_id for chunk_id, _, _ in rows[done:]]
        with session_scope(conf.database_url) as session:
            ledger.unqueue(session, rest, pending_only=False)
    return done

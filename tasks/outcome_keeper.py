"""What the vendor said is never lost to a database outage.

A vendor's answer arrives after the call; if the database cannot take it then,
``keep_outcome`` retries for ``SMSQ_DB_RETRY_FOR`` seconds (tenacity), and if
the outage outlasts that, appends the answer to the worker's local spool
(worker/spool.py), fsynced. Every worker replays the spool at start-up and
every ``SMSQ_SPOOL_REPLAY_INTERVAL`` seconds while it runs, so the answer is
recorded once the database is back: a chunk the vendor accepted ends
``accepted``, not ``unknown``.

A spooled line carries what ``record()`` needs and no more: chunk and attempt,
the recipients' ids (the numbers are in the database), the vendor's result
with failed numbers keyed by recipient id. Never content, numbers or
credentials. Replaying is idempotent: ``record()`` applies only to a chunk
still ``sending`` (or ``unknown``, which the relay makes of a chunk whose
answer is late) with the same attempt.
"""

from __future__ import annotations

import logging
import threading
import time

from celery.signals import worker_ready
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential, wait_random

from smsq.providers import Outcome, SendResult
from smsq.store.ledger import FIRST_ATTEMPT, ClaimedChunk
from smsq.store.models import Chunk, Recipient, utcnow
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope
from smsq.worker.guest import sent_by_smsq
from smsq.worker.spool import Spool

from .decisions import Decision
from .outcomes import ChunkRun, after_record, decided, record

log = logging.getLogger("smsq.spool")


def is_db_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (as opposed to a bug)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))


def with_db_retry(conf: Settings, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, tried again through a database outage for ``SMSQ_DB_RETRY_FOR`` seconds
    (the first time at once: a connection broken since its last use is replaced by then)."""
    try:  # the common case, without building the retry machinery for every chunk
        return fn(*args, **kwargs)
    except Exception as exc:
        if not is_db_outage(exc):
            raise
        _trying_again(fn, exc)
    retrying = Retrying(
        stop=stop_after_delay(conf.db_retry_for),
        wait=wait_exponential(multiplier=0.5, max=5) + wait_random(0, 0.5),
        retry=retry_if_exception(is_db_outage),
        reraise=True,
        before_sleep=lambda state: _trying_again(fn, _failure(state)),
    )
    return retrying(fn, *args, **kwargs)


def _failure(state: RetryCallState) -> BaseException | None:
    """The exception of the attempt that failed before this wait."""
    return state.outcome.exception() if state.outcome is not None else None


def _trying_again(fn, exc: BaseException | None) -> None:
    log.warning("%s: database unavailable (%s); trying again", getattr(fn, "__name__", fn), type(exc).__name__)


def keep_outcome(
    conf: Settings, claimed: ClaimedChunk, result: SendResult, decision: Decision, call_seconds: float | None
):
    """``record()`` through a database outage; past the retries, into the spool (the answer;
    its meaning is decided again when it is recorded). Returns what record returns, or
    (ChunkRun.SPOOLED, None)."""
    try:
        return with_db_retry(conf, record, conf, claimed, result, decision, call_seconds=call_seconds)
    except Exception as exc:
        if not is_db_outage(exc):
            raise
        path = spool_of(conf).append(spool_entry(claimed, result, call_seconds))
        log.error(
            "chunk %s: the database is unavailable (%s); the vendor's answer (%s) is kept in %s "
            "and recorded when it is back",
            claimed.chunk_id,
            type(exc).__name__,
            result.outcome.value,
            path,
        )
        return ChunkRun.SPOOLED, None


def spool_of(conf: Settings) -> Spool:
    return Spool(conf.spool_dir or (conf.home or conf.config_path.parent) / "spool")


def spool_entry(claimed: ClaimedChunk, result: SendResult, call_seconds: float | None) -> dict:
    rid_of = {mobile: rid for rid, mobile in claimed.recipients}
    return {
        "chunk_id": claimed.chunk_id,
        "batch_id": claimed.batch_id,
        "seq": claimed.seq,
        "account": claimed.account,
        "lane": claimed.lane,
        "attempt": claimed.attempt,
        "recipient_ids": [rid for rid, _ in claimed.recipients],
        "call_seconds": call_seconds,
        "at": utcnow().isoformat(timespec="seconds"),
        "result": {
            "outcome": result.outcome.value,
            "code": result.code,
            "message": result.message,
            "vendor_ids": list(result.vendor_ids),
            "batch_ref": result.batch_ref,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "failed": {str(rid_of[m]): why for m, why in result.failed_numbers.items() if m in rid_of},
            "failed_codes": {str(rid_of[m]): code for m, code in result.failed_codes.items() if m in rid_of},
            "retry_after": result.retry_after,
            "raw": result.raw,
        },
    }


def apply_entry(conf: Settings, entry: dict) -> None:
    """Record one spooled answer (and what run_chunk does after recording)."""
    ids = entry["recipient_ids"]
    with session_scope(conf.database_url, readonly=True) as session:
        mobiles = dict(session.execute(select(Recipient.id, Recipient.mobile).where(Recipient.id.in_(ids))).all())
        first = session.execute(select(FIRST_ATTEMPT).where(Chunk.id == entry["chunk_id"])).scalar()
    claimed = ClaimedChunk(
        entry["chunk_id"],
        entry["batch_id"],
        entry["seq"],
        entry["account"],
        entry["lane"],
        entry["attempt"],
        "",
        None,
        utcnow(),
        [(rid, mobiles.get(rid, "")) for rid in ids],
        first,
    )
    spooled = dict(entry["result"])
    failed, codes = (
        {mobiles[int(rid)]: value for rid, value in spooled.pop(key, {}).items() if int(rid) in mobiles}
        for key in ("failed", "failed_codes")  # (failed_codes: not in a spool written before it was kept)
    )
    result = SendResult(Outcome(spooled.pop("outcome")), failed_numbers=failed, failed_codes=codes, **spooled)
    # decided now, as if the answer had come now: its retry budget may have run out meanwhile
    state, retry_in = record(
        conf, claimed, result, decided(conf, claimed, result), call_seconds=entry.get("call_seconds")
    )
    log.warning(
        "chunk %s: the vendor's answer of %s (%s) recorded from the spool: %s",
        claimed.chunk_id,
        entry.get("at"),
        result.outcome.value,
        state,
    )
    after_record(conf, claimed, result, retry_in)


def replay_spool(conf: Settings) -> tuple[int, int]:
    """Record what every spool file holds; returns (recorded, still waiting)."""
    spool = spool_of(conf)
    recorded = waiting = 0
    for path in spool.files():
        applied, left = spool.drain(path, lambda entry: apply_entry(conf, entry), is_db_outage)
        recorded, waiting = recorded + applied, waiting + left
    if recorded or waiting:
        log.info("spool: %s answers recorded, %s still waiting for the database", recorded, waiting)
    return recorded, waiting


def _replay_forever(conf: Settings) -> None:
    while True:
        try:
            replay_spool(conf)
        except Exception:  # the loop must outlive anything one pass meets
            log.exception("spool replay failed; trying again in %.0fs", conf.spool_replay_interval)
        time.sleep(conf.spool_replay_interval)


@worker_ready.connect
def _start_replayer(sender=None, **_: object) -> None:
    """In the worker's main process: replay now (answers a stopped worker left) and then periodically.
    Only in smsq's worker: an application's own worker that imports smsq is not one."""
    if not sent_by_smsq(sender):
        return
    threading.Thread(target=_replay_forever, args=(settings(),), name="smsq-spool-replay", daemon=True).start()

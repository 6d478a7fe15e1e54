"""How long a chunk that failed transiently waits, and when it stops trying.

Vendor outages of minutes are ordinary, so transient failures (connect
refused, HTTP 5xx, the vendor's "busy") are retried for a time budget,
``SMSQ_RETRY_FOR`` (an hour by default), counted from the chunk's first vendor
call; ``SMSQ_MAX_ATTEMPTS``, when set, caps the number of calls as well.

The waits grow 2, 4, 8 ... seconds up to ``SMSQ_RETRY_BACKOFF_MAX`` (5 minutes),
each jittered to between half and all of it, so chunks that failed together do
not come back together. The due time lives in the database
(``next_attempt_at``); a wait of at most a minute also rides a broker
countdown, a longer one is released by the relay.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from smsq.store.ledger import FIRST_ATTEMPT
from smsq.store.models import Chunk
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

LAST_TRY_MIN_WAIT = 1.0  # the final call of a budget still waits this long


def backoff(attempt: int, cap: float) -> float:
    """Between half and all of 2**attempt seconds, at most ``cap``."""
    ceiling = min(cap, 2.0 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class RetryPlan:
    wait: float | None  # seconds until the next call; None: the budget is spent
    why: str  # for the chunk's detail when giving up


def plan_retry(conf: Settings, chunk_id: int, attempt: int, now: datetime) -> RetryPlan:
    """After the ``attempt``-th call of a chunk failed transiently: wait how long, or give up."""
    with session_scope(conf.database_url, readonly=True) as session:
        first = session.execute(select(FIRST_ATTEMPT).where(Chunk.id == chunk_id)).scalar() or now
    spent = (now - first).total_seconds()
    left = conf.retry_for - spent
    gave_up = f"gave up after {attempt} attempts in {spent:.0f}s"
    if conf.max_attempts and attempt >= conf.max_attempts:
        return RetryPlan(None, f"{gave_up} (SMSQ_MAX_ATTEMPTS={conf.max_attempts})")
    if left <= 0:
        return RetryPlan(None, f"{gave_up} (SMSQ_RETRY_FOR={conf.retry_for:.0f}s)")
    # The last wait is cut to end at the budget's end: one more call right then.
    return RetryPlan(max(LAST_TRY_MIN_WAIT, min(backoff(attempt, conf.retry_backoff_max), left)), "")

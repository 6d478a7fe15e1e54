"""A worker process warms up before it takes its first task.

The first chunk a process sends paid for everything done once per process:
SQLAlchemy configuring its mappers and compiling the first statements, the
first database connection, the rate limiter's scripts loaded into Redis, the
accounts' HTTP clients built. Measured: the first OTP of a freshly started worker
took 1.0 s at an idle vendor of 200 ms, and 0.4-0.45 s of that in the first read
of the account's circuit when the worker started under a blast. Restarts and
deploys are routine, and the first OTP after one is as urgent as any.

``WarmUp`` is a worker bootstep: it runs after the pool starts and before the
consumer takes messages, so a worker that says "ready" is warm. Nothing here may
stop a worker from starting: a failure is one log line, and the first chunk
pays as before.
"""

from __future__ import annotations

import logging
import time

from celery import bootsteps
from sqlalchemy.orm import configure_mappers

from smsq.store.models import AccountCircuit
from smsq.tasks.account_health import send_flag
from smsq.tasks.schema import ensure_schema
from smsq.worker.clients import provider_for
from smsq.worker.config import settings
from smsq.worker.db import session_scope
from smsq.worker.limiter import RedisLimiter, limiter

log = logging.getLogger("smsq.worker")


def warm_up(conf) -> float:
    """Do the once-per-process work now; return how long it took."""
    started = time.monotonic()
    configure_mappers()
    ensure_schema(conf)
    # The reads every chunk's admission makes, compiled and run once: the account's
    # send flag (kept for a second, as any read of it is) and its circuit.
    with session_scope(conf.database_url, readonly=True) as session:
        for name in conf.accounts:
            session.get(AccountCircuit, name)
    for name in conf.accounts:
        send_flag(conf, name, fresh=True)
    for account in conf.accounts.values():
        provider_for(account)
    bucket = limiter(conf.redis_url)
    if isinstance(bucket, RedisLimiter):
        bucket.load_scripts()
    return time.monotonic() - started


class WarmUp(bootsteps.StartStopStep):
    label = "smsq warm-up"
    requires = ("celery.worker.components:Pool",)

    def start(self, worker) -> None:
        if getattr(worker, "pool_cls", None) is not None and "prefork" in str(worker.pool_cls).lower():
            return  # the children that send are forked already: this process's warmth is not theirs
        try:
            took = warm_up(settings())
        except Exception as exc:  # the first chunk pays instead
            log.warning("warm-up skipped (%s: %s); the first chunk does it", type(exc).__name__, exc)
        else:
            log.info("warm: database, accounts and rate limiter ready in %.2f s", took)

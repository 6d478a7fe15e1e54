"""smsq's Celery app as its worker and beat run it.

The runtime (worker/app.py) builds the app every process needs to send and
publish; this module completes each app it builds with what only smsq's own
worker and beat need: the relay timer and the warm-up as worker boot steps,
the beat schedule, and beat's lock in Redis. ``smsq.app``, ``celery -A smsq``
and the ``smsq`` command take the app from here, so a worker or a beat started
any of those ways has them all.
"""

from __future__ import annotations

from celery import Celery

from smsq.worker import config_probe  # noqa: F401  (the worker answers `smsq health worker` on its accounts file)
from smsq.worker.app import get_app, on_app_built
from smsq.worker.config import Settings

from .relay_timer import RelayTimer
from .schedule import beat_schedule
from .warm import WarmUp

__all__ = ["get_app"]

BEAT_LOOP_INTERVAL = 5.0  # seconds
BEAT_LOCK_TIMEOUT = 30  # seconds; well under a minute from a beat's crash to its standby's takeover


def run_by_worker_and_beat(app: Celery, conf: Settings) -> None:
    app.conf.beat_schedule = beat_schedule(conf)
    # Beat wakes at least this often: a standby tries the lock, the holder renews it.
    app.conf.beat_max_loop_interval = BEAT_LOOP_INTERVAL
    if not conf.embedded and conf.redis_url:
        # One beat at a time: redbeat holds a lock in Redis (a second beat waits). A
        # crashed beat's lock expires after this many seconds and a standby takes over.
        app.conf.redbeat_redis_url = conf.redis_url
        app.conf.redbeat_lock_timeout = BEAT_LOCK_TIMEOUT
        # A Redis that stopped answering must not hold beat for longer than a tick.
        app.conf.redbeat_redis_options = {"socket_timeout": 5, "socket_connect_timeout": 5}
    app.steps["worker"].add(WarmUp)
    app.steps["worker"].add(RelayTimer)


on_app_built(run_by_worker_and_beat)

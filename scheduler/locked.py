"""Beat's scheduler in distributed mode: celery-redbeat's, made to live through outages.

redbeat keeps the schedule and a lock in Redis, so only one beat schedules. As
shipped it blocks at start-up until it holds the lock, checks for a free lock
only every ``beat_max_loop_interval``, and lets any Redis error out of ``tick``,
which ends beat. This scheduler instead:

* tries the lock without blocking on every tick (every few seconds), so a standby
  takes over within a tick of a clean stop and within the lock timeout of a crash;
* schedules nothing while it does not hold the lock — the polls that every kind
  gets as beat starts included: they are made due in the schedule once this beat
  holds the lock, so a standby never sends them;
* keeps running when Redis or the broker cannot be reached: one log line when an
  outage starts, one when it ends; the lock is renewed, or taken again, when
  Redis answers. A Redis that came back empty has lost the lock and the schedule:
  the lock is taken again and the entries are written again from the config;
* says when the database cannot be reached (the relay and the polls it schedules
  fail in the workers meanwhile).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from redbeat.schedulers import RedBeatScheduler, get_redis
from redis.exceptions import LockError
from redis.lock import Lock

from smsq.worker.config import settings
from smsq.worker.db import probe
from smsq.worker.services import Outage, describe, safe_url, unreachable_kind

log = logging.getLogger("smsq.beat")

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)  # an entry that last ran then is due now
DATABASE_CHECK_EVERY = 15.0  # seconds between checks that the database answers
POLL_PREFIX = "smsq.poll_"


class LockedScheduler(RedBeatScheduler):
    #: tells schedule.poll_everything_at_start that the start-up polls are this class's job
    polls_on_lock = True
    # RedBeatScheduler's, which ships no types: its lock's Redis key, and the lock once held.
    lock_key: str | None
    lock: Lock | None

    def __init__(self, app, **kwargs):
        conf = settings()
        self._entries_written = False
        self._polls_made_due = False
        self._standby_said = False
        self._database_checked_at = float("-inf")
        self.redis_outage = Outage(
            log, f"Redis ({safe_url(conf.redis_url or conf.broker_url)})", "beat schedules nothing until it answers"
        )
        self.broker_outage = Outage(log, describe("broker", conf), "due tasks are skipped until it answers")
        self.database_outage = Outage(
            log, describe("database", conf), "beat goes on; the relay and polls fail in the workers until it answers"
        )
        super().__init__(app, **kwargs)
        # redbeat's own beat_init handler would block until the lock is free, and its
        # tick renews the lock unguarded: both only act when lock_key is set.
        self.held_lock_key, self.lock_key = self.lock_key, None

    @property
    def info(self):
        return (
            f"       . redis -> {safe_url(self.app.redbeat_conf.redis_url)}\n"
            f"       . lock -> `{self.held_lock_key}` {self.lock_timeout:.0f}s, tried every "
            f"{self.max_interval:.0f}s"
        )

    def setup_schedule(self):
        # Deferred: the entries are written by the beat that holds the lock, when it does.
        pass

    def tick(self, min=min, **kwargs):
        self._check_database()
        try:
            held = self._hold_lock()
            self.redis_outage.up()
            if not held:
                return self.max_interval
            if not self._entries_written:
                super().setup_schedule()
                self._entries_written = True
            if not self._polls_made_due:
                self._make_polls_due()
                self._polls_made_due = True
            return super().tick(min=min, **kwargs)
        except Exception as exc:
            if unreachable_kind(exc) is None:
                raise
            self.redis_outage.down(exc)
            return self.max_interval

    def _hold_lock(self) -> bool:
        if self.lock is not None:
            try:
                self.lock.reacquire()
                return True
            except LockError:
                log.warning(
                    "beat: lost the lock %s (it expired, or Redis restarted empty); taking it again if it is free",
                    self.held_lock_key,
                )
                self.lock, self._entries_written, self._standby_said = None, False, False
        lock = get_redis(self.app).lock(self.held_lock_key, timeout=self.lock_timeout, thread_local=False)
        if not lock.acquire(blocking=False):
            if not self._standby_said:
                log.info(
                    "beat: standby: another beat holds the lock %s; trying every %.0f s (it expires "
                    "%.0f s after its holder stops)",
                    self.held_lock_key,
                    self.max_interval,
                    self.lock_timeout,
                )
                self._standby_said = True
            return False
        self.lock = lock
        log.info("beat: acquired the lock %s; this beat schedules", self.held_lock_key)
        return True

    def _make_polls_due(self) -> None:
        """Every poll once, now: through the schedule, so exactly once, by the lock holder."""
        for name in self.app.redbeat_conf.schedule:
            if name.startswith(POLL_PREFIX):
                self._maybe_entry(name, self.app.redbeat_conf.schedule[name]).reschedule(LONG_AGO)
        log.info("beat: one poll of every account and kind is due now")

    def maybe_due(self, entry, **kwargs):
        is_due, next_time_to_run = entry.is_due()
        if is_due:
            log.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
            try:
                self.apply_async(entry, **kwargs)
            except Exception as exc:
                kind = unreachable_kind(exc)
                if kind is None:
                    log.exception("Scheduler: could not send %s", entry.name)
                elif kind == "broker":
                    self.broker_outage.down(exc)
                else:
                    raise  # Redis: the tick says so and tries again
            else:
                self.broker_outage.up()
        return next_time_to_run

    def _check_database(self) -> None:
        now = time.monotonic()
        if now - self._database_checked_at < DATABASE_CHECK_EVERY:
            return
        self._database_checked_at = now
        try:
            probe(settings().database_url)
        except Exception as exc:
            if unreachable_kind(exc) is None:
                raise
            self.database_outage.down(exc)
        else:
            self.database_outage.up()

    def close(self):
        try:
            super().close()
        except Exception as exc:
            if unreachable_kind(exc) is None and not isinstance(exc, LockError):
                raise
            log.warning(
                "beat: could not release the lock %s (%s); it expires by itself within %.0f s",
                self.held_lock_key,
                type(exc).__name__,
                self.lock_timeout,
            )

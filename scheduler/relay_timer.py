"""Every worker runs the outbox relay itself, every ``SMSQ_RELAY_INTERVAL`` seconds.

Beat sends the relay too, but beat is one process: while it is stopped, or
while no standby has taken its lock yet, chunks whose broker message was lost
would wait. The relay's lease in the database lets one pass through per
interval across all workers and beat, so running it everywhere costs one
conditional UPDATE per worker per interval.

The same thread reads the accounts file again when it changed on disk
(worker/config.py ``refresh``): one stat per interval, so that a changed
account's settings reach a running worker within an interval, and chunks that
waited for an account added to it go out at once (tasks/unknown_account.py).

A worker bootstep, started after the pool: a thread of the worker's main
process, stopped with the worker.
"""

from __future__ import annotations

import logging
import threading

from celery import bootsteps

from smsq.tasks.relay import relay_once
from smsq.tasks.unknown_account import wake
from smsq.worker.config import refresh, settings

log = logging.getLogger("smsq.relay")


class RelayTimer(bootsteps.StartStopStep):
    label = "smsq relay timer"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker):
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="smsq-relay-timer", daemon=True)
        self._thread.start()

    def stop(self, worker):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    @staticmethod
    def _read_accounts_again(known: set[str]) -> set[str]:
        """The accounts file read again if it changed; the chunks that waited for an account
        added to it (whoever read it again) are due at once. Returns the accounts known now."""
        conf = refresh()
        added = set(conf.accounts) - known
        try:
            wake(conf, added)
        except Exception as exc:  # the database away: they come back at their retry all the same
            log.warning(
                "chunks waiting for account(s) %s not made due now (%s); their retry brings them",
                ", ".join(sorted(added)),
                type(exc).__name__,
            )
        return set(conf.accounts)

    def _run(self) -> None:
        interval, known = settings().relay_interval, set(settings().accounts)
        while not self._stopping.wait(interval):
            try:
                known = self._read_accounts_again(known)
                relay_once()
            except Exception:
                log.exception("relay pass failed; the next one follows in %.0f s", interval)

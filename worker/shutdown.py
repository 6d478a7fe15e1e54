"""Warm shutdown from any signal path.

Celery's worker process takes SIGTERM, and a first SIGINT, as a warm shutdown:
it stops taking tasks and waits for the running ones (a second SIGINT, or
SIGQUIT, is a cold shutdown). But a signal sent to the whole process group
(Ctrl-C in a terminal, ``kill -- -PGID``, some container runtimes) also
reaches each prefork pool child directly. Celery makes the children ignore
SIGINT; SIGTERM would kill a child in the middle of a vendor call, leaving its
chunk ``sending`` and then ``unknown`` (WorkerLostError).

So a pool child puts SIGTERM off while it runs a task: the call finishes and
its outcome is recorded. In a warm shutdown the parent, which got the same
signal, then ends the child as usual; should the parent not do so (a cold
shutdown waits on its children), the child ends itself once idle for
``LINGER`` seconds. An idle child dies of SIGTERM at once. SIGKILL stops anything.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from celery.signals import task_postrun, task_prerun

log = logging.getLogger("smsq.shutdown")

LINGER = 2.0  # seconds a child that put off SIGTERM waits, idle, for its parent to end it

_pool_child = False
_idle_handler = None  # what SIGTERM did before: billiard's clean exit
_busy = False
_put_off = False


def _die(signum: int = signal.SIGTERM, frame=None) -> None:
    if callable(_idle_handler):
        _idle_handler(signum, frame)  # billiard's: runs finally blocks, exits
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _on_sigterm(signum, frame) -> None:
    global _put_off
    if not _busy:
        _die(signum, frame)
    _put_off = True  # (no logging here: a signal handler must not take the logging lock)


def _die_if_idle() -> None:
    if not _busy:  # the signal again, to be handled in the main thread, where exiting ends the process
        os.kill(os.getpid(), signal.SIGTERM)


# Connected at import, in the parent: Celery's task tracer looks the receivers up
# when it is built, before worker_process_init runs in a child.
@task_prerun.connect(weak=False)
def _task_started(**_: object) -> None:
    global _busy, _idle_handler
    _busy = True
    if _pool_child and _idle_handler is None:
        # Taken over here, not at worker_process_init: billiard installs its own
        # SIGTERM handler after that, over anything but SIG_IGN.
        _idle_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)


@task_postrun.connect(weak=False)
def _task_finished(**_: object) -> None:
    global _busy
    _busy = False
    if _put_off:
        log.warning("SIGTERM came during a task; the task is done, the process ends")
        timer = threading.Timer(LINGER, _die_if_idle)
        timer.daemon = True
        timer.start()


def guard_pool_child() -> None:
    """In a prefork pool child (worker_process_init): its tasks finish through SIGTERM."""
    global _pool_child
    _pool_child = True

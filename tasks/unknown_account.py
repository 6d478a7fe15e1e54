"""A chunk for an account this worker does not know waits, visibly, instead of failing.

``smsq send`` checks the account against the accounts file of the process that
sends; a worker reads its own (on another host it may differ), and an account
added after the worker started is new to it. The worker first reads its file
again if it changed (worker/config.py ``refresh``). If the account is still
unknown the chunk (with the rest of its group) stays ``pending``, its detail
saying which worker lacks which account and on which version of the file, and
the relay publishes it again after ``UNKNOWN_ACCOUNT_RETRY`` seconds: a worker
that knows the account (or this one, once its file has it) sends it then. A
worker whose relay timer finds the account added to its file publishes its
waiting chunks at once (``wake``). ``smsq send --wait`` and ``smsq status``
show the detail.
"""

from __future__ import annotations

import logging
import socket
import threading

from celery import current_task

from smsq.store import ledger
from smsq.worker.config import Settings, refused
from smsq.worker.db import transaction

log = logging.getLogger("smsq.send")

UNKNOWN_ACCOUNT_RETRY = 30.0  # seconds before the relay publishes such a chunk again

_said: set[tuple[str, str]] = set()  # (account, file version) already logged
_said_lock = threading.Lock()


def node() -> str:
    """This worker's node name (``celery@host``), or the host's name outside a task."""
    request = getattr(current_task, "request", None)
    return getattr(request, "hostname", None) or socket.gethostname()


def why_unknown(conf: Settings, account: str) -> str:
    """Which worker lacks which account, on which version of which file, and, if the file
    changed since but did not validate there, why (config errors never hold a secret)."""
    problem = refused()
    cure = (
        f"; the file changed since but cannot be used there: {problem}"
        if problem
        else "; add the account there, the worker reads the file again"
    )
    return (
        f"worker {node()} does not know account {account} (it runs {conf.config_path} "
        f"version {conf.config_version}){cure}"
    )


WHY_UNKNOWN_LIKE = "worker % does not know account %"  # why_unknown's words, for SQL


def wake(conf: Settings, accounts: set[str]) -> int:
    """The chunks waiting for ``accounts`` (now known to this process) are due now: the
    relay publishes them at its next pass instead of after their wait."""
    if not accounts:
        return 0
    with transaction(conf.database_url) as conn:
        woken = ledger.wake(conn, sorted(accounts), WHY_UNKNOWN_LIKE)
    if woken:
        log.info("%s chunk(s) waiting for account(s) %s are due now", woken, ", ".join(sorted(accounts)))
    return woken


def say_unknown(conf: Settings, chunk_id: int, why: str, account: str) -> None:
    """One warning per account and version of the file, not one per chunk."""
    with _said_lock:
        first = (account, str(conf.config_version)) not in _said
        _said.add((account, str(conf.config_version)))
    log.log(
        logging.WARNING if first else logging.INFO,
        "chunk %s: %s; it waits pending, tried again in %.0f s",
        chunk_id,
        why,
        UNKNOWN_ACCOUNT_RETRY,
    )

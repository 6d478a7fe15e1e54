"""An account's send health: the ``poll_status`` row of kind ``send``, shown by `smsq accounts`.

A send answered with auth or balance flags the account unhealthy; a later accepted
send clears the flag. The flag only reports: whether the account's other chunks
wait is the account's circuit's decision (tasks/circuit.py).

Every accepted chunk asks "was it flagged?": reading the row each time would cost
a transaction a chunk. So each process remembers the row for ``HEALTH_TTL``
seconds. What that may cost: a flag set by *another* process is unseen here for up
to that long, so a send accepted here meanwhile leaves it for the next one to clear
(this process's own flags are seen at once). A clear writes only when it sees the
flag set, so an accepted chunk of a healthy account costs no write.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update

from smsq.providers import SendResult
from smsq.store.models import PollStatus, utcnow
from smsq.store.sql import fit
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

HEALTH_TTL = 1.0  # seconds a process trusts what it last read


@dataclass(frozen=True)
class Flag:
    outcome: str | None
    detail: str | None
    at: datetime | None


_lock = threading.Lock()
_known: dict[tuple[str, str], tuple[float, Flag | None]] = {}  # (database, account) -> (read at, flag)


def _remember(conf: Settings, account: str, flag: Flag | None) -> None:
    with _lock:
        _known[(conf.database_url, account)] = (time.monotonic(), flag)


def _read(conf: Settings, account: str) -> Flag | None:
    with session_scope(conf.database_url, readonly=True) as session:
        row = session.get(PollStatus, (account, "send"))
        flag = None if row is None else Flag(row.outcome, row.detail, row.polled_at)
    _remember(conf, account, flag)
    return flag


def send_flag(conf: Settings, account: str, *, fresh: bool = False) -> Flag | None:
    with _lock:
        known = _known.get((conf.database_url, account))
    if not fresh and known is not None and time.monotonic() - known[0] < HEALTH_TTL:
        return known[1]
    return _read(conf, account)


def flag_account(conf: Settings, account: str, result: SendResult) -> None:
    """Show the account as unhealthy in `smsq accounts` (kind "send")."""
    now = utcnow()
    detail = fit(PollStatus.detail, f"{result.code or ''} {result.message or ''}".strip())
    with session_scope(conf.database_url) as session:
        row = session.get(PollStatus, (account, "send")) or PollStatus(account=account, kind="send")
        row.polled_at, row.outcome, row.items, row.detail = now, result.outcome.value, 0, detail
        session.merge(row)
    _remember(conf, account, Flag(result.outcome.value, detail, now))


def clear_flag(conf: Settings, account: str) -> None:
    """A send went through: the account is healthy again. Writes only when it was flagged."""
    flag = send_flag(conf, account)
    if flag is None or flag.outcome == "ok":
        return
    now, detail = utcnow(), "a send was accepted since"
    with session_scope(conf.database_url) as session:
        session.execute(
            update(PollStatus)
            .where(PollStatus.account == account, PollStatus.kind == "send", PollStatus.outcome != "ok")
            .values(outcome="ok", detail=detail, polled_at=now)
        )
    _remember(conf, account, Flag("ok", detail, now))


def forget() -> None:
    with _lock:
        _known.clear()

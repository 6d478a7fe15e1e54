"""An account's send health: the ``poll_status`` row of kind ``send``.

A send that fails with auth or balance flags the account: `smsq accounts`
shows it, and its other chunks wait ``SMSQ_ACCOUNT_HOLD`` seconds instead of
calling the vendor again with a wrong password (how accounts get locked: dxt
-10 帐号已被锁定). A later accepted send clears the flag.

Every chunk asks "is my account held?" and every accepted chunk "was it
flagged?": reading and writing the row each time cost two transactions a
chunk. So each process remembers the row for ``HEALTH_TTL`` seconds. What
that may cost: a flag set by *another* process is honoured up to that much
later (this process's own flags are seen at once). A held answer is always
read again from the database before a chunk is held, so an operator who
removes a flag is obeyed at once, and the flag is cleared only when it is set.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from smsq.providers import Outcome, SendResult
from smsq.store.models import PollStatus, utcnow
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

HEALTH_TTL = 1.0  # seconds a process trusts what it last read
HOLDING = (Outcome.AUTH.value, Outcome.BALANCE.value)


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


def _hold_of(conf: Settings, flag: Flag | None) -> tuple[datetime, str] | None:
    if flag is None or flag.outcome not in HOLDING or flag.at is None:
        return None
    until = flag.at + timedelta(seconds=conf.account_hold)
    return (until, f"{flag.outcome} {flag.detail or ''}".strip()) if until > utcnow() else None


def account_held_until(conf: Settings, account: str) -> tuple[datetime, str] | None:
    """When a send of this account failed with auth or balance less than ``account_hold``
    ago: until when its other chunks wait, and why."""
    if _hold_of(conf, send_flag(conf, account)) is None:
        return None
    return _hold_of(conf, send_flag(conf, account, fresh=True))  # confirmed before anything waits on it


def flag_account(conf: Settings, account: str, result: SendResult) -> None:
    """Show the account as unhealthy in `smsq accounts` (kind "send")."""
    now = utcnow()
    detail = f"{result.code or ''} {result.message or ''}".strip()[:1000]
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
        session.execute(update(PollStatus).where(PollStatus.account == account, PollStatus.kind == "send",
                                                 PollStatus.outcome != "ok")
                        .values(outcome="ok", detail=detail, polled_at=now))
    _remember(conf, account, Flag("ok", detail, now))


def forget() -> None:
    with _lock:
        _known.clear()

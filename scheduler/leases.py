"""Per-account poll leases: the vendors' "at most once per 30 s" rule, held in the database.

Taking a lease is one conditional UPDATE (``next_allowed_at <= now``); only one
process can win it, however many beats, workers and `smsq poll` commands race.
The holder pushes the window forward again when its vendor call has ended,
so the next call starts a full interval after the previous one finished —
the vendor's clock counts from when it received the call, which is earlier.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from smsq.store.models import PollLease, utcnow

MARGIN = 1.0  # seconds added to every window: clocks and network are not exact
EPOCH = datetime(1970, 1, 1)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _ensure_row(session: Session, account: str, family: str) -> None:
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(PollLease).values(account=account, family=family, next_allowed_at=EPOCH)
                    .on_conflict_do_nothing(index_elements=["account", "family"]))


def take(session: Session, account: str, family: str, interval: float) -> bool:
    """Take the lease for ``interval`` seconds from now, or return False if it is held."""
    _ensure_row(session, account, family)
    now = utcnow()
    taken = session.execute(
        update(PollLease)
        .where(PollLease.account == account, PollLease.family == family, PollLease.next_allowed_at <= now)
        .values(next_allowed_at=now + timedelta(seconds=interval + MARGIN), holder=_holder())
    ).rowcount
    return taken == 1


def extend(session: Session, account: str, family: str, interval: float) -> None:
    """After the vendor call: the next one may start ``interval`` from now, not earlier."""
    session.execute(update(PollLease).where(PollLease.account == account, PollLease.family == family)
                    .values(next_allowed_at=utcnow() + timedelta(seconds=interval + MARGIN)))


def free_in(session: Session, account: str, family: str) -> float:
    """Seconds until the lease can be taken (0 if now)."""
    lease = session.get(PollLease, (account, family))
    if lease is None:
        return 0.0
    return max(0.0, (lease.next_allowed_at - utcnow()).total_seconds())

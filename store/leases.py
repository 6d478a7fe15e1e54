"""Per-account poll leases: the vendors' "at most once per 30 s" rule, held in the database.

Taking a lease is one conditional UPDATE (``next_allowed_at <= now``); only one
process can win it, however many beats, workers and `smsq poll` commands race.
The holder pushes the window forward again when its vendor call has ended,
so the next call starts a full interval after the previous one finished —
the vendor's clock counts from when it received the call, which is earlier.

A caller that must not miss the next window (``smsq check --wait``, while
beat polls every 30 s) **books** it: its name goes in ``holder`` as
``next:<host>:<pid>`` and nobody else may take the lease when it opens, for
``BOOKING_GRACE`` seconds; a booker that never comes (killed while waiting)
then loses its turn. Pushing the window forward keeps the booking.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from smsq.store.models import PollLease, utcnow
from smsq.store.sql import insert_or_ignore, rows_changed, width

MARGIN = 1.0  # seconds added to every window: clocks and network are not exact
EPOCH = datetime(1970, 1, 1)
BOOKED = "next:"  # holder prefix of a booked window
BOOKING_GRACE = 5.0  # seconds a booker has to take the window once it opens


def _holder() -> str:
    # the column's width, less room for the BOOKED prefix of _booking()
    keep = width(PollLease.holder)
    assert keep is not None  # a String column, which has a length
    return f"{socket.gethostname()}:{os.getpid()}"[: keep - len(BOOKED) - 3]


def _booking() -> str:
    return BOOKED + _holder()


def _not_booked_by_another(now: datetime):
    """The row's window is not booked, or booked by this process, or its booker missed it."""
    return or_(
        PollLease.holder.is_(None),
        ~PollLease.holder.startswith(BOOKED, autoescape=True),
        PollLease.holder == _booking(),
        PollLease.next_allowed_at <= now - timedelta(seconds=BOOKING_GRACE),
    )


def _ensure_row(session: Session, account: str, family: str) -> None:
    insert_or_ignore(
        session, PollLease, dict(account=account, family=family, next_allowed_at=EPOCH), ["account", "family"]
    )


def take(session: Session, account: str, family: str, interval: float) -> bool:
    """Take the lease for ``interval`` seconds from now, or return False if it is held."""
    _ensure_row(session, account, family)
    now = utcnow()
    taken = rows_changed(
        session.execute(
            update(PollLease)
            .where(
                PollLease.account == account,
                PollLease.family == family,
                PollLease.next_allowed_at <= now,
                _not_booked_by_another(now),
            )
            .values(next_allowed_at=now + timedelta(seconds=interval + MARGIN), holder=_holder())
        )
    )
    return taken == 1


def extend(session: Session, account: str, family: str, interval: float) -> None:
    """After the vendor call: the next one may start ``interval`` from now, not earlier."""
    session.execute(
        update(PollLease)
        .where(PollLease.account == account, PollLease.family == family)
        .values(next_allowed_at=utcnow() + timedelta(seconds=interval + MARGIN))
    )


def book(session: Session, account: str, family: str) -> bool:
    """Book the next window for this process; False while another holds a booking."""
    _ensure_row(session, account, family)
    return (
        rows_changed(
            session.execute(
                update(PollLease)
                .where(PollLease.account == account, PollLease.family == family, _not_booked_by_another(utcnow()))
                .values(holder=_booking())
            )
        )
        == 1
    )


def unbook(session: Session, account: str, family: str) -> None:
    """Give up this process's booking (it stopped waiting)."""
    session.execute(
        update(PollLease)
        .where(PollLease.account == account, PollLease.family == family, PollLease.holder == _booking())
        .values(holder=None)
    )


def free_in(session: Session, account: str, family: str, interval: float = 0.0) -> float:
    """Seconds until the lease can be taken (0 if now). When another process booked the
    window, its call comes first: ``interval`` more."""
    lease = session.get(PollLease, (account, family))
    if lease is None:
        return 0.0
    now = utcnow()
    wait = max(0.0, (lease.next_allowed_at - now).total_seconds())
    booked = session.execute(
        select(PollLease.account).where(
            PollLease.account == account, PollLease.family == family, ~_not_booked_by_another(now)
        )
    ).first()
    return wait + interval + MARGIN if booked else wait

"""Validity: a send not made by a given moment is not made at all (a code that arrives
after it expired is worse than none).

A send's validity is ``send_sms(valid_for=...)`` (``smsq send --valid-for``), by default
its kind's ``valid_for`` at its account (``[kinds.otp] valid_for = "5m"``; none for the
other kinds). It counts from when the batch is due: when it is stored, or, for a
scheduled send, from its ``send_at``. The batch keeps the moment it ends
(``batches.valid_until``), and every chunk of the batch is held to it, whichever
account sends it (a route's move, narrowing's new chunks).

A chunk past it before its vendor call is never sent: it ends ``expired``, and so do its
numbers. Two places see to it (the ledger writes it: store/ledger/validity.py):

* the worker, right after its claim and before anything else of the send (the route's
  circuit, the vendor call): ``expire_if_lapsed``. The claim makes the chunk the
  worker's alone, so no vendor call can follow a check that found it lapsed, and the
  check comes after whatever wait the chunk had (a rate-limit slot, the broker, a
  retry's backoff);
* the relay, every pass, for pending chunks past it (held by an open circuit, waiting
  for a retry or in the broker): ``expire_waiting``, so they do not sit pending.

The arithmetic (``validity_seconds``, ``valid_until``, ``lapsed``) is pure.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from smsq.providers.base import BEIJING
from smsq.store import ledger
from smsq.store.ledger import ClaimedChunk
from smsq.store.models import utcnow
from smsq.worker.config import Settings
from smsq.worker.db import session_scope
from smsq.worker.kinds import UNITS, parse_duration

log = logging.getLogger("smsq.validity")

EXPIRED_DETAIL = "not sent: its validity (valid_for) ended before its vendor call"
PASS_LIMIT = 2000  # chunks the relay expires per pass; the next pass takes the rest


def validity_seconds(valid_for: object, default: int | None) -> float | None:
    """The seconds a send is valid for, from what the caller gave: None (the kind's
    ``default``), a ``timedelta``, a number of seconds, or a duration such as ``"90s"``,
    ``"5m"``, ``"2h"``, ``"1d"``. Zero (``"0"``) is no limit, whatever the kind's default:
    None. Anything else is a ValueError."""
    if valid_for is None:
        return default
    if isinstance(valid_for, timedelta):
        seconds: float = valid_for.total_seconds()
    elif isinstance(valid_for, (int, float)) and not isinstance(valid_for, bool):
        seconds = float(valid_for)
    elif isinstance(valid_for, str):
        seconds = _duration(valid_for)
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f'valid_for must be a duration like "90s", "5m", "2h" or "1d", a number of seconds or a '
            f'timedelta ("0": no limit), not {valid_for!r}'
        )
    return seconds or None


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text.strip().lower(), "valid_for"))
    except ValueError:
        return math.nan


def valid_until(seconds: float | None, due: datetime) -> datetime | None:
    """The moment a send due at ``due`` (naive UTC) stops being valid; None: never."""
    return None if seconds is None else due + timedelta(seconds=seconds)


def lapsed(until: datetime | None, now: datetime) -> bool:
    """Whether a send valid until ``until`` may no longer be made at ``now`` (both naive UTC)."""
    return until is not None and now >= until


def describe(seconds: float | None) -> str | None:
    """``300`` -> ``"5m"`` (the largest whole unit), ``90.5`` -> ``"90.5s"``; None: None."""
    if seconds is None:
        return None
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def clock(moment: datetime) -> str:
    """A naive UTC moment as the command line prints times: ISO 8601, Beijing time."""
    return moment.replace(tzinfo=UTC).astimezone(BEIJING).isoformat(timespec="seconds")


def expire_if_lapsed(conf: Settings, claimed: ClaimedChunk) -> bool:
    """For a chunk just claimed: if its validity has passed, it ends ``expired`` (nothing is
    sent) and True; else False and the send goes on. Call it after the claim, before any
    other step of the send."""
    now = utcnow()
    if not lapsed(claimed.valid_until, now):
        return False
    assert claimed.valid_until is not None
    detail = f"{EXPIRED_DETAIL} (valid until {clock(claimed.valid_until)})"
    with session_scope(conf.database_url) as session:
        numbers = ledger.expire_claimed(session, claimed, detail, now)
    if numbers is not None:
        log.warning(
            "chunk %s (batch %s, %s numbers, account %s): expired, its validity ended at %s; not sent",
            claimed.chunk_id,
            claimed.batch_id,
            numbers,
            claimed.account,
            clock(claimed.valid_until),
        )
    return True


def expire_waiting(conf: Settings) -> int:
    """The relay's pass: pending chunks past their batch's validity end ``expired``. Returns
    how many chunks."""
    now = utcnow()
    with session_scope(conf.database_url) as session:
        expired = ledger.expire_waiting(session, now, EXPIRED_DETAIL, PASS_LIMIT)
    for batch_id, chunks, numbers in expired:
        log.warning("batch %s: %s chunk(s), %s number(s) expired while waiting; not sent", batch_id, chunks, numbers)
    return sum(chunks for _, chunks, _ in expired)

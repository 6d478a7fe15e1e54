"""The budget guard: an account's ``daily_quota``, numbers sent to per Beijing day.

A send takes its numbers in block by block (tasks/intake.py); each block of numbers that
passed every other check asks the day's counter for its share. The counter grants what
is left of the quota, at most the block: the numbers past it are rejected one by one,
in list order, with the reason ``daily quota N reached``, like a frequency cap, and the
rest of the send goes out. A send none of whose numbers fits stores nothing and says so
in one line (tasks/producer.py). Numbers a send rejects for any other reason (invalid,
blocked, capped, a duplicate) never count.

Why number by number rather than the whole send refused when it does not fit: a list is
streamed, so its size is known only at its end, after the counter was asked; and the
numbers past the quota are in the receipt and in ``smsq export BATCH --state rejected``
to send the next day, while a preview (``smsq send --dry-run``) tells beforehand how
many would be over.

The day is the Beijing day (UTC+8) on which the send began, the vendors' and the
carriers' day. The counter is shared by every process and host, and taken atomically:
two producers racing for the last numbers of the quota cannot both get them.

* With Redis (``SMSQ_REDIS_URL``, or a Redis broker): one key per account and day,
  ``smsq:quota:ACCOUNT:YYYY-MM-DD``, taken by a Lua script (read, grant, INCRBY in one
  step), expiring a day after the day ends. A send that fails after it took its share
  (its transaction rolled back) gives it back.
* Without: a ``daily_quotas`` row per account and day, taken in the send's own
  transaction under a row lock (a send rolled back gives its share back by itself).
  Sends of one account with a quota then take turns at the counter until each commits.

A dry run (a preview) only reads the counter and reports what the quota would refuse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from smsq.providers.base import BEIJING
from smsq.store.models import DailyQuota, utcnow
from smsq.store.sql import insert_or_ignore

from .intake import Admit

log = logging.getLogger("smsq.quota")

REASON_PREFIX = "daily quota "
KEEP_AFTER_DAY = 86400  # seconds a Redis key outlives its day (read by a late preview, never again)


def reason(quota: int) -> str:
    """The reason a number past the quota is rejected with."""
    return f"{REASON_PREFIX}{quota} reached"


def is_quota_reason(text: str) -> bool:
    return text.startswith(REASON_PREFIX) and text.endswith(" reached")


def beijing_day(now: datetime) -> date:
    """The Beijing day of ``now`` (a naive ``now`` is UTC, as smsq stores times)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(BEIJING).date()


def seconds_left(day: date, now: datetime) -> int:
    """Whole seconds from ``now`` (naive: UTC) to the end of the Beijing ``day``, at least 1."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=BEIJING)
    return max(1, int((end - now).total_seconds() + 0.999))


def grant(used: int, quota: int, wanted: int) -> int:
    """Of ``wanted`` numbers, how many fit in a quota of which ``used`` is taken."""
    return max(0, min(wanted, quota - used))


class Counter(Protocol):
    def used(self, account: str, day: date) -> int: ...

    def take(self, account: str, day: date, wanted: int, quota: int) -> int: ...


# -- the database counter -------------------------------------------------------


class DatabaseCounter:
    """Rows of ``daily_quotas``, in the send's own session (and transaction)."""

    def __init__(self, session: Session):
        self.session = session

    def _where(self, account: str, day: date) -> Any:
        return (DailyQuota.account == account) & (DailyQuota.day == day)

    def used(self, account: str, day: date) -> int:
        return self.session.scalar(select(DailyQuota.used).where(self._where(account, day))) or 0

    def take(self, account: str, day: date, wanted: int, quota: int) -> int:
        session = self.session
        insert_or_ignore(session, DailyQuota, {"account": account, "day": day, "used": 0}, ["account", "day"])
        # The row lock (PostgreSQL; SQLite's send transaction holds the write lock already)
        # is kept until the send commits: a racing send reads the count this one leaves.
        used = session.scalar(select(DailyQuota.used).where(self._where(account, day)).with_for_update()) or 0
        granted = grant(used, quota, wanted)
        if granted:
            session.execute(update(DailyQuota).where(self._where(account, day)).values(used=DailyQuota.used + granted))
        return granted


# -- the Redis counter ---------------------------------------------------------

# KEYS[1] the day's key; ARGV: wanted, quota, seconds to keep the key. Returns the grant.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if granted <= 0 then return 0 end
redis.call('INCRBY', KEYS[1], granted)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return granted
"""


class RedisCounter:
    def __init__(self, url: str):
        import redis  # here: only a process whose account has a quota pays for the import

        self._redis = redis.Redis.from_url(url)
        self._take = self._redis.register_script(_TAKE)

    @staticmethod
    def key(account: str, day: date) -> str:
        return f"smsq:quota:{account}:{day.isoformat()}"

    def used(self, account: str, day: date) -> int:
        return int(self._redis.get(self.key(account, day)) or 0)

    def take(self, account: str, day: date, wanted: int, quota: int) -> int:
        keep = seconds_left(day, utcnow()) + KEEP_AFTER_DAY
        return int(self._take(keys=[self.key(account, day)], args=[wanted, quota, keep]))

    def give_back(self, account: str, day: date, count: int) -> None:
        self._redis.decrby(self.key(account, day), count)


_redis_counters: dict[str, RedisCounter] = {}
_lock = threading.Lock()


def redis_counter(url: str) -> RedisCounter:
    with _lock:
        if url not in _redis_counters:
            _redis_counters[url] = RedisCounter(url)
        return _redis_counters[url]


def counter_for(session: Session, redis_url: str | None) -> Counter:
    """Redis when smsq has one, shared by every host; the database otherwise."""
    return redis_counter(redis_url) if redis_url else DatabaseCounter(session)


# -- the check -------------------------------------------------------------------


def quota_check(
    session: Session,
    account: str,
    quota: int | None,
    redis_url: str | None,
    rejected: list[tuple[str, str]],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    counter: Counter | None = None,
) -> Admit | None:
    """The daily quota's check of a send's blocks (tasks/policy.py ``admission``); None
    when the account has no quota. ``dry_run``: the counter is read once and nothing is
    taken; the check still refuses, as it would, the numbers past what is left."""
    if quota is None:
        return None
    counter = counter or counter_for(session, redis_url)
    day = beijing_day(now or utcnow())
    why = reason(quota)
    ask = _looking(counter, account, day, quota) if dry_run else _taking(session, counter, account, day, quota)

    def admit(block: list[str]) -> list[str]:
        granted = ask(len(block)) if block else 0
        rejected.extend((mobile, why) for mobile in block[granted:])
        return block[:granted]

    return admit


def _looking(counter: Counter, account: str, day: date, quota: int) -> Callable[[int], int]:
    """A dry run: the day's count read once; what the preview admits is counted here only."""
    taken = [counter.used(account, day)]

    def ask(wanted: int) -> int:
        granted = grant(taken[0], quota, wanted)
        taken[0] += granted
        return granted

    return ask


def _taking(session: Session, counter: Counter, account: str, day: date, quota: int) -> Callable[[int], int]:
    """Take from the counter; a Redis share is given back if the send's transaction rolls
    back (a database share goes back with the transaction itself)."""
    taken = [0]
    give_back = getattr(counter, "give_back", None)  # a counter outside the transaction (Redis)
    if give_back is not None:
        # Listened for here, not at the first take: a long list's blocks are taken in a
        # thread of their own (tasks/intake.py ``_admitted_ahead``), never on the session.
        event.listen(session, "after_rollback", lambda _s: _give_back(give_back, account, day, taken), once=True)

    def ask(wanted: int) -> int:
        granted = counter.take(account, day, wanted, quota)
        taken[0] += granted
        return granted

    return ask


def _give_back(give_back: Callable[[str, date, int], None], account: str, day: date, taken: list[int]) -> None:
    if not taken[0]:
        return
    try:
        give_back(account, day, taken[0])
    except Exception:  # the send's own error is the one to raise; the share stays spent
        log.warning("account %s: could not give back %s number(s) of the daily quota", account, taken[0])
    taken[0] = 0

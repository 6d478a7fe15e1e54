"""Per-number frequency caps: at most COUNT sends to one number per PERIOD (``[kinds.NAME]
per_number``, worker/kinds.py), counted across every account, batch, process and host.

Windows are fixed, aligned to their period on the Beijing clock: ``"1/1m"`` counts the
sends of each clock minute, ``"5/1h"`` of each clock hour, ``"10/1d"`` of each Beijing day
(from 00:00 +08:00, as the vendors count theirs). Fixed rather than sliding: a fixed window
is one counter per number and cap, which a single conditional increment checks and counts
at once, the same way in Redis and in the database, with nothing to keep but the counter
until its window ends. The price is at a window's edge: under ``"1/1m"`` a code at
10:00:59 and another at 10:01:00 both go (two in a second); the longer caps still bound a
burst, and a sliding log per number would cost a record per send and a count per cap.

Where the counts live:

* Redis, when ``SMSQ_REDIS_URL`` is set (or the broker is Redis): one key per number,
  cap and window (``smsq:cap:PERIOD:WINDOW:NUMBER``), expiring with its window; a block
  of numbers (up to 5,000) is checked and counted by one Lua script, one round trip,
  atomically: two producers racing for a number's last allowance cannot both get it.
* the database otherwise: ``number_sends`` rows, one conditional upsert per cap and block
  in the send's own transaction (PostgreSQL locks each row it counts until the commit,
  SQLite's write lock serialises producers). Numbers are counted in sorted order, so two
  sends of one block each cannot deadlock; a longer list takes an advisory lock alone
  (``_serialise``).

A number is admitted when every cap has room, and then counted in every cap; a refused
number is counted in none. The Redis counts are not part of the send's transaction: a
send whose transaction fails after its intake (the database lost mid-send) keeps its
counts until their windows end, erring towards fewer sends.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from smsq.store.models import NumberSends
from smsq.store.sql import is_postgres, upsert_numbers
from smsq.worker.kinds import Cap

from .intake import Admit

BEIJING_OFFSET = 8 * 3600  # windows start on the Beijing clock (no DST)
KEY_PREFIX = "smsq:cap"  # the keys: smsq:cap:PERIOD:WINDOW:NUMBER (the Lua script spells them)


def cap_check(
    session: Session,
    caps: Sequence[Cap],
    redis_url: str | None,
    rejected: list[tuple[str, str]],
    *,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    long_list: bool = False,
) -> Admit | None:
    """The caps' check of a send's blocks (None: no cap, nothing to do): a number over a
    cap joins ``rejected`` with the cap's reason; the others are counted (unless
    ``dry_run``: then nothing is counted, and what would be refused is reported).
    ``long_list``: the send may have more than one block (see ``_serialise``)."""
    if not caps:
        return None
    locked: list[bool] = []

    def admit(mobiles: list[str]) -> list[str]:
        if redis_url:
            refused = redis_take(redis_url, mobiles, caps, clock(), dry_run)
        else:
            if not locked and not dry_run:
                locked.append(_serialise(session, long_list))
            refused = database_take(session, mobiles, caps, clock(), dry_run)
        if not refused:
            return mobiles
        rejected.extend((mobile, cap_reason(refused[mobile])) for mobile in mobiles if mobile in refused)
        return [mobile for mobile in mobiles if mobile not in refused]

    return admit


CAPS_LOCK = 0x736D7371_63617073  # "smsqcaps": the advisory lock of capped sends on PostgreSQL


def _serialise(session: Session, long_list: bool) -> bool:
    """On PostgreSQL, the lock that keeps capped sends from deadlocking on ``number_sends``.
    A send of one block counts its numbers in one order (each cap, shortest first, the
    numbers sorted), so such sends never deadlock with each other: they share the lock.
    A longer list counts block after block, out of that order: it takes the lock alone,
    waiting for the sends in progress and holding the others until it commits. (SQLite's
    write lock already serialises every send.)"""
    if is_postgres(session):
        lock = "pg_advisory_xact_lock" if long_list else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {lock}(:key)"), {"key": CAPS_LOCK})
    return True


def window_no(cap: Cap, now: float) -> int:
    """Which window of ``cap`` the Unix time ``now`` falls in."""
    return int((now + BEIJING_OFFSET) // cap.seconds)


def window_end(cap: Cap, window: int) -> float:
    """The Unix time window ``window`` of ``cap`` ends (the next one starts)."""
    return (window + 1) * cap.seconds - BEIJING_OFFSET


def cap_reason(cap: Cap) -> str:
    """The reason a number over ``cap`` is refused with: ``frequency cap 5/1h``."""
    return f"frequency cap {cap}"


# ARGV: dry ("1": look only), the number of caps, then per cap its count, key part
# ("PERIOD:WINDOW") and seconds to live, then the numbers. Returns, per number, 0 when
# every cap has room (and then, unless dry, counts it in each), else the first full cap's
# position (1: the shortest).
_TAKE = """
local dry, n = ARGV[1] == '1', tonumber(ARGV[2])
local counts, parts, ttls = {}, {}, {}
for i = 1, n do
  counts[i], parts[i], ttls[i] = tonumber(ARGV[3 * i]), ARGV[3 * i + 1], tonumber(ARGV[3 * i + 2])
end
local out = {}
for a = 3 * n + 3, #ARGV do
  local full = 0
  for i = 1, n do
    if tonumber(redis.call('GET', 'smsq:cap:' .. parts[i] .. ':' .. ARGV[a]) or '0') >= counts[i] then
      full = i
      break
    end
  end
  if full == 0 and not dry then
    for i = 1, n do
      local key = 'smsq:cap:' .. parts[i] .. ':' .. ARGV[a]
      if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ttls[i]) end
    end
  end
  out[#out + 1] = full
end
return out
"""


@functools.lru_cache(maxsize=8)
def _script(url: str) -> Any:
    import redis  # here: a process that caps through the database never loads it

    return redis.Redis.from_url(url).register_script(_TAKE)


def redis_take(url: str, mobiles: Sequence[str], caps: Sequence[Cap], now: float, dry_run: bool) -> dict[str, Cap]:
    """Check and count ``mobiles`` against ``caps`` in Redis: the refused ones, each with
    the first cap it is over. One round trip."""
    args: list[Any] = ["1" if dry_run else "0", len(caps)]
    for cap in caps:
        window = window_no(cap, now)
        args += [cap.count, f"{cap.seconds}:{window}", math.ceil(window_end(cap, window) - now) + 1]
    full = _script(url)(args=args + list(mobiles))
    return {mobile: caps[int(i) - 1] for mobile, i in zip(mobiles, full, strict=True) if int(i)}


def database_take(
    session: Session, mobiles: Sequence[str], caps: Sequence[Cap], now: float, dry_run: bool
) -> dict[str, Cap]:
    """Check and count ``mobiles`` against ``caps`` in ``number_sends``, in the session's
    transaction: the refused ones, each with the first cap it is over. Each cap, shortest
    first, counts the numbers the caps before it admitted, where it has room; a number a
    later cap refuses is given back to the earlier ones."""
    refused: dict[str, Cap] = {}
    left = sorted(mobiles)
    counted: list[tuple[Cap, int]] = []
    for cap in caps:
        window = window_no(cap, now)
        if dry_run:
            full = set(_full(session, cap, window, left))
        else:
            full = set(left) - set(_count(session, cap, window, left, now))
            for earlier, earlier_window in counted if full else ():
                _give_back(session, earlier, earlier_window, sorted(full))
        refused.update(dict.fromkeys(full, cap))
        left = [mobile for mobile in left if mobile not in full]
        counted.append((cap, window))
    return refused


def _count(session: Session, cap: Cap, window: int, mobiles: list[str], now: float) -> list[str]:
    """Count ``mobiles`` in ``cap``'s window where it has room: the ones counted."""
    expires = datetime.fromtimestamp(window_end(cap, window), UTC).replace(tzinfo=None)
    return upsert_numbers(
        session,
        NumberSends,
        mobiles,
        {"period": cap.seconds, "window_no": window, "sends": 1, "expires_at": expires},
        keys=("mobile", "period", "window_no"),
        update="sends = number_sends.sends + 1",
        where=f"number_sends.sends < {int(cap.count)}",
    )


def _full(session: Session, cap: Cap, window: int, mobiles: list[str]) -> list[str]:
    """Those of ``mobiles`` with no room left in ``cap``'s window (a look, no count)."""
    if not mobiles:
        return []
    return list(
        session.scalars(
            select(NumberSends.mobile).where(
                NumberSends.period == cap.seconds,
                NumberSends.window_no == window,
                NumberSends.mobile.in_(mobiles),
                NumberSends.sends >= cap.count,
            )
        )
    )


def _give_back(session: Session, cap: Cap, window: int, mobiles: list[str]) -> None:
    session.execute(
        update(NumberSends)
        .where(NumberSends.period == cap.seconds, NumberSends.window_no == window, NumberSends.mobile.in_(mobiles))
        .values(sends=NumberSends.sends - 1)
        .execution_options(synchronize_session=False)
    )

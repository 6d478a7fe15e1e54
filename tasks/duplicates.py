"""The duplicate guard: the same content to the same number within ``duplicate_window``
(worker/kinds.py; ``"30s"`` by default, ``"0"`` off) is refused at intake, naming the
batch that sent it first.

The content is the text as sent (the account's signature placed: the batch's
``content``), hashed (``digest``); so is the same text through two accounts with two
signatures two contents. A send guards each number it admits for its own window: a
later send of that content to that number before the window ends is a duplicate.

What counts as sent: a number the send took in, after the frequency caps (a number a cap
refused is not guarded, so a resend once the cap has room is not a duplicate). It stays
guarded for its window whatever becomes of the send afterwards (failed at the vendor,
cancelled): a retry of the same text within seconds is the double submission the guard
is for; a caller who means it sends again after the window, or changes the text.

Where the guard lives:

* Redis, when set: per content and window-long time bucket (BUCKET = unix time // the
  window), a hash of the sends that guard numbers in it (``smsq:dup:DIGEST:BUCKET``:
  batch -> the time of its last block) and a set of each send's numbers
  (``smsq:dup:DIGEST:BUCKET:BATCH``). A number is a duplicate when the set of another send
  of the current or the previous bucket, whose last block is less than a window old,
  holds it (so a number is guarded from the send's last block, a few seconds at most
  after its own). A block of numbers is one Lua script, one round trip; a text no other
  send guards (a campaign's) is only added, never looked up. A key per number cost 5 µs
  a number (a million-number campaign 13 times a raw COPY). A long list's blocks are
  checked one block ahead of the intake, in a thread (tasks/intake.py ``_admitted_ahead``):
  the script's Redis time (about 1-2 µs a number on a 2-core host) overlaps the reading
  of the list and its COPY. Two racing sends cannot both take a number. Keys live two
  windows.
* the database otherwise: ``recent_contents`` rows, one conditional upsert per block in
  the send's transaction (a row whose guard has ended is taken over).

As with the caps, the Redis keys outlive a send whose transaction fails after its intake.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from smsq.store.models import RecentContent
from smsq.store.sql import upsert_numbers
from smsq.worker.kinds import _duration_text

from .intake import Admit

KEY_PREFIX = "smsq:dup"


def digest(content: str) -> str:
    """The guard's key of a text: 32 hex digits of its SHA-256."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:32]


def duplicate_reason(batch_id: int | str, window: int) -> str:
    return f"duplicate of batch {batch_id} within {_duration_text(window)}"


def duplicate_check(
    session: Session,
    content: str,
    batch_id: Callable[[], int],
    window: int,
    redis_url: str | None,
    rejected: list[tuple[str, str]],
    *,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> Admit | None:
    """The guard's check of a send's blocks (None: the guard is off): a number sent the
    same ``content`` within the window joins ``rejected`` naming the earlier batch; the
    others are guarded for ``window`` seconds as sent by ``batch_id()`` (unless
    ``dry_run``: a look only)."""
    if not window:
        return None
    key = digest(content)

    def admit(mobiles: list[str]) -> list[str]:
        if redis_url:
            earlier = redis_guard(redis_url, key, mobiles, batch_id(), window, dry_run, clock())
        else:
            earlier = database_guard(session, key, mobiles, batch_id(), window, clock(), dry_run)
        if not earlier:
            return mobiles
        rejected.extend((m, duplicate_reason(earlier[m], window)) for m in mobiles if m in earlier)
        return [m for m in mobiles if m not in earlier]

    return admit


# ARGV: dry ("1": look only), the digest, the batch id, the window in seconds, the time
# (unix seconds), then the numbers, comma-joined (one argument: packing thousands of
# arguments cost more than the script). Returns the duplicates flat: the position of each
# (1-based) and the id of the batch that guards it; guards the others for this batch
# (unless dry). Commands take at most STEP fields: Lua's unpack has a bounded stack.
_GUARD = """
local dry, digest, batch = ARGV[1] == '1', ARGV[2], ARGV[3]
local window, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local bucket = math.floor(now / window)
local numbers = {}
for number in string.gmatch(ARGV[6], '[^,]+') do numbers[#numbers + 1] = number end
local STEP, n = 2000, #numbers
-- The other sends of this text in this bucket and the one before, still in their window:
-- the sets to look the numbers up in. None (a campaign's text new to Redis): no lookup.
local others, names = {}, {}
for _, b in ipairs({bucket, bucket - 1}) do
  local writers = redis.call('HGETALL', 'smsq:dup:' .. digest .. ':' .. b)
  for i = 1, #writers, 2 do
    if writers[i] ~= batch and tonumber(writers[i + 1]) > now - window then
      others[#others + 1] = 'smsq:dup:' .. digest .. ':' .. b .. ':' .. writers[i]
      names[#names + 1] = writers[i]
    end
  end
end
local mine = 'smsq:dup:' .. digest .. ':' .. bucket .. ':' .. batch
local out, fresh = {}, {}
if #others == 0 then  -- nothing to look up: the numbers are only added
  for from = 1, dry and 0 or n, STEP do
    redis.call('SADD', mine, unpack(numbers, from, math.min(from + STEP - 1, n)))
  end
end
for from = 0, #others > 0 and n - 1 or -1, STEP do
  local fields = {unpack(numbers, from + 1, math.min(from + STEP, n))}
  local hits = {}
  for k = 1, #others do
    local found = redis.call('SMISMEMBER', others[k], unpack(fields))
    for j = 1, #fields do
      if found[j] == 1 and not hits[j] then hits[j] = names[k] end
    end
  end
  for j = 1, #fields do
    if hits[j] then
      out[#out + 1] = from + j
      out[#out + 1] = hits[j]
    elseif not dry then
      fresh[#fresh + 1] = fields[j]
    end
  end
  if #fresh > 0 then
    redis.call('SADD', mine, unpack(fresh))
    fresh = {}
  end
end
if not dry and n > #out / 2 then
  local writers = 'smsq:dup:' .. digest .. ':' .. bucket
  redis.call('HSET', writers, batch, now)
  redis.call('EXPIRE', writers, 2 * window + 1)
  redis.call('EXPIRE', mine, 2 * window + 1)
end
return out
"""


@functools.lru_cache(maxsize=8)
def _script(url: str) -> Any:
    import redis  # here: a process that guards through the database never loads it

    return redis.Redis.from_url(url).register_script(_GUARD)


def redis_guard(
    url: str, key: str, mobiles: Sequence[str], batch_id: int, window: int, dry_run: bool, now: float
) -> dict[str, str]:
    """Guard ``mobiles`` in Redis: those already guarded, each with the earlier batch's id."""
    found = _script(url)(args=["1" if dry_run else "0", key, batch_id, window, repr(now), ",".join(mobiles)])
    return {mobiles[int(at) - 1]: by.decode() for at, by in zip(found[::2], found[1::2], strict=True)}


def database_guard(
    session: Session, key: str, mobiles: Sequence[str], batch_id: int, window: int, now: float, dry_run: bool
) -> dict[str, str]:
    """Guard ``mobiles`` in ``recent_contents``, in the session's transaction: those already
    guarded, each with the earlier batch's id."""
    at = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    ordered = sorted(mobiles)  # rows locked in one order: two sends cannot deadlock on a block
    if not dry_run:
        until = datetime.fromtimestamp(now + window, UTC).replace(tzinfo=None)
        taken = upsert_numbers(
            session,
            RecentContent,
            ordered,
            {"digest": key, "batch_id": batch_id, "expires_at": until},
            keys=("mobile", "digest"),
            update="batch_id = excluded.batch_id, expires_at = excluded.expires_at",
            where="recent_contents.expires_at <= :now",
            params={"now": at},
        )
        ordered = sorted(set(ordered) - set(taken))
    if not ordered:
        return {}
    found = session.execute(
        select(RecentContent.mobile, RecentContent.batch_id).where(
            RecentContent.digest == key, RecentContent.mobile.in_(ordered), RecentContent.expires_at > at
        )
    )
    return {mobile: str(earlier) for mobile, earlier in found}

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
  window), a hash of the numbers guarded in it (``smsq:dup:DIGEST:BUCKET``: number ->
  the batch that guards it) and a hash of those batches (``smsq:dup:DIGEST:BUCKET:sends``:
  batch -> the time of its last block). A number is a duplicate when another batch guards
  it in the current or the previous bucket and that batch's last block is less than a
  window old (so a number is guarded from the send's last block, a few seconds at most
  after its own). A block of numbers is one Lua script, one round trip, whose cost is per
  number, never per earlier send of the text: a notice sent to one number at a time, 6,000
  times in a window, costs each send 0.3 ms (a set per send, looked up one by one, had
  cost the last of them 24 ms of Redis time). A text no other send guards (a campaign's)
  is only added, never looked up. (A key per number cost 5 µs a number: a million-number
  campaign 13 times a raw COPY.) A long list's blocks are checked one block ahead of the
  intake, in a thread (tasks/intake.py ``_admitted_ahead``): the script's Redis time
  (about 2 µs a number on a 2-core host) overlaps the reading of the list and its COPY.
  Two racing sends cannot both take a number. Keys live two windows; a million guarded
  numbers hold about 64 MB of Redis.
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
# (unless dry). Every step costs per number, never per earlier send of the text: a text
# sent to one number at a time, thousands of times a window, costs each send the same.
# Commands take at most STEP fields: Lua's unpack has a bounded stack.
_GUARD = """
local dry, digest, batch = ARGV[1] == '1', ARGV[2], ARGV[3]
local window, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local bucket = math.floor(now / window)
local numbers = {}
for number in string.gmatch(ARGV[6], '[^,]+') do numbers[#numbers + 1] = number end
local STEP, n = 2000, #numbers
local base = 'smsq:dup:' .. digest .. ':'
local guarded, sends = base .. bucket, base .. bucket .. ':sends'
-- Another send of this text in this bucket or the one before? None (a campaign's text new
-- to Redis, or this send's own later blocks): the numbers are only added, never looked up.
local others = false
for _, b in ipairs({bucket, bucket - 1}) do
  local count = redis.call('HLEN', base .. b .. ':sends')
  if count > 1 or (count == 1 and redis.call('HEXISTS', base .. b .. ':sends', batch) == 0) then
    others = true
  end
end
-- A number found guarded by another send is a duplicate while that send's last block is
-- less than a window old (every send of this bucket is; one of the bucket before may not be).
local live = {}
local function guards(b, by)
  if by == batch then return false end
  local key = b .. ':' .. by
  if live[key] == nil then
    local at = redis.call('HGET', base .. b .. ':sends', by)
    live[key] = at ~= false and tonumber(at) > now - window
  end
  return live[key]
end
local out, fresh = {}, 0
for from = 0, n - 1, STEP do
  local fields = {unpack(numbers, from + 1, math.min(from + STEP, n))}
  local hits = {}
  if others then
    for _, b in ipairs({bucket, bucket - 1}) do
      local found = redis.call('HMGET', base .. b, unpack(fields))
      for j = 1, #fields do
        if not hits[j] and found[j] and guards(b, found[j]) then hits[j] = found[j] end
      end
    end
  end
  local entries = {}
  for j = 1, #fields do
    if hits[j] then
      out[#out + 1] = from + j
      out[#out + 1] = hits[j]
    elseif not dry then
      entries[#entries + 1] = fields[j]
      entries[#entries + 1] = batch
    end
  end
  if #entries > 0 then
    redis.call('HSET', guarded, unpack(entries))
    fresh = fresh + #entries / 2
  end
end
if fresh > 0 then
  redis.call('HSET', sends, batch, now)
  redis.call('EXPIRE', sends, 2 * window + 1)
  redis.call('EXPIRE', guarded, 2 * window + 1)
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

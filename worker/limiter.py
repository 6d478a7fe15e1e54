"""Per-account rate limits shared by every worker: exact, and never a sleep.

Vendors count calls per second. So the limit is a sliding-window log: a call
may start only when fewer than ``limit`` calls started in the last ``window``
seconds (see ``window_for``); the vendor then never sees more than ``rate``
calls in any 1-second window, start-up included (a token bucket that starts
full lets twice the rate through in the first second).

``try_take`` never waits. It either takes a slot now (and returns a ticket
that ``give_back`` can return, when the call does not happen after all) or
says how long to come back after. The slot is taken before the chunk is
claimed (a refused chunk costs no database work), so the claim's time lies
between the two; ``stamp`` moves the slot to the moment the call really
starts, and the window counts what the vendor counts. The caller gives its chunk back to the
queue for that long and its worker slot takes other work: a throttled
account never holds a slot another account's chunk could use.

The answer to come back after is spread out: every refused caller of an
account gets the next free place in a line (one ``window / limit`` apart), so
a backlog of a throttled account returns at the pace it can be sent instead
of all at once. A caller refused when a slot frees within half a place (one
that came back for its place a moment early) is told when the next slot frees
instead. The line is only a hint for refused callers; the window alone
decides who may call.

A caller that may ``jump`` the line (an OTP) and finds no free slot books the
next one: its ticket goes into the log at the moment that slot frees, and it
is told to come back then (``Taken.booking``). Being told was not enough: a
blast of the same account has callers coming back all the time, and the one
that asked at the moment the slot freed took it, so the OTP was refused again
and again. A booked entry counts in the window like any start, so every other
caller is refused until after it; with ``k`` bookings ahead, the next one goes
where the ``k + 1``-th oldest entry leaves the window (the ``limit``-th newest
entry plus a window), so two OTPs refused together book two slots and never
more than ``limit`` entries share a window. The caller back with its booking
``redeem``s it: back early (clock skew, a countdown rounded down), it is told
the rest of the wait and keeps the booking, because an entry moved from its
booked time to an earlier now could put ``limit + 1`` starts in one window;
back on time, the slot is its; back so late that the booking left the window,
it asks again like any jumping caller. Every ``redeem`` trades the booking for
a new ticket, so a booking serves once: a message delivered twice cannot take,
or give back, the slot the first delivery used. A booking never redeemed costs
one slot for one window (it leaves the log like any start); ``give_back``
frees it at once. Moving an entry later (``stamp``, or a late ``redeem``) is
checked against the whole log, since a booking may rely on that entry leaving
the window when it was due to.

An account of 20 calls a window or more keeps one call in twenty
(``PRIORITY_SHARE``) for jumping callers: other callers are refused from
``limit - limit // 20`` entries on. Behind a blast of its own account an OTP
then nearly always finds a call free at once; booking is for when OTPs come
faster than the reserve.

Distributed mode keeps the log in Redis (Lua scripts, on Redis' own clock,
so that workers on several hosts agree) following ``SlidingWindow``; embedded
mode has one worker process, so an in-process log is the same thing.
"""
from __future__ import annotations

import bisect
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

# Between taking a slot and the request reaching the vendor there are a quick
# claim (up to half the margin; a slower one stamps the slot again), a thread
# switch and a network hop, which do not take the same time for every call. A
# window a little longer than the vendor's second keeps two calls a second
# apart at our end from arriving closer together at the vendor's.
WINDOW_MARGIN = 0.05
# A booking redeemed this little before its time keeps its booked place (the
# call starts that much early, well inside the margin); earlier, it waits.
EARLY = 0.002
# One call in this many of an account's window (from 20 a window up) is kept for callers
# that may jump (OTPs): bulk callers stop at limit - limit // PRIORITY_SHARE, so an OTP
# behind a blast of its own account nearly always finds a call free at once, instead of
# booking one a few hundred milliseconds away. Slower accounts keep all their calls for
# bulk (a reserve of 1 in 5 would cost a fifth of their rate).
PRIORITY_SHARE = 20
# Float rounding of "a start plus a window": entries that much less than a
# window apart count as a window apart (and one that much short of leaving it
# has left).
SLACK = 1e-6


def window_for(rate: float) -> tuple[int, float]:
    """``(limit, window)``: at most ``limit`` call starts in any ``window`` seconds.

    ``20/s`` -> 20 in 1 s; ``30/m`` (0.5/s) -> 1 in 2 s. A rate of 2.5/s
    allows 2 in any second: a third would be three calls in one vendor second."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    if rate >= 1:
        return int(math.floor(rate + 1e-9)), 1.0 + WINDOW_MARGIN
    return 1, 1.0 / rate + WINDOW_MARGIN


@dataclass(frozen=True)
class Taken:
    """A slot taken (``ticket`` set), or when to ask again (``wait`` seconds);
    ``booking``: the ticket of a slot booked for then, to ``redeem`` on return."""

    ticket: str | None
    wait: float = 0.0
    booking: str | None = None

    @property
    def ok(self) -> bool:
        return self.ticket is not None


class Limiter(Protocol):
    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        """Take one call's slot for ``account`` now, or say how long to wait; never sleeps.
        ``jump``: book the next slot that frees, ahead of the line (an OTP)."""

    def redeem(self, account: str, rate: float, booking: str) -> Taken:
        """Back with a booking: the slot, the rest of the wait when back early (the booking
        kept, under a new ticket), or, the booking lost, what ``try_take`` with ``jump``
        says. A booking serves once: redeemed again, it is lost."""

    def give_back(self, account: str, ticket: str) -> None:
        """The call for this slot (or booking) will not happen: free the slot."""

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        """The call for this slot starts now; False when the slot was lost meanwhile
        (it waited longer than the window, or a booking relies on its leaving the
        window when it was due to) and the call must not start."""


class SlidingWindow:
    """One account's log of call starts, for the in-process limiter (and the
    reference the Redis scripts follow)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.bulk_limit = limit - limit // PRIORITY_SHARE  # the rest is kept for jumping callers
        self.starts: list[tuple[float, str]] = []  # (start, ticket) in time order; bookings lie ahead
        self.line_end = 0.0  # the last place given to a refused caller

    def _prune(self, now: float) -> None:
        gone = 0
        while gone < len(self.starts) and self.starts[gone][0] <= now - self.window + SLACK:
            gone += 1
        del self.starts[:gone]

    def _add(self, at: float, ticket: str) -> None:
        bisect.insort(self.starts, (at, ticket))

    def _fits(self, at: float) -> bool:
        """One more start at ``at`` leaves every window with ``limit`` starts or fewer:
        no ``limit`` entries within a window of each other share one with ``at``."""
        if len(self.starts) < self.limit:
            return True
        near = [start for start, _ in self.starts if at - self.window < start < at + self.window]
        return all(near[i + self.limit - 1] - near[i] >= self.window - SLACK
                   for i in range(len(near) - self.limit + 1))

    def try_take(self, now: float, ticket: str, jump: bool = False) -> Taken:
        self._prune(now)
        cap = self.limit if jump else self.bulk_limit
        if len(self.starts) < cap:
            self._add(now, ticket)
            return Taken(ticket)
        # the next slot: when the cap-th newest entry (bookings included) leaves the window
        free_at, step = self.starts[-cap][0] + self.window, self.window / self.limit
        if jump:
            self._add(free_at, ticket)
            return Taken(None, free_at - now, booking=ticket)
        if free_at - now <= step / 2:
            return Taken(None, free_at - now)
        self.line_end = max(free_at, self.line_end + step)
        return Taken(None, self.line_end - now)

    def redeem(self, now: float, booking: str, ticket: str) -> Taken:
        """The booking is traded for ``ticket`` whatever the answer: a booking serves once
        (a message delivered twice cannot find, and give back, the slot the first used)."""
        self._prune(now)
        booked = next((start for start, held in self.starts if held == booking), None)
        if booked is None:  # it left the window unused (or was given back): ask again
            return self.try_take(now, ticket, jump=True)
        self.give_back(booking)
        if booked - now > EARLY:  # back early: the booking stands
            self._add(booked, ticket)
            return Taken(None, booked - now, booking=ticket)
        if now <= booked or self._fits(now):
            self._add(max(now, booked), ticket)
            return Taken(ticket)
        return self.try_take(now, ticket, jump=True)  # back late, and its place was needed meanwhile

    def give_back(self, ticket: str) -> None:
        self.starts = [entry for entry in self.starts if entry[1] != ticket]

    def stamp(self, now: float, ticket: str) -> bool:
        self._prune(now)  # a slot kept past its window is lost: others may have taken its place
        self.give_back(ticket)
        if self._fits(now):
            self._add(now, ticket)
            return True
        return False


class LocalLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[str, SlidingWindow] = {}

    def _log(self, account: str, rate: float) -> SlidingWindow:
        limit, window = window_for(rate)
        log = self._logs.get(account)
        if log is None or (log.limit, log.window) != (limit, window):
            log = self._logs[account] = SlidingWindow(limit, window)
        return log

    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        with self._lock:
            return self._log(account, rate).try_take(self._clock(), uuid.uuid4().hex, jump)

    def redeem(self, account: str, rate: float, booking: str) -> Taken:
        with self._lock:
            return self._log(account, rate).redeem(self._clock(), booking, uuid.uuid4().hex)

    def give_back(self, account: str, ticket: str) -> None:
        with self._lock:
            log = self._logs.get(account)
            if log is not None:
                log.give_back(ticket)

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        with self._lock:
            log = self._logs.get(account)
            return log is not None and log.stamp(self._clock(), ticket)


# What the scripts share: KEYS: the log (sorted set: ticket -> start time), the
# line's end. ARGV: limit, window, ticket, ... Times from Redis' TIME: one clock for
# all hosts. Each function follows SlidingWindow's method of the same name.
# Answers: {TAKEN, '0'}, {REFUSED, wait} or {BOOKED, wait}.
_COMMON = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = math.ceil(window) + 60
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window + %(slack)r)

local function add(at, ticket)
  redis.call('ZADD', KEYS[1], at, ticket)
  local newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(math.max(newest - now, 0)) + ttl)
end

local function fits(at)
  if redis.call('ZCARD', KEYS[1]) < limit then
    return true
  end
  local near, log = {}, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 2, #log, 2 do
    local start = tonumber(log[i])
    if start > at - window and start < at + window then
      near[#near + 1] = start
    end
  end
  for i = 1, #near - limit + 1 do
    if near[i + limit - 1] - near[i] < window - %(slack)r then
      return false
    end
  end
  return true
end

local function try_take(ticket, jump)
  local n = redis.call('ZCARD', KEYS[1])
  local cap = limit
  if not jump then
    cap = limit - math.floor(limit / %(share)d)
  end
  if n < cap then
    add(now, ticket)
    return {%(taken)d, '0'}
  end
  local free_at = tonumber(redis.call('ZRANGE', KEYS[1], n - cap, n - cap, 'WITHSCORES')[2]) + window
  if jump then
    add(free_at, ticket)
    return {%(booked)d, tostring(free_at - now)}
  end
  local step = window / limit
  if free_at - now <= step / 2 then
    return {%(refused)d, tostring(free_at - now)}
  end
  local line_end = tonumber(redis.call('GET', KEYS[2]) or '0')
  line_end = math.max(free_at, line_end + step)
  redis.call('SET', KEYS[2], tostring(line_end), 'EX', math.ceil(line_end - now) + ttl)
  return {%(refused)d, tostring(line_end - now)}
end
"""
_TAKEN, _REFUSED, _BOOKED = 0, 1, 2
_COMMON %= {"slack": SLACK, "taken": _TAKEN, "refused": _REFUSED, "booked": _BOOKED, "share": PRIORITY_SHARE}

# ARGV: limit, window, ticket, jump (1/0).
_TRY_TAKE = _COMMON + "return try_take(ARGV[3], ARGV[4] == '1')"

# ARGV: limit, window, the booking, the ticket it is traded for.
_REDEEM = _COMMON + """
local booked = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not booked then
  return try_take(ARGV[4], true)
end
booked = tonumber(booked)
redis.call('ZREM', KEYS[1], ARGV[3])
if booked - now > %r then
  add(booked, ARGV[4])
  return {%d, tostring(booked - now)}
end
if now <= booked or fits(now) then
  add(math.max(now, booked), ARGV[4])
  return {%d, '0'}
end
return try_take(ARGV[4], true)
""" % (EARLY, _BOOKED, _TAKEN)

# ARGV: limit, window, ticket. Returns 1 when the slot is at now, 0 when it is lost.
_STAMP = _COMMON + """
redis.call('ZREM', KEYS[1], ARGV[3])
if fits(now) then
  add(now, ARGV[3])
  return 1
end
return 0
"""


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis  # start-up: 65 modules, 60-120 ms (-X importtime), and embedded mode never needs it

        self._redis = redis.Redis.from_url(url)
        self._try_take = self._redis.register_script(_TRY_TAKE)
        self._redeem = self._redis.register_script(_REDEEM)
        self._stamp = self._redis.register_script(_STAMP)

    @staticmethod
    def _keys(account: str) -> list[str]:
        return [f"smsq:rate:{account}:log", f"smsq:rate:{account}:line"]

    @staticmethod
    def _answer(reply: list, ticket: str) -> Taken:
        kind, wait = int(reply[0]), float(reply[1])
        if kind == _TAKEN:
            return Taken(ticket)
        return Taken(None, wait, booking=ticket if kind == _BOOKED else None)

    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        limit, window = window_for(rate)
        ticket = uuid.uuid4().hex
        return self._answer(self._try_take(keys=self._keys(account), args=[limit, repr(window), ticket, int(jump)]),
                            ticket)

    def redeem(self, account: str, rate: float, booking: str) -> Taken:
        limit, window = window_for(rate)
        ticket = uuid.uuid4().hex
        return self._answer(self._redeem(keys=self._keys(account), args=[limit, repr(window), booking, ticket]),
                            ticket)

    def give_back(self, account: str, ticket: str) -> None:
        self._redis.zrem(self._keys(account)[0], ticket)

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        limit, window = window_for(rate)
        return bool(self._stamp(keys=self._keys(account), args=[limit, repr(window), ticket]))

    def load_scripts(self) -> None:
        """Load the scripts into Redis now (worker start-up), so that the first chunk's
        slot does not pay for NOSCRIPT and a second round trip. (A Redis restarted empty
        later is handled as before: redis-py loads a script again on NOSCRIPT.)"""
        for script in (self._try_take, self._redeem, self._stamp):
            self._redis.script_load(script.script)


_limiter: Limiter | None = None
_limiter_lock = threading.Lock()


def limiter(redis_url: str | None) -> Limiter:
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = RedisLimiter(redis_url) if redis_url else LocalLimiter()
        return _limiter


def reset() -> None:
    global _limiter
    with _limiter_lock:
        _limiter = None

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
that came back for its place a moment early) and a caller that may ``jump``
the line (an OTP) are told when the next slot frees instead. The line is only
a hint for refused callers; the window alone decides who may call.

Distributed mode keeps the log in Redis (a Lua script, on Redis' own clock,
so that workers on several hosts agree); embedded mode has one worker process,
so an in-process log is the same thing.
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

# Between taking a slot and the request reaching the vendor there are a quick
# claim (up to half the margin; a slower one stamps the slot again), a thread
# switch and a network hop, which do not take the same time for every call. A
# window a little longer than the vendor's second keeps two calls a second
# apart at our end from arriving closer together at the vendor's.
WINDOW_MARGIN = 0.05


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
    """A slot taken (``ticket`` set), or when to ask again (``wait`` seconds)."""

    ticket: str | None
    wait: float = 0.0

    @property
    def ok(self) -> bool:
        return self.ticket is not None


class Limiter(Protocol):
    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        """Take one call's slot for ``account`` now, or say how long to wait; never sleeps.
        ``jump``: come back when the next slot frees, ahead of the line (an OTP)."""

    def give_back(self, account: str, ticket: str) -> None:
        """The call for this slot will not happen: free the slot."""

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        """The call for this slot starts now; False when the slot was lost meanwhile
        (it waited longer than the window) and the call must not start."""


class SlidingWindow:
    """One account's log of call starts, for the in-process limiter (and the
    reference the Redis script follows)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.starts: deque[tuple[float, str]] = deque()
        self.line_end = 0.0  # the last place given to a refused caller

    def _prune(self, now: float) -> None:
        while self.starts and self.starts[0][0] <= now - self.window:
            self.starts.popleft()

    def try_take(self, now: float, ticket: str, jump: bool = False) -> Taken:
        self._prune(now)
        if len(self.starts) < self.limit:
            self.starts.append((now, ticket))
            return Taken(ticket)
        free_at, step = self.starts[0][0] + self.window, self.window / self.limit
        if jump or free_at - now <= step / 2:
            return Taken(None, free_at - now)
        self.line_end = max(free_at, self.line_end + step)
        return Taken(None, self.line_end - now)

    def give_back(self, ticket: str) -> bool:
        kept = deque(entry for entry in self.starts if entry[1] != ticket)
        found = len(kept) < len(self.starts)
        self.starts = kept
        return found

    def stamp(self, now: float, ticket: str) -> bool:
        self._prune(now)  # a slot kept past its window is lost: others may have taken its place
        if self.give_back(ticket) or len(self.starts) < self.limit:
            self.starts.append((now, ticket))  # the newest start: the log stays in time order
            return True
        return False


class LocalLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[str, SlidingWindow] = {}

    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        limit, window = window_for(rate)
        with self._lock:
            log = self._logs.get(account)
            if log is None or (log.limit, log.window) != (limit, window):
                log = self._logs[account] = SlidingWindow(limit, window)
            return log.try_take(self._clock(), uuid.uuid4().hex, jump)

    def give_back(self, account: str, ticket: str) -> None:
        with self._lock:
            log = self._logs.get(account)
            if log is not None:
                log.give_back(ticket)

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        with self._lock:
            log = self._logs.get(account)
            return log is not None and log.stamp(self._clock(), ticket)


# KEYS: the log (sorted set: ticket -> start time), the line's end.
# ARGV: limit, window, ticket, jump (1/0). Times from Redis' TIME: one clock for all hosts.
_TRY_TAKE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = math.ceil(window) + 60
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('EXPIRE', KEYS[1], ttl)
  return '0'
end
local free_at = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + window
local step = window / limit
if ARGV[4] == '1' or free_at - now <= step / 2 then
  return tostring(free_at - now)
end
local line_end = tonumber(redis.call('GET', KEYS[2]) or '0')
line_end = math.max(free_at, line_end + step)
redis.call('SET', KEYS[2], tostring(line_end), 'EX', math.ceil(line_end - now) + ttl)
return tostring(line_end - now)
"""


# KEYS: the log. ARGV: limit, window, ticket. The slot moves to now when it is
# still held; a slot that expired meanwhile is taken afresh if one is free.
_STAMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  return 1
end
return 0
"""


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._try_take = self._redis.register_script(_TRY_TAKE)
        self._stamp = self._redis.register_script(_STAMP)

    @staticmethod
    def _keys(account: str) -> list[str]:
        return [f"smsq:rate:{account}:log", f"smsq:rate:{account}:line"]

    def try_take(self, account: str, rate: float, *, jump: bool = False) -> Taken:
        limit, window = window_for(rate)
        ticket = uuid.uuid4().hex
        wait = float(self._try_take(keys=self._keys(account), args=[limit, repr(window), ticket, int(jump)]))
        return Taken(ticket) if wait <= 0 else Taken(None, wait)

    def give_back(self, account: str, ticket: str) -> None:
        self._redis.zrem(self._keys(account)[0], ticket)

    def stamp(self, account: str, rate: float, ticket: str) -> bool:
        limit, window = window_for(rate)
        return bool(self._stamp(keys=self._keys(account)[:1], args=[limit, repr(window), ticket]))


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

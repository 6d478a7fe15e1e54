"""Per-account rate limits shared by every worker.

Celery's own ``rate_limit`` counts per worker process; a vendor counts per
account. Distributed mode keeps one token bucket per account in Redis (a Lua
script makes take-a-token atomic across hosts); embedded mode has one worker
process, so an in-process bucket is the same thing.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

_TAKE = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
  tokens = tokens - 1
end
redis.call('HSET', key, 'tokens', tokens, 'at', now)
redis.call('EXPIRE', key, math.ceil(burst / rate) + 60)
return tostring(wait)
"""


class Limiter(Protocol):
    def acquire(self, account: str, rate: float) -> float:
        """Take one call's token for ``account``; sleep as needed; return seconds waited."""


class LocalLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, at)

    def acquire(self, account: str, rate: float) -> float:
        burst = max(1.0, rate)
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(account, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate) - 1
            self._buckets[account] = (tokens, now)
        wait = max(0.0, -tokens / rate)
        if wait:
            time.sleep(wait)
        return wait


class RedisLimiter:
    """A reservation bucket: a caller takes its token now and sleeps until it is due."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._take = self._redis.register_script(_TAKE)

    def acquire(self, account: str, rate: float) -> float:
        burst = max(1.0, rate)
        # Redis' clock, not ours: workers on several hosts agree on it.
        sec, usec = self._redis.time()
        wait = float(self._take(keys=[f"smsq:rate:{account}"], args=[rate, burst, sec + usec / 1e6]))
        if wait > 0:
            time.sleep(wait)
        return wait


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

"""The per-account limiter: never more than the rate in any 1-second window the
vendor can count, start-up included, and close to the rate under load.

The window logic runs on a fake clock; the shared one runs on the real Redis
with threads in several processes and is judged by Redis' own timestamps."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis

from smsq.worker.limiter import WINDOW_MARGIN, LocalLimiter, RedisLimiter, window_for

from .conftest import REDIS_URL


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def busiest_second(starts: list[float], width: float = 1.0) -> int:
    """The most call starts in any window ``[t, t + width)``."""
    starts = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


def drive(limiter, clock: FakeClock, rate: float, seconds: float, callers: int = 6) -> list[float]:
    """``callers`` that each ask again as soon as they are told to (never earlier than 1 ms)."""
    starts: list[float] = []
    next_try = [clock.now] * callers
    end = clock.now + seconds
    while True:
        who = min(range(callers), key=next_try.__getitem__)
        clock.now = next_try[who]
        if clock.now >= end:
            return starts
        taken = limiter.try_take("acct", rate)
        if taken.ok:
            starts.append(clock.now)
            next_try[who] = clock.now + 0.2  # the vendor call
        else:
            assert taken.wait > 0
            next_try[who] = clock.now + max(0.001, taken.wait)


@pytest.mark.parametrize("text, rate, limit, window", [
    ("5/s", 5.0, 5, 1.0), ("600/m", 600 / 60, 10, 1.0), ("30/m", 30 / 60, 1, 2.0), ("2.5/s", 2.5, 2, 1.0),
    ("1/s", 1.0, 1, 1.0)])
def test_window_for_whole_and_fractional_rates(text, rate, limit, window):
    assert window_for(rate) == (limit, pytest.approx(window + WINDOW_MARGIN)), text


@pytest.mark.parametrize("rate", [5.0, 10.0, 1.0, 0.5, 2.5])
def test_no_second_ever_sees_more_than_the_rate_and_the_mean_is_close_to_it(rate):
    clock = FakeClock()
    starts = drive(LocalLimiter(clock), clock, rate, seconds=20)
    limit, window = window_for(rate)
    if rate >= 1:
        assert busiest_second(starts) <= int(rate)
    else:
        assert busiest_second(starts, 1 / rate) == 1  # 30/m: one call in any 2 s
    assert busiest_second(starts[:limit + 1], 1.0) <= max(1, int(rate))  # start-up: no full bucket to spend
    assert len(starts) / 20 >= 0.9 * limit / (window - WINDOW_MARGIN)


def test_refused_callers_are_told_to_come_back_one_place_apart():
    """A backlog comes back at the pace it can be sent, not all at once."""
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    waits = [limiter.try_take("acct", 1.0).wait for _ in range(4)]
    assert waits == pytest.approx([1.05, 2.1, 3.15, 4.2])
    clock.now += 1.05  # the window is free again: the first to ask takes it, line or not
    assert limiter.try_take("acct", 1.0).ok


def test_a_caller_back_a_moment_early_and_an_otp_are_not_sent_to_the_end_of_the_line():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    assert [limiter.try_take("acct", 1.0).wait for _ in range(3)] == pytest.approx([1.05, 2.1, 3.15])
    assert limiter.try_take("acct", 1.0, jump=True).wait == pytest.approx(1.05)  # the OTP: the next free slot
    clock.now += 1.0  # the first in line, 50 ms early (its slot was stamped later than it was taken)
    assert limiter.try_take("acct", 1.0).wait == pytest.approx(0.05)


def test_a_slot_given_back_is_free_again_and_accounts_do_not_share():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    first = limiter.try_take("a", 1.0)
    assert first.ok and not limiter.try_take("a", 1.0).ok
    assert limiter.try_take("b", 1.0).ok  # another account's window
    limiter.give_back("a", first.ticket)
    assert limiter.try_take("a", 1.0).ok


RATE, SECONDS = 5.0, 3.2


def _hammer(url: str, account: str, threads: int, until: float, out) -> None:
    """Threads that ask as fast as they are told; each start as Redis timestamped it."""
    limiter = RedisLimiter(url)
    scores = redis.Redis.from_url(url)
    starts: list[float] = []

    def run():
        while time.time() < until:
            taken = limiter.try_take(account, RATE)
            if taken.ok:
                starts.append(scores.zscore(f"smsq:rate:{account}:log", taken.ticket))
            else:
                time.sleep(min(taken.wait, 0.01))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(starts)


def test_redis_limiter_holds_across_processes_and_threads():
    account = f"limiter-test-{time.time_ns()}"
    until = time.time() + SECONDS
    out = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_hammer, args=(REDIS_URL, account, 3, until, out))
             for _ in range(3)]
    for p in procs:
        p.start()
    _hammer(REDIS_URL, account, 3, until, out)
    starts = [s for _ in range(len(procs) + 1) for s in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert None not in starts
    assert busiest_second(starts) <= RATE
    busy = max(starts) - min(starts)  # spawned processes start late; judge the time they all ran
    assert len(starts) >= 0.9 * RATE * busy


def test_a_slot_counts_from_the_call_not_from_the_claim_before_it():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    slot = limiter.try_take("acct", 1.0)
    clock.now += 0.3  # the claim
    assert limiter.stamp("acct", 1.0, slot.ticket)
    clock.now += 1.0  # a second after the claim, 0.95 s after the call: still taken
    assert not limiter.try_take("acct", 1.0).ok
    clock.now += 0.06
    assert limiter.try_take("acct", 1.0).ok


def test_a_slot_kept_past_its_window_is_lost_when_another_took_the_place():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    slow = limiter.try_take("acct", 1.0)
    clock.now += 2.0  # a claim that took two seconds
    assert limiter.try_take("acct", 1.0).ok  # the window is free: another caller takes it
    assert not limiter.stamp("acct", 1.0, slow.ticket)


def test_redis_stamp_moves_the_slot_to_now():
    account = f"limiter-stamp-{time.time_ns()}"
    limiter = RedisLimiter(REDIS_URL)
    scores = redis.Redis.from_url(REDIS_URL)
    slot = limiter.try_take(account, 1.0)
    taken_at = scores.zscore(f"smsq:rate:{account}:log", slot.ticket)
    time.sleep(0.2)
    assert limiter.stamp(account, 1.0, slot.ticket)
    assert scores.zscore(f"smsq:rate:{account}:log", slot.ticket) >= taken_at + 0.2
    assert not limiter.try_take(account, 1.0).ok


def test_redis_limiter_lines_up_refused_callers_and_lets_an_otp_jump():
    account = f"limiter-line-{time.time_ns()}"
    limiter = RedisLimiter(REDIS_URL)
    assert limiter.try_take(account, 1.0).ok
    first, second = (limiter.try_take(account, 1.0).wait for _ in range(2))
    otp = limiter.try_take(account, 1.0, jump=True).wait
    assert 0.9 < first < 1.06 and second == pytest.approx(first + 1.05, abs=0.05) and otp <= first

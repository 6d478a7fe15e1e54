"""The shared per-account limiter on the real Redis: never more than the rate in any
1-second window the vendor can count, with threads in several processes, judged by
Redis' own timestamps. The window logic on a fake clock: tests/unit/test_limiter.py."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis

from smsq.worker.limiter import LocalLimiter, RedisLimiter, window_for

from ..conftest import REDIS_URL, FakeClock, busiest_second

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
    procs = [
        multiprocessing.get_context("spawn").Process(target=_hammer, args=(REDIS_URL, account, 3, until, out))
        for _ in range(3)
    ]
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


def test_redis_otps_book_the_next_slots_and_the_blast_waits_for_them():
    account = f"limiter-book-{time.time_ns()}"
    limiter = RedisLimiter(REDIS_URL)
    scores = redis.Redis.from_url(REDIS_URL)
    key = f"smsq:rate:{account}:log"
    starts = []
    for _ in range(5):
        taken = limiter.try_take(account, 5.0)
        assert taken.ok
        starts.append(scores.zscore(key, taken.ticket))
        time.sleep(0.1)
    first, second = (limiter.try_take(account, 5.0, jump=True) for _ in range(2))
    assert first.booking and second.booking and first.booking != second.booking
    assert scores.zscore(key, first.booking) == pytest.approx(starts[0] + 1.05, abs=1e-6)
    assert scores.zscore(key, second.booking) == pytest.approx(starts[1] + 1.05, abs=1e-6)
    early = limiter.redeem(account, 5.0, first.booking)  # straight back: it waits, the booking kept
    assert not early.ok and early.booking and 0 < early.wait <= first.wait
    assert scores.zscore(key, first.booking) is None  # traded for a new ticket, at the same time
    assert scores.zscore(key, early.booking) == pytest.approx(starts[0] + 1.05, abs=1e-6)
    time.sleep(early.wait)
    assert not limiter.try_take(account, 5.0).ok  # the booked slot is not the blast's
    assert limiter.redeem(account, 5.0, early.booking).ok
    twice = limiter.redeem(account, 5.0, early.booking)  # a booking serves once: this one books anew
    assert not twice.ok and twice.booking
    limiter.give_back(account, twice.booking)
    limiter.give_back(account, second.booking)
    seconds, micros = scores.time()
    time.sleep(max(0.0, starts[1] + 1.05 + 0.01 - seconds - micros / 1e6))
    assert limiter.try_take(account, 5.0).ok  # the second booking's slot, given back


def test_redis_booking_left_unused_past_its_window_is_asked_again():
    account = f"limiter-late-{time.time_ns()}"
    limiter = RedisLimiter(REDIS_URL)
    assert limiter.try_take(account, 1.0).ok
    lost = limiter.try_take(account, 1.0, jump=True)
    assert not lost.ok and 0.9 < lost.wait <= 1.05
    time.sleep(lost.wait + 1.05 + 0.02)
    assert limiter.try_take(account, 1.0).ok  # the booking has left the window: the blast has the slot
    again = limiter.redeem(account, 1.0, lost.booking)
    assert not again.ok and again.booking and 0.9 < again.wait <= 1.05


def _otps(url: str, account: str, until: float) -> tuple[list[float], list[tuple[float, float]]]:
    """OTPs one after another that book when refused and come back when told: each start
    as Redis timestamped it, and per OTP (how long it took, the first wait it was told)."""
    limiter = RedisLimiter(url)
    scores = redis.Redis.from_url(url)
    starts, took = [], []
    while time.time() < until - 1.2:
        asked = time.monotonic()
        taken = limiter.try_take(account, RATE, jump=True)
        told = taken.wait
        if not taken.ok:
            time.sleep(taken.wait)
            taken = limiter.redeem(account, RATE, taken.booking)
            assert taken.ok  # back on time: never refused a second time
        took.append((time.monotonic() - asked, told))
        starts.append(scores.zscore(f"smsq:rate:{account}:log", taken.ticket))
        time.sleep(0.23)
    return starts, took


def test_redis_otps_behind_their_own_accounts_blast_across_processes():
    account = f"limiter-otp-{time.time_ns()}"
    until = time.time() + SECONDS + 1.5
    out = multiprocessing.get_context("spawn").Queue()
    procs = [
        multiprocessing.get_context("spawn").Process(target=_hammer, args=(REDIS_URL, account, 3, until, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    time.sleep(1.5)  # the blast holds the rate limit
    otp_starts, took = _otps(REDIS_URL, account, until)
    starts = [s for _ in procs for s in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert None not in starts + otp_starts
    assert any(told > 0 for _, told in took)  # OTPs did find the account saturated
    assert all(seconds <= told + 0.2 for seconds, told in took)
    assert busiest_second(starts + otp_starts) <= RATE
    busy = max(starts) - min(starts)
    assert len(starts) + len(otp_starts) >= 0.9 * RATE * busy


@pytest.mark.parametrize("make", ["local", "redis"])
def test_a_fast_account_keeps_one_call_in_twenty_for_otps(make):
    """From 20 calls a window up, the blast stops at 95 %: an OTP then takes a call at once
    instead of booking one later; never more than the limit in the window either way."""
    from smsq.worker.limiter import PRIORITY_SHARE

    clock = FakeClock()
    limiter = LocalLimiter(clock) if make == "local" else RedisLimiter(REDIS_URL)
    account = f"limiter-share-{time.time_ns()}"
    limit, _ = window_for(100.0)
    reserve = limit // PRIORITY_SHARE
    assert reserve == 5
    bulk = [limiter.try_take(account, 100.0) for _ in range(limit)]
    assert sum(t.ok for t in bulk) == limit - reserve  # the blast is refused at 95
    refused = bulk[-1]
    assert not refused.ok and refused.booking is None and refused.wait > 0
    otps = [limiter.try_take(account, 100.0, jump=True) for _ in range(reserve + 1)]
    assert all(t.ok for t in otps[:reserve])  # five OTPs go at once
    assert not otps[-1].ok and otps[-1].booking  # the sixth books the next call that frees
    # A slow account keeps all its calls for its bulk.
    slow = f"{account}-slow"
    assert all(limiter.try_take(slow, 10.0).ok for _ in range(10))

"""The per-account limiter's window logic on a fake clock: never more than the rate in
any 1-second window the vendor can count, start-up included, and close to the rate
under load; OTPs booked ahead of the blast. The shared limiter on the real Redis:
tests/integration/test_limiter.py."""

from __future__ import annotations

import time

import pytest

from smsq.worker.limiter import WINDOW_MARGIN, LocalLimiter, window_for

from ..conftest import FakeClock, busiest_second


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


@pytest.mark.parametrize(
    "text, rate, limit, window",
    [
        ("5/s", 5.0, 5, 1.0),
        ("600/m", 600 / 60, 10, 1.0),
        ("30/m", 30 / 60, 1, 2.0),
        ("2.5/s", 2.5, 2, 1.0),
        ("1/s", 1.0, 1, 1.0),
    ],
)
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
    assert busiest_second(starts[: limit + 1], 1.0) <= max(1, int(rate))  # start-up: no full bucket to spend
    assert len(starts) / 20 >= 0.9 * limit / (window - WINDOW_MARGIN)


OTP_LATE = 0.001  # an OTP told to come back is back this much later (the broker's countdown)


def drive_with_otps(limiter, clock: FakeClock, rate: float, seconds: float, callers: int = 6):
    """``drive``'s callers, and OTPs one after another, each a while after the last one's
    call, that book when refused and come back when told to (``OTP_LATE`` after; a caller
    asking at the same moment asks first). Returns the callers' starts, the OTPs' starts,
    and per OTP how long it waited for its call and how long until a slot freed when it
    arrived (from the starts, not the limiter)."""
    limit, window = window_for(rate)
    starts: list[float] = []
    otp_starts: list[float] = []
    waits: list[tuple[float, float]] = []
    gaps = [g * window for g in (1.3, 0.77, 2.1, 0.41, 1.7)]  # arrivals at every phase of the blast
    next_try = [clock.now] * callers
    otp_at, booking, arrived, bound = clock.now + gaps[0], None, 0.0, 0.0
    end = clock.now + seconds
    while True:
        who = min(range(callers), key=next_try.__getitem__)
        clock.now = min(next_try[who], otp_at)
        if clock.now >= end:
            return starts, otp_starts, waits
        if otp_at < next_try[who]:
            if booking is None:  # an OTP arrives
                arrived = clock.now
                recent = sorted(s for s in starts + otp_starts if s > clock.now - window)
                bound = recent[-limit] + window - clock.now if len(recent) >= limit else 0.0
                taken = limiter.try_take("acct", rate, jump=True)
            else:  # back when told with its booking: never refused a second time
                taken = limiter.redeem("acct", rate, booking)
                assert taken.ok, f"an OTP back on time was refused again at {clock.now - 1000:.3f}"
            if taken.ok:
                otp_starts.append(clock.now)
                waits.append((clock.now - arrived, bound))
                booking, otp_at = None, clock.now + gaps[len(waits) % len(gaps)]
            else:
                assert taken.booking is not None and taken.wait > 0
                booking, otp_at = taken.booking, clock.now + taken.wait + OTP_LATE
            continue
        taken = limiter.try_take("acct", rate)
        if taken.ok:
            starts.append(clock.now)
            next_try[who] = clock.now + 0.2  # the vendor call
        else:
            assert taken.wait > 0 and taken.booking is None
            next_try[who] = clock.now + max(0.001, taken.wait)


@pytest.mark.parametrize("rate", [5.0, 10.0, 1.0, 0.5, 2.5])
def test_an_otp_behind_its_own_accounts_blast_gets_the_next_slot_that_frees(rate):
    """The blast's callers come back all the time; the one that asked when the slot
    freed used to take it, and the OTP was refused again and again."""
    clock = FakeClock()
    seconds = 60
    starts, otp_starts, waits = drive_with_otps(LocalLimiter(clock), clock, rate, seconds)
    limit, window = window_for(rate)
    assert len(waits) >= 10
    assert any(bound > 0 for _, bound in waits)  # OTPs did find the account saturated
    for took, bound in waits:
        assert took <= bound + OTP_LATE + 1e-6
    everything = starts + otp_starts
    if rate >= 1:
        assert busiest_second(everything) <= int(rate)
    else:
        assert busiest_second(everything, 1 / rate) == 1
    # the OTPs' calls are the account's too: bookings cost it none of its rate
    assert len(everything) / seconds >= 0.9 * limit / (window - WINDOW_MARGIN)
    assert len(starts) / seconds >= 0.9 * limit / (window - WINDOW_MARGIN) - len(otp_starts) / seconds


def test_two_otps_refused_together_book_two_slots_one_after_the_other():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    for _ in range(5):  # 5/s: starts at 1000.0, 1000.1, ... 1000.4
        assert limiter.try_take("acct", 5.0).ok
        clock.now += 0.1
    first, second = (limiter.try_take("acct", 5.0, jump=True) for _ in range(2))
    assert (first.ok, second.ok) == (False, False) and first.booking != second.booking
    assert (first.wait, second.wait) == pytest.approx((0.55, 0.65))  # 1000.0 and 1000.1 leave the window
    clock.now = 1001.05
    assert not limiter.try_take("acct", 5.0).ok  # the first booked slot is not the blast's
    assert limiter.redeem("acct", 5.0, first.booking).ok
    clock.now = 1001.15
    assert not limiter.try_take("acct", 5.0).ok
    assert limiter.redeem("acct", 5.0, second.booking).ok
    clock.now = 1001.25  # 1000.2 left: the blast's turn
    assert limiter.try_take("acct", 5.0).ok
    assert not limiter.try_take("acct", 5.0).ok


def test_otps_booked_on_a_one_call_window_go_one_window_apart():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    waits = [limiter.try_take("acct", 1.0, jump=True).wait for _ in range(3)]
    assert waits == pytest.approx([1.05, 2.1, 3.15])
    assert limiter.try_take("acct", 1.0).wait == pytest.approx(4.2)  # the blast after every booking


def test_an_otp_back_early_waits_for_its_booking_and_on_time_takes_it():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    booked = limiter.try_take("acct", 1.0, jump=True)
    clock.now += 0.8  # a countdown rounded down, or a clock ahead
    early = limiter.redeem("acct", 1.0, booked.booking)
    assert not early.ok and early.booking and early.wait == pytest.approx(0.25)  # the booking stands
    clock.now += 0.25
    assert limiter.redeem("acct", 1.0, early.booking).ok
    assert not limiter.try_take("acct", 1.0).ok


def test_a_booking_serves_once():
    """A message delivered twice: the second finds no booking, and giving back what it
    got does not free the slot the first one's call is in."""
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    booked = limiter.try_take("acct", 1.0, jump=True)
    clock.now += booked.wait
    assert limiter.redeem("acct", 1.0, booked.booking).ok
    again = limiter.redeem("acct", 1.0, booked.booking)
    assert not again.ok and again.wait == pytest.approx(1.05)  # a booking of its own
    limiter.give_back("acct", again.booking)  # its chunk was sent already: nothing to call
    clock.now += 0.5
    assert not limiter.try_take("acct", 1.0).ok  # the first one's call still counts


def test_a_booking_redeemed_late_moves_to_now_or_when_it_left_the_window_is_asked_again():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    late = limiter.try_take("acct", 1.0, jump=True)
    clock.now += 1.05 + 0.5  # half a window late: still held, and it counts from now
    assert limiter.redeem("acct", 1.0, late.booking).ok
    clock.now += 1.0
    assert not limiter.try_take("acct", 1.0).ok
    clock.now += 0.05
    assert limiter.try_take("acct", 1.0).ok
    lost = limiter.try_take("acct", 1.0, jump=True)  # booked for a window from now
    clock.now += lost.wait + 1.05 + 0.01  # back after its booking left the window
    assert limiter.try_take("acct", 1.0).ok  # the blast has it meanwhile
    again = limiter.redeem("acct", 1.0, lost.booking)  # asks again, ahead of the line: books anew
    assert not again.ok and again.booking and again.wait == pytest.approx(1.05)


def test_a_booking_given_back_frees_its_slot():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    booked = limiter.try_take("acct", 1.0, jump=True)
    assert limiter.try_take("acct", 1.0).wait == pytest.approx(2.1)
    limiter.give_back("acct", booked.booking)
    clock.now += 1.05
    assert limiter.try_take("acct", 1.0).ok


def test_a_stamp_that_would_crowd_a_booked_slot_loses_its_slot():
    """A booking takes the place of the oldest start when it leaves the window: that start
    may no longer move later (a claim slow enough to be the oldest start)."""
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    oldest = limiter.try_take("acct", 2.0)
    clock.now += 0.5
    newer = limiter.try_take("acct", 2.0)
    clock.now += 0.1
    booked = limiter.try_take("acct", 2.0, jump=True)
    assert booked.wait == pytest.approx(0.45)  # at 1001.05, when 1000.0 leaves
    assert limiter.stamp("acct", 2.0, newer.ticket)  # 1000.5 -> 1000.6: one window holds 1000.6 and 1001.05
    clock.now += 0.1
    assert not limiter.stamp("acct", 2.0, oldest.ticket)  # 1000.7 would make three with 1000.6 and 1001.05
    assert not limiter.try_take("acct", 2.0).ok
    clock.now = 1001.05
    assert limiter.redeem("acct", 2.0, booked.booking).ok


def test_refused_callers_are_told_to_come_back_one_place_apart():
    """A backlog comes back at the pace it can be sent, not all at once."""
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    waits = [limiter.try_take("acct", 1.0).wait for _ in range(4)]
    assert waits == pytest.approx([1.05, 2.1, 3.15, 4.2])
    clock.now += 1.05  # the window is free again: the first to ask takes it, line or not
    assert limiter.try_take("acct", 1.0).ok


def test_a_bulk_chunk_told_of_a_slot_moments_away_waits_for_it_in_its_worker_slot(monkeypatch):
    """Going back through the broker for 3 ms costs more than the nap; a longer wait
    (a place in the line) goes back and leaves the worker slot free."""
    from types import SimpleNamespace

    from smsq.tasks import send

    clock = FakeClock()
    bucket = LocalLimiter(clock)
    naps = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(send, "time", SimpleNamespace(monotonic=time.monotonic, sleep=nap))
    assert all(bucket.try_take("acct", 100.0).ok for _ in range(95))  # bulk's share of the window
    _, taken = send.take_slot(bucket, "acct", 100.0, "bulk", None)
    assert not taken.ok and taken.wait == pytest.approx(1.05) and naps == []  # a place in the line
    clock.now += 1.05 - 0.003  # the oldest start leaves the window in 3 ms
    _, taken = send.take_slot(bucket, "acct", 100.0, "bulk", None)
    assert taken.ok and naps == pytest.approx([0.003])


def test_a_caller_back_a_moment_early_and_an_otp_are_not_sent_to_the_end_of_the_line():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    assert limiter.try_take("acct", 1.0).ok
    assert [limiter.try_take("acct", 1.0).wait for _ in range(3)] == pytest.approx([1.05, 2.1, 3.15])
    clock.now += 1.0  # the first in line, 50 ms early (its slot was stamped later than it was taken)
    assert limiter.try_take("acct", 1.0).wait == pytest.approx(0.05)
    otp = limiter.try_take("acct", 1.0, jump=True)  # the OTP books the next free slot
    assert otp.booking and otp.wait == pytest.approx(0.05)


def test_a_slot_given_back_is_free_again_and_accounts_do_not_share():
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    first = limiter.try_take("a", 1.0)
    assert first.ok and not limiter.try_take("a", 1.0).ok
    assert limiter.try_take("b", 1.0).ok  # another account's window
    limiter.give_back("a", first.ticket)
    assert limiter.try_take("a", 1.0).ok


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

"""Per-number frequency caps (tasks/caps.py), the duplicate guard (tasks/duplicates.py) and
the refusal classes of ``smsq_rejected_total`` (tasks/rejections.py), with a fake clock.

The window arithmetic is pure; the checks run on a scratch SQLite database (their database
form; the Redis form, and two producer processes racing on PostgreSQL and on Redis, are
tests/integration/test_send_policy.py's)."""

from __future__ import annotations

import calendar

import pytest
from sqlalchemy import create_engine, select

from smsq.store.models import Base, NumberSends, RecentContent, RejectionCount
from smsq.tasks.caps import cap_check, cap_reason, window_end, window_no
from smsq.tasks.duplicates import digest, duplicate_check
from smsq.tasks.policy import compose
from smsq.tasks.rejections import REASONS, add_counts, reason_class, tally
from smsq.worker.db import session_scope
from smsq.worker.kinds import DEFAULTS, Cap

OTP_CAPS = DEFAULTS["otp"].per_number  # 1/1m, 5/1h, 10/1d
# 2030-01-01 12:00:00 Beijing time (04:00 UTC): the start of a minute, an hour, not a day
NOON = calendar.timegm((2030, 1, 1, 4, 0, 0))
A, B = "13800138000", "13900139000"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the windows -------------------------------------------------------------------------


def test_a_window_is_aligned_to_its_period_on_the_beijing_clock():
    minute, hour, day = OTP_CAPS
    assert window_no(minute, NOON) != window_no(minute, NOON - 1)  # 11:59:59 is another minute
    assert window_no(minute, NOON) == window_no(minute, NOON + 59)
    assert window_no(hour, NOON + 3599) == window_no(hour, NOON) != window_no(hour, NOON - 1)
    # the Beijing day starts at 16:00 UTC the day before, not at UTC midnight
    midnight = calendar.timegm((2029, 12, 31, 16, 0, 0))
    assert window_no(day, midnight) == window_no(day, NOON) != window_no(day, midnight - 1)
    assert window_no(day, calendar.timegm((2030, 1, 1, 0, 0, 0))) == window_no(day, NOON)


def test_a_window_ends_where_the_next_begins():
    for cap in OTP_CAPS:
        w = window_no(cap, NOON + 7)
        assert window_no(cap, window_end(cap, w)) == w + 1
        assert window_no(cap, window_end(cap, w) - 0.001) == w


def test_the_reason_names_the_cap_as_the_config_writes_it():
    assert [cap_reason(c) for c in OTP_CAPS] == ["frequency cap 1/1m", "frequency cap 5/1h", "frequency cap 10/1d"]


# -- the caps on the database ------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'caps.db'}"
    Base.metadata.create_all(
        create_engine(url), tables=[NumberSends.__table__, RecentContent.__table__, RejectionCount.__table__]
    )
    return url


def send(url: str, caps, numbers: list[str], clock: Clock, *, dry_run: bool = False) -> tuple[list, list]:
    """One send's intake through the caps: (admitted, rejected)."""
    rejected: list[tuple[str, str]] = []
    with session_scope(url) as session:
        admit = cap_check(session, caps, None, rejected, dry_run=dry_run, clock=clock)
        assert admit is not None
        return admit(numbers), rejected


def test_no_cap_is_no_check_at_all(db):
    with session_scope(db) as session:
        assert cap_check(session, (), None, []) is None


def test_one_a_minute_then_the_next_minute(db):
    clock = Clock(NOON + 10)
    assert send(db, OTP_CAPS, [A, B], clock) == ([A, B], [])
    clock.now += 30  # the same minute
    assert send(db, OTP_CAPS, [A], clock) == ([], [(A, "frequency cap 1/1m")])
    clock.now = NOON + 60  # the next minute: a fixed window starts afresh
    assert send(db, OTP_CAPS, [A], clock) == ([A], [])


def test_the_hour_cap_after_five_minutes_of_one_each(db):
    clock = Clock(NOON)
    for minute in range(5):
        clock.now = NOON + 60 * minute
        assert send(db, OTP_CAPS, [A], clock)[0] == [A]
    clock.now = NOON + 300
    assert send(db, OTP_CAPS, [A], clock) == ([], [(A, "frequency cap 5/1h")])
    clock.now = NOON + 3600  # the next clock hour
    assert send(db, OTP_CAPS, [A], clock)[0] == [A]


def test_the_day_cap_resets_at_beijing_midnight(db):
    clock = Clock(NOON)
    for hour in range(5):  # 12:00 to 16:01: two each hour, ten in the day
        for minute in (0, 1):
            clock.now = NOON + 3600 * hour + 60 * minute
            assert send(db, OTP_CAPS, [A], clock)[0] == [A]
    clock.now = NOON + 3600 * 11  # 23:00: the day's ten are spent
    assert send(db, OTP_CAPS, [A], clock)[1] == [(A, "frequency cap 10/1d")]
    clock.now = NOON + 3600 * 12  # 00:00 the next Beijing day
    assert send(db, OTP_CAPS, [A], clock)[0] == [A]


def test_a_number_refused_by_a_later_cap_is_not_counted_in_the_earlier_ones(db):
    caps = (Cap(3, 60), Cap(3, 3600))
    clock = Clock(NOON)
    for _ in range(3):
        send(db, caps, [A], clock)
    clock.now = NOON + 60  # the minute has room, the hour does not
    assert send(db, caps, [A], clock)[1] == [(A, "frequency cap 3/1h")]
    with session_scope(db) as session:
        minute = session.scalar(
            select(NumberSends.sends).where(
                NumberSends.mobile == A,
                NumberSends.period == 60,
                NumberSends.window_no == window_no(caps[0], NOON + 60),
            )
        )
    assert minute == 0  # given back: the refused send counts in no cap


def test_a_dry_run_looks_and_counts_nothing(db):
    clock = Clock(NOON)
    assert send(db, OTP_CAPS, [A], clock, dry_run=True) == ([A], [])
    assert send(db, OTP_CAPS, [A], clock) == ([A], [])  # the dry run took nothing
    assert send(db, OTP_CAPS, [A, B], clock, dry_run=True) == ([B], [(A, "frequency cap 1/1m")])
    assert send(db, OTP_CAPS, [B], clock) == ([B], [])


# -- the duplicate guard on the database ---------------------------------------------------


def guard(url: str, content: str, batch_id: int, numbers: list[str], clock: Clock, window: int = 30, dry=False):
    rejected: list[tuple[str, str]] = []
    with session_scope(url) as session:
        admit = duplicate_check(session, content, lambda: batch_id, window, None, rejected, dry_run=dry, clock=clock)
        assert admit is not None
        return admit(numbers), rejected


def test_the_same_text_to_the_same_number_within_the_window_is_a_duplicate(db):
    clock = Clock(NOON)
    assert guard(db, "code 1234", 7, [A, B], clock) == ([A, B], [])
    clock.now += 1
    assert guard(db, "code 1234", 8, [A], clock) == ([], [(A, "duplicate of batch 7 within 30s")])
    assert guard(db, "code 5678", 9, [A], clock) == ([A], [])  # another text
    clock.now = NOON + 30  # the window has passed: sent again, and guarded for the new batch
    assert guard(db, "code 1234", 10, [A], clock) == ([A], [])
    clock.now += 1
    assert guard(db, "code 1234", 11, [A, B], clock) == ([B], [(A, "duplicate of batch 10 within 30s")])


def test_a_dry_run_of_the_guard_guards_nothing(db):
    clock = Clock(NOON)
    assert guard(db, "x", 1, [A], clock, dry=True) == ([A], [])
    assert guard(db, "x", 2, [A], clock) == ([A], [])
    assert guard(db, "x", 3, [A], clock, dry=True) == ([], [(A, "duplicate of batch 2 within 30s")])
    assert guard(db, "x", 4, [A], clock)[1] == [(A, "duplicate of batch 2 within 30s")]


def test_the_guard_is_off_at_zero(db):
    with session_scope(db) as session:
        assert duplicate_check(session, "x", lambda: 1, 0, None, []) is None


def test_the_digest_is_of_the_text_as_sent():
    assert digest("【某某科技】code 1") != digest("【其他】code 1")
    assert len(digest("x")) == 32


def test_a_number_the_caps_refuse_is_not_guarded(db):
    clock = Clock(NOON)
    rejected: list[tuple[str, str]] = []
    with session_scope(db) as session:
        caps = cap_check(session, (Cap(1, 60),), None, rejected, clock=clock)
        dups = duplicate_check(session, "hi", lambda: 1, 30, None, rejected, clock=clock)
        admit = compose([c for c in (caps, dups) if c])
        assert admit is not None
        assert admit([A]) == [A]
        assert admit([A]) == []  # refused by the cap, before the guard
    assert rejected == [(A, "frequency cap 1/1m")]


# -- the refusal classes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason, klass",
    [
        ("frequency cap 5/1h", "capped"),
        ("duplicate of batch 12 within 30s", "duplicate"),
        ("blocked for this account: opted out", "opted_out"),
        ("blocked for this account: vendor blacklist", "blocked"),
        ("daily quota 1000 of account shop reached", "quota"),
        ("not a mobile number", "invalid"),
        ("", "invalid"),
    ],
)
def test_each_reason_has_its_class(reason, klass):
    assert reason_class(reason) == klass in REASONS


def test_counts_add_up_per_account_kind_and_reason(db):
    with session_scope(db) as session:
        add_counts(session, "a", "otp", tally([(A, "frequency cap 1/1m"), (B, "frequency cap 5/1h"), ("x", "bad")]))
        add_counts(session, "a", "otp", tally([(A, "frequency cap 1/1m")]))
        add_counts(session, "a", "notice", tally([(A, "duplicate of batch 1 within 30s")]))
    with session_scope(db) as session:
        rows = session.execute(
            select(RejectionCount.account, RejectionCount.kind, RejectionCount.reason, RejectionCount.numbers)
        ).all()
    assert sorted(map(tuple, rows)) == [
        ("a", "notice", "duplicate", 1),
        ("a", "otp", "capped", 3),
        ("a", "otp", "invalid", 1),
    ]

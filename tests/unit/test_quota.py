"""The daily quota's arithmetic (tasks/quota.py) on a fake clock: the Beijing day a send
counts against, the grant of a block, the numbers past the quota refused one by one in
list order, a dry run that only looks, and the database counter on a scratch SQLite
database (the race of two producer processes is tests/integration/test_preview.py's)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, select

from smsq.store.models import Base, DailyQuota
from smsq.tasks import quota
from smsq.tasks.producer import NoValidNumbersError, nothing_to_send
from smsq.worker.db import session_scope


class FakeCounter:
    """A counter in a dict: what the Redis and the database counters keep, per account and day."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, date], int] = {}

    def used(self, account: str, day: date) -> int:
        return self.counts.get((account, day), 0)

    def take(self, account: str, day: date, wanted: int, limit: int) -> int:
        granted = quota.grant(self.used(account, day), limit, wanted)
        self.counts[(account, day)] = self.used(account, day) + granted
        return granted


@pytest.mark.parametrize(
    "now, day",
    [
        pytest.param(datetime(2026, 12, 3, 15, 59, 59), date(2026, 12, 3), id="23:59:59 in Beijing"),
        pytest.param(datetime(2026, 12, 3, 16, 0, 0), date(2026, 12, 4), id="midnight in Beijing: the next day"),
        pytest.param(datetime(2026, 12, 3, 0, 30), date(2026, 12, 3), id="08:30 in Beijing"),
        pytest.param(datetime(2026, 12, 31, 16, 0, tzinfo=UTC), date(2027, 1, 1), id="aware UTC, new year"),
        pytest.param(
            datetime(2026, 12, 3, 23, 0, tzinfo=timezone(timedelta(hours=-5))), date(2026, 12, 4), id="another zone"
        ),
    ],
)
def test_the_day_is_the_beijing_day(now, day):
    assert quota.beijing_day(now) == day


def test_the_seconds_left_of_a_beijing_day():
    assert quota.seconds_left(date(2026, 12, 4), datetime(2026, 12, 4, 15, 59, 59)) == 1
    assert quota.seconds_left(date(2026, 12, 4), datetime(2026, 12, 3, 16, 0, 0)) == 86400
    assert quota.seconds_left(date(2026, 12, 4), datetime(2026, 12, 4, 16, 0, 0)) == 1  # past: at least 1


@pytest.mark.parametrize(
    "used, limit, wanted, granted",
    [(0, 10, 3, 3), (8, 10, 3, 2), (10, 10, 3, 0), (12, 10, 1, 0), (0, 10, 0, 0), (9, 10, 1, 1)],
)
def test_a_block_is_granted_what_is_left_at_most(used, limit, wanted, granted):
    assert quota.grant(used, limit, wanted) == granted


def test_numbers_past_the_quota_are_refused_one_by_one_in_list_order():
    counter, rejected = FakeCounter(), []
    now = datetime(2026, 12, 3, 10, 0)
    admit = quota.quota_check(None, "shop", 5, None, rejected, now=now, counter=counter)  # type: ignore[arg-type]
    assert admit is not None
    assert admit(["13800000001", "13800000002", "13800000003"]) == ["13800000001", "13800000002", "13800000003"]
    assert admit(["13800000004", "13800000005", "13800000006"]) == ["13800000004", "13800000005"]
    assert admit(["13800000007"]) == []
    assert rejected == [("13800000006", "daily quota 5 reached"), ("13800000007", "daily quota 5 reached")]
    assert counter.used("shop", date(2026, 12, 3)) == 5
    assert all(quota.is_quota_reason(why) for _, why in rejected)


def test_the_next_beijing_day_starts_again():
    counter = FakeCounter()
    before = datetime(2026, 12, 3, 15, 59, 59)  # 23:59:59 Beijing
    after = before + timedelta(seconds=1)
    first = quota.quota_check(None, "shop", 2, None, [], now=before, counter=counter)  # type: ignore[arg-type]
    second = quota.quota_check(None, "shop", 2, None, [], now=after, counter=counter)  # type: ignore[arg-type]
    assert first and second
    assert first(["13800000001", "13800000002", "13800000003"]) == ["13800000001", "13800000002"]
    assert second(["13800000003", "13800000004", "13800000005"]) == ["13800000003", "13800000004"]
    assert counter.counts == {("shop", date(2026, 12, 3)): 2, ("shop", date(2026, 12, 4)): 2}


def test_accounts_count_apart():
    counter = FakeCounter()
    now = datetime(2026, 12, 3, 10, 0)
    shop = quota.quota_check(None, "shop", 1, None, [], now=now, counter=counter)  # type: ignore[arg-type]
    other = quota.quota_check(None, "other", 1, None, [], now=now, counter=counter)  # type: ignore[arg-type]
    assert shop and other
    assert shop(["13800000001"]) == ["13800000001"] and other(["13800000001"]) == ["13800000001"]


def test_a_dry_run_takes_nothing_and_refuses_what_the_send_would():
    counter, rejected = FakeCounter(), []
    now = datetime(2026, 12, 3, 10, 0)
    counter.counts[("shop", date(2026, 12, 3))] = 3
    look = quota.quota_check(None, "shop", 5, None, rejected, dry_run=True, now=now, counter=counter)  # type: ignore[arg-type]
    assert look is not None
    assert look(["13800000001"]) == ["13800000001"]
    assert look(["13800000002", "13800000003"]) == ["13800000002"]
    assert rejected == [("13800000003", "daily quota 5 reached")]
    assert counter.counts == {("shop", date(2026, 12, 3)): 3}  # untouched


def test_no_quota_no_check():
    assert quota.quota_check(None, "shop", None, None, []) is None  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'quota.db'}"
    Base.metadata.create_all(create_engine(url), tables=[DailyQuota.__table__])
    return url


def test_the_database_counter_counts_per_account_and_day_and_rolls_back_with_the_send(db):
    day = date(2026, 12, 3)
    with session_scope(db) as s:
        counter = quota.DatabaseCounter(s)
        assert counter.used("shop", day) == 0
        assert [counter.take("shop", day, n, 10) for n in (4, 4, 4, 4)] == [4, 4, 2, 0]
        assert counter.take("shop", day + timedelta(days=1), 3, 10) == 3
    with pytest.raises(RuntimeError), session_scope(db) as s:
        assert quota.DatabaseCounter(s).take("other", day, 5, 10) == 5
        raise RuntimeError("the send failed after it took its share")
    with session_scope(db) as s:
        rows = {(r.account, r.day): r.used for r in s.scalars(select(DailyQuota))}
    assert rows == {("shop", day): 10, ("shop", day + timedelta(days=1)): 3}


class RedisLikeCounter(FakeCounter):
    """A counter outside the send's transaction: its share is given back on a rollback."""

    def give_back(self, account: str, day: date, count: int) -> None:
        self.counts[(account, day)] -= count


def test_a_share_taken_outside_the_transaction_is_given_back_when_the_send_rolls_back(db):
    counter, now, day = RedisLikeCounter(), datetime(2026, 12, 3, 10, 0), date(2026, 12, 3)
    with pytest.raises(RuntimeError), session_scope(db) as s:
        admit = quota.quota_check(s, "shop", 5, "redis://", [], now=now, counter=counter)
        assert admit and admit(["13800000001", "13800000002"]) and admit(["13800000003"])
        assert counter.used("shop", day) == 3
        raise RuntimeError("the send failed after it took its share")
    assert counter.used("shop", day) == 0
    with session_scope(db) as s:
        admit = quota.quota_check(s, "shop", 5, "redis://", [], now=now, counter=counter)
        assert admit and admit(["13800000001", "13800000002"])
    assert counter.used("shop", day) == 2  # committed: kept


def test_a_send_the_quota_refused_whole_says_so_in_one_line():
    rejected = [("13800000001", "daily quota 5 reached"), ("abc", "not a mobile number")]
    error = nothing_to_send(rejected, "shop", 5)
    assert isinstance(error, NoValidNumbersError) and error.rejected == rejected
    assert str(error) == (
        "account shop has reached its daily quota of 5 numbers for today (Beijing time; it starts again "
        "at 00:00 +08:00): nothing was stored; 1 number(s) over the quota, 1 rejected for other reasons"
    )
    assert "\n" not in str(error)
    plain = nothing_to_send([("abc", "not a mobile number")], "shop", 5)
    assert str(plain) == "no valid number to send; 1 rejected: 'abc': not a mobile number"

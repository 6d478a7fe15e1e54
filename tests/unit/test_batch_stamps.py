"""A batch's Timestamp at an account (store/stamps.py): its send second, or the next one no
other batch of the account took. The choice is pure; the claim runs on a scratch SQLite
database (the race of two producers on PostgreSQL is tests/integration/test_orgws_e2e.py's)."""

from __future__ import annotations

import calendar
from datetime import datetime

import pytest
from sqlalchemy import create_engine, select

from smsq.store import stamps
from smsq.store.models import Base, Batch, BatchStamp
from smsq.worker.db import session_scope

T0 = datetime(2030, 1, 1, 12, 0, 0)
S0 = calendar.timegm((2030, 1, 1, 12, 0, 0))


@pytest.mark.parametrize(
    "taken, expected",
    [
        pytest.param([], 0, id="free"),
        pytest.param([0], 1, id="taken: the next"),
        pytest.param([0, 1, 2], 3, id="a run taken: past it"),
        pytest.param([0, 2], 1, id="a gap: the first free, not the last taken + 1"),
        pytest.param([1, 2, 3600], 0, id="later ones taken (a scheduled batch): the second itself"),
        pytest.param([-5, -1], 0, id="earlier ones do not matter"),
    ],
)
def test_the_first_free_second(taken, expected):
    assert stamps.first_free(S0, [S0 + t for t in taken]) == S0 + expected


def test_the_second_of_a_naive_utc_time():
    assert stamps.second_of(T0) == S0
    assert stamps.second_of(T0.replace(microsecond=999999)) == S0  # the second it is in


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'stamps.db'}"
    Base.metadata.create_all(create_engine(url), tables=[Batch.__table__, BatchStamp.__table__])
    return url


def batch(session, account: str = "o") -> int:
    row = Batch(account=account, content="x", lane="bulk", created_at=T0)
    session.add(row)
    session.flush()
    return row.id


def test_batches_of_one_account_in_one_second_take_the_next_free_seconds(db):
    with session_scope(db) as s:
        taken = [stamps.claim(s, "o", batch(s), T0) for _ in range(3)]
        other = stamps.claim(s, "p", batch(s, "p"), T0)  # another account: its own seconds
        later = stamps.claim(s, "o", batch(s), T0.replace(second=10))
        again = stamps.claim(s, "o", batch(s), T0)  # the first free second, not after the last
    assert taken == [S0, S0 + 1, S0 + 2] and other == S0 and later == S0 + 10 and again == S0 + 3


def test_a_full_window_of_taken_seconds_is_read_past(db):
    with session_scope(db) as s:
        first = [stamps.claim(s, "o", batch(s), T0) for _ in range(stamps.WINDOW + 2)]
    assert first == [S0 + i for i in range(stamps.WINDOW + 2)]


def test_a_second_taken_since_it_was_read_is_skipped(db, monkeypatch):
    """Another producer's insert between our read and ours: the conditional insert does
    nothing, and the claim goes on from the next second."""
    with session_scope(db) as s:
        mine = batch(s)
        real = stamps.first_free

        def racing(start, taken):
            second = real(start, taken)
            if second == S0:  # the other producer commits S0 just now
                s.add(BatchStamp(account="o", stamp=S0, batch_id=batch(s)))
                s.flush()
            return second

        monkeypatch.setattr(stamps, "first_free", racing)
        assert stamps.claim(s, "o", mine, T0) == S0 + 1
        assert s.scalars(select(BatchStamp.batch_id).where(BatchStamp.stamp == S0 + 1)).one() == mine


def test_the_stamp_a_batch_took_at_an_account_is_found_again(db):
    with session_scope(db) as s:
        mine = batch(s)
        assert stamps.taken_by(s, "q", mine) is None
        took = stamps.claim(s, "q", mine, T0)
        assert stamps.taken_by(s, "q", mine) == took and stamps.taken_by(s, "o", mine) is None


def test_two_workers_moving_one_batch_to_an_account_end_with_one_second(db, monkeypatch):
    """The other worker's claim for the same batch and account lands between our read and
    our insert, on another second: ours does nothing and answers the other's."""
    with session_scope(db) as s:
        mine = batch(s)
        real = stamps.first_free

        def racing(start, taken):
            second = real(start, taken)
            if second == S0:
                s.add(BatchStamp(account="q", stamp=S0 + 5, batch_id=mine))
                s.flush()
            return second

        monkeypatch.setattr(stamps, "first_free", racing)
        assert stamps.claim(s, "q", mine, T0) == S0 + 5
        assert s.scalars(select(BatchStamp.stamp).where(BatchStamp.batch_id == mine)).all() == [S0 + 5]

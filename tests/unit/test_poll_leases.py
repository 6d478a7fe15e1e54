"""The booking of a poll window (store/leases.py), on a scratch SQLite database:
a check that waits books the next window, and gets it before beat's next poll."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, update

from smsq.store import leases
from smsq.store.models import Base, PollLease, utcnow
from smsq.worker.db import session_scope


@pytest.fixture
def lease_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'leases.db'}"
    Base.metadata.create_all(create_engine(url), tables=[PollLease.__table__])
    return url


def as_process(monkeypatch, name: str) -> None:
    monkeypatch.setattr(leases, "_holder", lambda: name)


def set_next(url: str, at: datetime) -> None:
    with session_scope(url) as s:
        s.execute(update(PollLease).values(next_allowed_at=at))


def test_a_booked_window_goes_to_its_booker_first(lease_db, monkeypatch):
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)  # a poll holds the window
    as_process(monkeypatch, "check:1")
    with session_scope(lease_db) as s:
        assert leases.book(s, "a", "f")
        leases.extend(s, "a", "f", 30)  # the poll's call ends: the booking stays
    set_next(lease_db, utcnow() - timedelta(seconds=1))  # the window opens
    as_process(monkeypatch, "beat:2")
    with session_scope(lease_db) as s:
        assert not leases.book(s, "a", "f")  # one booking at a time
        assert not leases.take(s, "a", "f", 30)
        assert 30 < leases.free_in(s, "a", "f", 30) <= 31 + leases.MARGIN  # after the booker's call
    as_process(monkeypatch, "check:1")
    with session_scope(lease_db) as s:
        assert leases.free_in(s, "a", "f", 30) == 0
        assert leases.take(s, "a", "f", 30)
    set_next(lease_db, utcnow() - timedelta(seconds=1))
    as_process(monkeypatch, "beat:2")
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)  # the booking was used up


def test_a_booker_that_never_comes_loses_its_turn(lease_db, monkeypatch):
    as_process(monkeypatch, "check:1")
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)
        assert leases.book(s, "a", "f")
    as_process(monkeypatch, "beat:2")
    set_next(lease_db, utcnow() - timedelta(seconds=leases.BOOKING_GRACE - 2))
    with session_scope(lease_db) as s:
        assert not leases.take(s, "a", "f", 30)
    set_next(lease_db, utcnow() - timedelta(seconds=leases.BOOKING_GRACE + 1))
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)


def test_a_booking_given_up_frees_the_window(lease_db, monkeypatch):
    as_process(monkeypatch, "check:1")
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)
        assert leases.book(s, "a", "f")
        leases.unbook(s, "a", "f")
    set_next(lease_db, utcnow() - timedelta(seconds=1))
    as_process(monkeypatch, "beat:2")
    with session_scope(lease_db) as s:
        assert leases.take(s, "a", "f", 30)

"""Scheduled sends, the pure logic: when the relay releases a waiting chunk, and when a
batch counts as scheduled. End to end (every vendor, through `smsq send --at`, `smsq
status`, `smsq cancel`): tests/integration/test_vendors_e2e.py and
tests/integration/test_send_e2e.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from smsq.cli.commands.batches import progress
from smsq.store.models import utcnow
from smsq.tasks.producer import BatchStatus, is_scheduled
from smsq.tasks.publish import MAX_COUNTDOWN
from smsq.tasks.relay import _countdown, release_ahead

NOW = datetime(2026, 12, 3, 1, 30)  # naive UTC, as stored


@pytest.mark.parametrize(
    "interval, republish_after, ahead",
    [
        (10, 600, 20),  # the defaults: two relay intervals
        (2, 600, 4),
        (45, 600, MAX_COUNTDOWN),  # never a countdown longer than the broker is asked for
        (10, 8, 4),  # never so long that the relay would take the message on its way for a lost one
    ],
)
def test_the_relay_releases_a_chunk_two_intervals_ahead_within_bounds(interval, republish_after, ahead):
    assert release_ahead(SimpleNamespace(relay_interval=interval, republish_after=republish_after)) == ahead


def test_the_countdown_runs_to_the_chunks_time():
    assert _countdown(NOW + timedelta(seconds=7.5), NOW) == 7.5
    assert _countdown(NOW, NOW) is None  # due: at once
    assert _countdown(NOW - timedelta(seconds=3), NOW) is None
    assert _countdown(None, NOW) is None


def test_a_batch_is_scheduled_while_its_time_is_ahead_and_nothing_of_it_moved():
    later = utcnow() + timedelta(hours=1)
    assert is_scheduled(later, {"pending": 3})
    assert is_scheduled(later, {})  # still to be cut into chunks
    assert not is_scheduled(later, {"cancelled": 3})
    assert not is_scheduled(later, {"pending": 2, "sending": 1})
    assert not is_scheduled(utcnow() - timedelta(seconds=1), {"pending": 3})
    assert not is_scheduled(None, {"pending": 3})


def test_status_says_scheduled_at_in_beijing_time():
    status = BatchStatus(7, "shop-dxt", 1, 0, {"queued": 1}, {"pending": 1}, send_at=NOW, scheduled=True)
    assert progress(status) == "scheduled at 2026-12-03 09:30:00+08:00"
    record = json.loads(json.dumps(status.as_dict()))  # JSON as it is, for an application's API too
    assert record["scheduled"] is True and record["send_at"] == "2026-12-03T09:30:00+08:00"
    done = BatchStatus(7, "shop-dxt", 1, 0, {"cancelled": 1}, {"cancelled": 1}, send_at=NOW)
    assert progress(done) == "final"
    assert progress(BatchStatus(7, "shop-dxt", 1, 0, {"queued": 1}, {"pending": 1})) == "in progress"

"""Send windows, the pure logic on a fake clock: when a window holds a moment, its next
opening after one (Beijing time, naive UTC as stored), a window across midnight, the
edges; what intake and the claim make of it, and what `smsq status` says. End to end
(a real worker, the simulator, a window that opens a minute after the send and one that
closes under a running campaign): tests/integration/test_send_windows.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from smsq.cli.commands.batches import progress
from smsq.providers.base import BEIJING
from smsq.tasks import policy
from smsq.tasks.policy import opening_words, window_detail, window_opening
from smsq.tasks.producer import BatchStatus
from smsq.worker.kinds import DEFAULTS, KindRules, SendWindow, parse_window

DAY = SendWindow(8 * 60, 21 * 60)  # the marketing default, 08:00-21:00
NIGHT = SendWindow(22 * 60, 6 * 60)  # 22:00-06:00, across midnight


def bj(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """A Beijing time in December 2026 as the database keeps it: naive UTC."""
    local = datetime(2026, 12, day, hour, minute, second, micro, tzinfo=BEIJING)
    return local.astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    "window, moment, opening",
    [
        (DAY, bj(3, 12), bj(3, 12)),  # inside: now
        (DAY, bj(3, 6, 30), bj(3, 8)),  # before the opening: today's
        (DAY, bj(3, 21, 30), bj(4, 8)),  # after the close: tomorrow's
        (DAY, bj(3, 23, 59, 59), bj(4, 8)),
        (DAY, bj(4, 0, 0), bj(4, 8)),  # past midnight in Beijing (16:00 UTC the day before)
        (DAY, bj(3, 8), bj(3, 8)),  # the opening minute is in
        (DAY, bj(3, 7, 59, 59, 999999), bj(3, 8)),  # a microsecond before: the opening
        (DAY, bj(3, 20, 59, 59, 999999), bj(3, 20, 59, 59, 999999)),  # the last instant is in
        (DAY, bj(3, 21), bj(4, 8)),  # the end is out: the next day's opening
        (NIGHT, bj(3, 23), bj(3, 23)),  # across midnight: in before midnight
        (NIGHT, bj(4, 3), bj(4, 3)),  # and after it
        (NIGHT, bj(3, 12), bj(3, 22)),  # closed in the day: tonight's opening
        (NIGHT, bj(3, 6), bj(3, 22)),  # the end is out
        (NIGHT, bj(3, 22), bj(3, 22)),  # the start is in
        (NIGHT, bj(3, 5, 59, 59), bj(3, 5, 59, 59)),
        (SendWindow(22 * 60, 0), bj(3, 23, 59), bj(3, 23, 59)),  # "22:00-00:00": to midnight
        (SendWindow(22 * 60, 0), bj(4, 0, 0), bj(4, 22)),
        (SendWindow(22 * 60, 24 * 60), bj(4, 0, 0), bj(4, 22)),  # "22:00-24:00" alike
    ],
)
def test_the_next_opening_after_a_moment(window, moment, opening):
    assert window.opens_after(moment) == opening
    assert window.contains(moment) == (opening == moment)
    assert window.contains(opening)


def test_an_aware_moment_gets_an_aware_opening_in_its_zone():
    moment = datetime(2026, 12, 3, 22, 0, tzinfo=BEIJING)
    opening = DAY.opens_after(moment)
    assert opening == datetime(2026, 12, 4, 8, 0, tzinfo=BEIJING) and opening.tzinfo is BEIJING
    in_utc = DAY.opens_after(moment.astimezone(UTC))
    assert in_utc == opening and in_utc.tzinfo is UTC


def test_every_minute_of_a_day_opens_at_the_window_or_is_in_it():
    start = bj(3, 0)
    for minute in range(24 * 60):
        moment = start + timedelta(minutes=minute, seconds=30)
        opening = DAY.opens_after(moment)
        local = opening.replace(tzinfo=UTC).astimezone(BEIJING)
        if DAY.contains(moment):
            assert opening == moment
        else:
            assert (local.hour, local.minute, local.second) == (8, 0, 0)
            assert timedelta(0) < opening - moment <= timedelta(hours=11)


def test_a_window_across_midnight_is_parsed_and_narrows_like_any():
    assert parse_window("22:00-06:00", "k") == NIGHT and str(NIGHT) == "22:00-06:00" and NIGHT.crosses_midnight
    assert parse_window("22:00-24:00", "k") == SendWindow(22 * 60, 24 * 60)
    assert parse_window("22:00-00:00", "k") == SendWindow(22 * 60, 0)
    assert SendWindow(23 * 60, 5 * 60).within(NIGHT)
    assert SendWindow(22 * 60, 24 * 60).within(NIGHT) and SendWindow(0, 6 * 60).within(NIGHT)
    assert not SendWindow(21 * 60, 5 * 60).within(NIGHT) and not NIGHT.within(DAY) and not DAY.within(NIGHT)
    assert NIGHT.within(None)
    for empty in ("08:00-08:00", "00:00-00:00", "24:00-08:00"):
        with pytest.raises(ValueError, match="start and end apart"):
            parse_window(empty, "k")


def test_intake_holds_a_send_due_outside_the_window_until_the_opening():
    marketing = DEFAULTS["marketing"]
    assert window_opening(marketing, bj(3, 20, 50)) is None  # in: sent now
    assert window_opening(marketing, bj(3, 21, 0)) == bj(4, 8)  # stored at the close: the morning
    assert window_opening(marketing, bj(4, 2)) == bj(4, 8)
    assert window_opening(DEFAULTS["notice"], bj(4, 2)) is None  # no window: any time
    assert window_opening(KindRules("otp"), bj(4, 2)) is None


def _claimed(conf, now):  # a Settings and a ClaimedChunk, as far as the check reads them
    rules = KindRules("marketing", send_window=DAY)
    return SimpleNamespace(kind_rules=lambda account, kind: rules), SimpleNamespace(account="a", kind="marketing")


@pytest.mark.parametrize(
    "now, held",
    [
        (bj(3, 12), None),  # in the window: sent
        (bj(3, 21, 0, 0, 1), bj(4, 8)),  # a campaign's chunk claimed just after the close: the morning
        (bj(3, 7, 59, 58), bj(3, 8)),  # two seconds early: waits
        (bj(3, 7, 59, 59, 500000), bj(3, 8)),  # within the claim's slack: the worker waits it out
    ],
)
def test_the_claim_holds_a_chunk_outside_its_window_until_the_opening(now, held):
    conf, claimed = _claimed(None, now)
    assert policy.window_hold(conf, claimed, now) == held
    assert policy.SLACK.total_seconds() == 1  # the claim's own slack (store/ledger/claims.py DUE_SLACK)


def test_the_words_say_the_opening_with_the_date_when_not_today():
    assert opening_words(bj(3, 8), bj(3, 2)) == "08:00 +08:00"
    assert opening_words(bj(4, 8), bj(3, 22)) == "2026-12-04 08:00 +08:00"
    assert opening_words(bj(4, 8, 0, 30), bj(4, 7)) == "08:00:30 +08:00"  # (a schedule's seconds are kept)
    assert window_detail(DAY, bj(4, 8), bj(3, 22)) == (
        "waiting for the send window 08:00-21:00 (Beijing time), opens 2026-12-04 08:00 +08:00"
    )


def _status(**fields) -> BatchStatus:
    return BatchStatus(7, "shop-dxt", 3, 0, {"queued": 3}, {"pending": 1}, kind="marketing", **fields)


def test_status_says_it_waits_for_the_send_window():
    now = bj(3, 22)
    waiting = _status(waiting_for_window_until=bj(4, 8))
    assert progress(waiting, now) == "waiting for the send window, opens 2026-12-04 08:00 +08:00"
    assert progress(waiting, bj(4, 1)) == "waiting for the send window, opens 08:00 +08:00"
    record = json.loads(json.dumps(waiting.as_dict()))
    assert record["waiting_for_window_until"] == "2026-12-04T08:00:00+08:00" and not record["scheduled"]
    assert progress(_status(), now) == "in progress" and _status().as_dict()["waiting_for_window_until"] is None
    # scheduled at night: its time comes first, then the window's
    night = _status(send_at=bj(4, 2), scheduled=True, waiting_for_window_until=bj(4, 8))
    assert progress(night, now) == (
        "scheduled at 2026-12-04 02:00:00+08:00, then waiting for the send window, opens 2026-12-04 08:00 +08:00"
    )


def _batch(**fields):
    base = dict(account="shop-dxt", kind="marketing", send_at=None)
    return SimpleNamespace(**{**base, **fields})


def test_a_batch_waits_for_its_window_while_some_of_it_is_to_send_and_the_window_is_closed():
    conf = SimpleNamespace(kind_rules=lambda account, kind: DEFAULTS[kind], kinds=DEFAULTS)
    assert policy.window_wait(conf, _batch(), True, bj(3, 22)) == bj(4, 8)
    assert policy.window_wait(conf, _batch(), True, bj(3, 12)) is None  # open: it is being sent
    assert policy.window_wait(conf, _batch(), False, bj(3, 22)) is None  # nothing left to send
    assert policy.window_wait(conf, _batch(kind="notice"), True, bj(3, 22)) is None
    # a schedule ahead: the window at its time
    assert policy.window_wait(conf, _batch(send_at=bj(4, 2)), True, bj(3, 22)) == bj(4, 8)
    assert policy.window_wait(conf, _batch(send_at=bj(4, 9)), True, bj(3, 22)) is None

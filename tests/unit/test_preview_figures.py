"""A preview's figures (tasks/preview.py): segments by the vendor's rule (70 characters in
one message, 67 each above that, signature included), billable messages, the balance
against them, and the kind of each refusal. The preview against real services is
tests/integration/test_preview.py's."""

from __future__ import annotations

from datetime import datetime

import pytest

from smsq.cli.commands.preview import describe
from smsq.providers.base import segments
from smsq.tasks.preview import Preview, balance_verdict, billable, count_by_kind, reason_kind


@pytest.mark.parametrize(
    "length, expected",
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (335, 5)],
)
def test_segments_are_70_in_one_and_67_each_above(length, expected):
    assert segments("字" * length) == expected


@pytest.mark.parametrize(
    "numbers, per, expected", [(0, 3, 0), (1, 1, 1), (10_000, 2, 20_000), (1_000_000, 5, 5_000_000)]
)
def test_billable_is_numbers_times_segments(numbers, per, expected):
    assert billable(numbers, per) == expected


@pytest.mark.parametrize(
    "balance, needed, verdict",
    [
        (None, 10, "unknown"),
        (10, 10, "enough"),
        (9, 10, "not enough"),
        (0, 0, "enough"),
        (float("inf"), 10**9, "enough"),  # postpaid
    ],
)
def test_the_balance_against_the_billable_messages(balance, needed, verdict):
    assert balance_verdict(balance, needed) == verdict


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("blocked for this account: opted out", "opted out"),
        ("blocked for this account: blocked by an operator", "blocked"),
        ("blocked for this account: 黑名单", "blocked"),
        ("daily quota 50000 reached", "over quota"),
        ("frequency cap 5/1h", "capped"),
        ("duplicate of batch 17 within 30s", "duplicate"),
        ("not a mobile number", "invalid"),
    ],
)
def test_each_refusal_has_its_kind(reason, kind):
    assert reason_kind(reason) == kind


def test_refusals_are_counted_by_kind():
    rejected = [("a", "not a mobile number"), ("b", "too short"), ("c", "blocked for this account: opted out")]
    assert count_by_kind(rejected) == {"invalid": 2, "opted out": 1}


def preview(**changes) -> Preview:
    fields = dict(
        account="shop",
        kind="notice",
        lane="bulk",
        accepted=1000,
        rejected=[("123", "not a mobile number")],
        content="【某某科技】" + "字" * 70,
        characters=76,
        segments=2,
        max_chars=335,
        balance=1500.0,
        balance_checked_at=datetime(2026, 12, 3, 10, 0),
        daily_quota=None,
        quota_used=None,
        rejected_by={"invalid": 1},
    )
    return Preview(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_preview_bills_every_segment_and_weighs_the_balance():
    p = preview()
    assert p.billable == 2000 and p.balance_verdict == "not enough" and p.sendable and p.refusal() is None
    assert preview(balance=2000.0).balance_verdict == "enough"
    assert preview(balance=None).balance_verdict == "unknown"
    as_dict = p.as_dict()
    assert as_dict["billable"] == 2000 and as_dict["balance_checked_at"] == "2026-12-03T18:00:00+08:00"
    assert as_dict["dry_run"] is True and as_dict["rejected_by"] == {"invalid": 1}


def test_a_replay_bills_nothing():
    assert preview(replay_of=7).billable == 0


def test_a_preview_with_nothing_to_send_carries_the_send_s_refusal():
    p = preview(accepted=0, rejected=[("13800000001", "daily quota 5 reached")], daily_quota=5, quota_used=5)
    assert not p.sendable
    assert "has reached its daily quota of 5" in str(p.refusal())


def test_the_text_names_every_figure():
    text = "\n".join(describe(preview(daily_quota=5000, quota_used=1200)))
    for shown in (
        "nothing was stored or sent",
        "accepted:  1,000",
        "rejected:  1 (invalid 1)",
        "76 character(s)",
        "at most 335",
        "2 segment(s)",
        "billable:  2,000 message(s) (1,000 number(s) x 2 segment(s))",
        "1,500 message(s), last polled at 2026-12-03 18:00:00+08:00: not enough",
        "1,200 used today",
        "3,800 left",
    ):
        assert shown in text, shown

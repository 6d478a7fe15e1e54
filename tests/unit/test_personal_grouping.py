"""Personal texts' intake as pure logic (tasks/personal.py): each row checked on its own,
numbers grouped by their text into vendor-sized chunks, and the texts held open bounded."""

from __future__ import annotations

import pytest

from smsq.providers.base import ContentError
from smsq.tasks import personal
from smsq.tasks.personal import REPEATED, Entry, NumberedRow, Texts, _Intake, from_messages, from_rows
from smsq.tasks.templates import Template


class Signing:
    """A provider's prepare_content: signs, and refuses what no vendor takes."""

    def prepare_content(self, text: str) -> str:
        if not text.strip():
            raise ContentError("content is empty")
        if len(text) > 20:
            raise ContentError(f"content is {len(text)} characters; at most 20")
        return "【签名】" + text


def intake(size: int = 2, admit=None, refused=None, blocked=frozenset()) -> tuple[_Intake, list]:
    rejected: list[tuple[str, str]] = []
    return _Intake(
        Texts(Signing()), False, size, rejected, admit, [] if refused is None else refused, set(blocked)
    ), rejected


def mobile(n: int) -> str:
    return f"1380000{n:04d}"


def test_numbers_travel_with_their_text_in_chunks_of_the_vendor_size_in_row_order():
    run, rejected = intake(size=2)
    entries = [Entry(i + 1, mobile(i), text) for i, text in enumerate("AABABCA")]
    rows = run.block(entries) + run.rest()
    assert rejected == []
    assert sorted(rows, key=lambda r: r[0]) == [
        (0, 2, f"{mobile(0)},{mobile(1)}", "【签名】A"),
        (1, 2, f"{mobile(3)},{mobile(6)}", "【签名】A"),
        (2, 2, f"{mobile(2)},{mobile(4)}", "【签名】B"),
        (3, 1, mobile(5), "【签名】C"),
    ]
    assert run.staged.accepted == 7 and run.staged.billable == 7


def test_each_bad_row_is_rejected_with_its_row_number_and_why():
    run, rejected = intake()
    entries = [
        Entry(1, mobile(1), "ok"),
        Entry(2, "12345", "ok"),
        Entry(3, mobile(3), "x" * 30),
        Entry(4, mobile(1), "again"),
        Entry(5, mobile(5), None, "no variable 'name' in the row"),
        Entry(6, mobile(6), " "),
    ]
    run.block(entries)
    assert [(given, reason.split(":")[0]) for given, reason in rejected] == [
        ("12345", "row 2"),
        (mobile(3), "row 3"),
        (mobile(1), "row 4"),
        (mobile(5), "row 5"),
        (mobile(6), "row 6"),
    ]
    assert rejected[2][1] == f"row 4: {REPEATED}"
    assert rejected[1][1] == "row 3: content is 30 characters; at most 20"
    assert run.staged.accepted == 1


def test_what_the_send_policy_refuses_is_rejected_with_its_row():
    refused: list[tuple[str, str]] = []

    def admit(text: str, mobiles: list[str]) -> list[str]:
        refused.extend((m, f"duplicate of {text}") for m in mobiles if m.endswith("2"))
        return [m for m in mobiles if not m.endswith("2")]

    run, rejected = intake(admit=admit, refused=refused)
    run.block([Entry(7, mobile(1), "A"), Entry(8, mobile(2), "A")])
    assert rejected == [(mobile(2), "row 8: duplicate of 【签名】A")]
    assert refused == [] and run.staged.accepted == 1


def test_blocked_numbers_are_left_out_and_reported_once():
    run, rejected = intake(blocked={int("1" + mobile(2))})
    rows = run.block([Entry(1, mobile(1), "A"), Entry(2, mobile(2), "A")]) + run.rest()
    assert [r[2] for r in rows] == [mobile(1)] and run.staged.blocked == {mobile(2)} and rejected == []


def test_at_most_open_texts_wait_part_filled(monkeypatch):
    monkeypatch.setattr(personal, "OPEN_TEXTS", 2)
    run, _ = intake(size=100)
    entries = [Entry(i + 1, mobile(i), text) for i, text in enumerate("ABCA")]
    assert run.block(entries[:2]) == []
    # three texts open is one too many: the one waiting longest (B; A was added to since) goes short
    assert run.block(entries[2:]) == [(0, 1, mobile(1), "【签名】B")]
    assert list(run.open) == ["【签名】C", "【签名】A"]
    assert run.rest() == [(1, 1, mobile(2), "【签名】C"), (2, 2, f"{mobile(0)},{mobile(3)}", "【签名】A")]


def test_messages_and_rows_become_entries_with_their_problems():
    assert list(from_messages([("13800000001", "hi"), "13800000002", ("13800000003", 5)])) == [
        Entry(1, "13800000001", "hi"),
        Entry(2, "13800000002", None, "not a (mobile, content) pair"),
        Entry(3, "13800000003", None, "the content is int, not text"),
    ]
    template = Template("{name}您好")
    assert list(from_rows(template, [{"mobile": "1", "name": "张三"}, {"mobile": "2"}, ["3"]])) == [
        Entry(1, "1", "张三您好"),
        Entry(2, "2", None, "no variable 'name' in the row"),
        Entry(3, ["3"], None, "not a mapping of mobile and variables"),
    ]


@pytest.mark.parametrize("size", [1, 3])
def test_every_accepted_number_is_in_exactly_one_row(size):
    run, _ = intake(size=size)
    entries = [Entry(i + 1, mobile(i), "ABCDE"[i % 5]) for i in range(40)]
    rows = run.block(entries[:25]) + run.block(entries[25:]) + run.rest()
    numbers = [n for _, count, mobiles, _ in rows for n in mobiles.split(",")]
    assert sorted(numbers) == sorted(mobile(i) for i in range(40))
    assert [r[0] for r in rows] == list(range(len(rows)))  # seq numbers: each once, in order written
    assert all(count == len(mobiles.split(",")) <= size for _, count, mobiles, _ in rows)


def test_a_numbered_row_keeps_its_number_and_its_problem():
    template = Template("{name}您好")
    rows = [
        NumberedRow(2, {"mobile": "13800000001", "name": "张三"}),
        NumberedRow(5, {"mobile": "13800000002", "name": "李四", "": "x"}, "3 cells, the header has 2"),
        NumberedRow(6, {"mobile": "13800000003"}),
    ]
    assert list(from_rows(template, rows)) == [
        Entry(2, "13800000001", "张三您好"),
        Entry(5, "13800000002", None, "3 cells, the header has 2"),
        Entry(6, "13800000003", None, "no variable 'name' in the row"),
    ]

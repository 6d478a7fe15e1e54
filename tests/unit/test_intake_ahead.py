"""A long list's policy check run one block ahead, in a thread of its own (tasks/intake.py
``_admitted_ahead``): the same chunks, the check off the reading thread, errors at their block."""

from __future__ import annotations

import threading

import pytest

from smsq.tasks.intake import _chunk_rows


def numbered(block: int, count: int = 3) -> list[str]:
    return [f"1380000{block:02d}{k:02d}" for k in range(count)]


def test_the_next_block_is_read_while_the_check_of_the_one_before_runs():
    events: list[str] = []
    checked_on: set[str] = set()

    def blocks():
        for k in range(3):
            events.append(f"read {k}")
            yield numbered(k)

    def admit(block: list[str]) -> list[str]:
        checked_on.add(threading.current_thread().name)
        return block

    for chunk in _chunk_rows(blocks(), 3, set(), set(), admit, ahead=True):
        events.append(f"rows {chunk[0][0]}")
    # block k's rows are written only once block k+1 is read (its check then runs meanwhile)
    assert events == ["read 0", "read 1", "rows 0", "read 2", "rows 1", "rows 2"]
    assert checked_on and threading.current_thread().name not in checked_on


def test_a_failing_check_raises_at_its_block_and_no_later_block_is_checked():
    checked: list[int] = []

    def admit(block: list[str]) -> list[str]:
        checked.append(int(block[0][7:9]))
        if checked[-1] == 1:
            raise ConnectionError("Redis went away")
        return block

    rows = _chunk_rows((numbered(k) for k in range(4)), 3, set(), set(), admit, ahead=True)
    assert next(rows) == [(0, 3, ",".join(numbered(0)))]
    with pytest.raises(ConnectionError, match="Redis went away"):
        next(rows)
    rows.close()
    assert checked[:2] == [0, 1] and 3 not in checked  # the block read ahead at most; none after it

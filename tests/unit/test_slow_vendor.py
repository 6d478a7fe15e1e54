"""When a group hands the rest of its chunks to idle slots: only after a call the
vendor made slow, not one this busy process made slow (tasks/send.py ``_slow_vendor``)."""

from __future__ import annotations

import pytest

from smsq.tasks.send import SLOW_CALL, SLOW_SHARE, Pace, _slow_vendor


@pytest.mark.parametrize(
    "call, chunk, slow",
    [
        (None, 1.0, False),  # no vendor call was made
        (SLOW_CALL / 2, SLOW_CALL / 2 + 0.001, False),  # a quick call: not worth a message each
        (0.8, 0.8 + 0.01, True),  # the vendor's 0.8 s against 10 ms of the chunk's own work
        (0.8, 0.8 + 0.8 / SLOW_SHARE * 1.1, False),  # the rest of the chunk slow too: a busy process
        (0.8, 0.8 + 0.8 / SLOW_SHARE * 0.9, True),
    ],
)
def test_only_a_call_that_outweighs_the_chunks_own_work_is_a_slow_vendor(call, chunk, slow):
    assert _slow_vendor(Pace(call), chunk) is slow

"""Large batches: the producer stores the numbers, a worker cuts the chunks (tasks/split.py).

Runs once embedded and once distributed, against a real worker and the dxt simulator.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from sqlalchemy import delete, insert, select

from smsq.store.models import Batch, BlockedNumber, Chunk, Recipient, SplitChunk, utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks.cancel import cancel_batch
from smsq.tasks.intake import BLOCK
from smsq.tasks.producer import NoValidNumbersError
from smsq.tasks.publish import publish_split
from smsq.tasks.relay import publish_due, publish_due_splits
from smsq.tasks.split import cut, run_split
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import wait_final

CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"


def numbers(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(count)]


def assert_each_once(sim, expected: list[str]) -> None:
    received = Counter(n for s in sim.sends for n in s.numbers)
    assert sorted(received) == sorted(expected)
    assert max(received.values()) == 1, "a number reached the vendor twice"
    assert max(len(s.numbers) for s in sim.sends) <= 100


def stored_unsplit(monkeypatch, mobiles: list[str]):
    """send_sms whose split job never reaches a worker (a lost message, a dead worker)."""
    monkeypatch.setattr("smsq.tasks.producer.publish_split", lambda *args: True)
    receipt = send_sms("shop-dxt", mobiles, CONTENT)
    monkeypatch.undo()
    return receipt


def staged_chunks(batch_id: int) -> list[tuple[int, int, list[str]]]:
    """(seq, size, numbers) of the batch's chunks still to be cut, in seq order."""
    with session_scope(settings().database_url) as s:
        rows = s.execute(
            select(SplitChunk.seq, SplitChunk.size, SplitChunk.mobiles)
            .where(SplitChunk.batch_id == batch_id)
            .order_by(SplitChunk.seq)
        ).all()
    return [(seq, size, mobiles.split(",")) for seq, size, mobiles in rows]


def discard(batch_id: int) -> None:
    """Cut a stored batch as cancelled: nothing of it reaches the simulator later."""
    cancel_batch(batch_id)
    run_split(settings(), batch_id)


def test_repeats_across_blocks_keep_their_first_position(stack, sim, monkeypatch):
    mobiles = numbers("132", BLOCK + 300)
    late = mobiles[BLOCK + 200]
    # The first block ends with a number whose own place is in the second block, spelled
    # otherwise: that first spelling keeps the position. Repeats within and across the
    # blocks are left out; the invalid entry is rejected once, though given twice.
    first = mobiles[: BLOCK - 3] + ["n/a", "+86 132-0000-0005", "0086" + late]
    second = ["+86 " + mobiles[10], "n/a", late] + [m for m in mobiles[BLOCK - 3 :] if m != late]
    assert len(first) == BLOCK
    entries = first + second
    receipt = stored_unsplit(monkeypatch, entries)
    expected = mobiles[: BLOCK - 3] + [late] + [m for m in mobiles[BLOCK - 3 :] if m != late]
    assert receipt.accepted == len(expected) == len(mobiles)
    assert receipt.rejected == [("n/a", receipt.rejected[0][1])]
    chunks = staged_chunks(receipt.batch_id)
    assert [seq for seq, _, _ in chunks] == list(range(len(chunks)))
    assert [size for _, size, _ in chunks] == [len(part) for _, _, part in chunks] == [100] * 53
    assert [m for _, _, part in chunks for m in part] == expected
    discard(receipt.batch_id)


def test_blocked_numbers_of_a_long_list_are_left_out_and_reported(stack, sim, monkeypatch):
    mobiles = numbers("131", BLOCK + 250)
    blocked = {
        mobiles[7]: "opted out",
        mobiles[BLOCK + 20]: "complaint",
        "13199999999": "not in the list",
        "+86 131-0000-0008": "a spelling no number is stored in",
    }
    with session_scope(settings().database_url) as s:
        s.execute(
            insert(BlockedNumber),
            [
                {"account": "shop-dxt", "mobile": m, "reason": r, "source": "manual", "created_at": utcnow()}
                for m, r in blocked.items()
            ],
        )
    entries = mobiles + ["+86 " + mobiles[7], "x"]  # the blocked number again, in the second block
    try:
        receipt = stored_unsplit(monkeypatch, entries)
        short = send_sms("shop-dxt", [mobiles[7], mobiles[8]], CONTENT)  # a list of one block: a lookup
    finally:
        with session_scope(settings().database_url) as s:
            s.execute(delete(BlockedNumber).where(BlockedNumber.mobile.in_(blocked)))
    assert receipt.accepted == len(mobiles) - 2
    assert receipt.rejected == [
        ("x", receipt.rejected[0][1]),
        (mobiles[7], "blocked for this account: opted out"),
        (mobiles[BLOCK + 20], "blocked for this account: complaint"),
    ]
    sent = [m for m in mobiles if m not in blocked]
    chunks = staged_chunks(receipt.batch_id)
    assert [size for _, size, _ in chunks] == [100] * 52 + [48]
    assert [m for _, _, part in chunks for m in part] == sent
    discard(receipt.batch_id)
    assert short.accepted == 1 and short.rejected == [(mobiles[7], "blocked for this account: opted out")]
    wait_final(short.batch_id)
    assert [s.numbers for s in sim.sends] == [[mobiles[8]]]


def test_a_large_batch_is_cut_by_a_worker_in_list_order(stack, sim):
    mobiles = numbers("136", 1050)
    entries = mobiles + ["+86 " + mobiles[3], "12345"]  # a repeat in another spelling, an invalid entry
    receipt = send_sms("shop-dxt", entries, CONTENT)
    assert receipt.accepted == 1050 and receipt.rejected == [("12345", receipt.rejected[0][1])]
    status = wait_final(receipt.batch_id)
    assert status.chunks == {"accepted": 11} and status.to_split == 0
    assert status.recipients == {"sent": 1050, "rejected": 1}
    assert_each_once(sim, mobiles)
    with session_scope(settings().database_url) as s:
        first = s.scalars(
            select(Recipient.mobile)
            .where(Recipient.batch_id == receipt.batch_id, Recipient.chunk_seq == 0)
            .order_by(Recipient.id)
        ).all()
        sizes = s.scalars(select(Chunk.size).where(Chunk.batch_id == receipt.batch_id).order_by(Chunk.seq)).all()
    assert first == mobiles[:100]  # numbers keep their list order: the first hundred go first
    assert sizes == [100] * 10 + [50]


def test_a_worker_that_died_mid_split_loses_nothing(stack, sim, monkeypatch):
    mobiles = numbers("135", 450)
    receipt = stored_unsplit(monkeypatch, mobiles)
    status = batch_status(receipt.batch_id)
    assert (status.to_split, status.chunks, status.recipients) == (5, {}, {"queued": 450})
    assert not status.final

    # A splitter cuts one chunk and dies between its commit and the publish.
    conf = settings()
    with session_scope(conf.database_url) as session:
        batch = session.get(Batch, receipt.batch_id)
        cut(session, batch, limit=1, not_before=None, now=batch.created_at)
    status = batch_status(receipt.batch_id)
    assert (status.to_split, status.chunks, status.recipients) == (4, {"pending": 1}, {"queued": 450})
    assert sim.sends == []

    # The relay publishes both the job and the chunk whose message never left.
    stale = dataclasses.replace(conf, republish_after=0)  # long enough ago, whatever the setting
    assert publish_due_splits(stale) == 1
    assert publish_due(stale) == 1
    status = wait_final(receipt.batch_id)
    assert status.chunks == {"accepted": 5} and status.recipients == {"sent": 450}
    assert_each_once(sim, mobiles)


def test_a_split_job_delivered_three_times_sends_each_number_once(stack, sim):
    mobiles = numbers("134", 1200)
    receipt = send_sms("shop-dxt", mobiles, CONTENT)
    conf = settings()
    for _ in range(2):  # the broker hands the same job out again, maybe while the first runs
        assert publish_split(conf, receipt.batch_id, receipt.lane, "shop-dxt")
    run_split(conf, receipt.batch_id)  # and once more, right here
    status = wait_final(receipt.batch_id)
    assert status.chunks == {"accepted": 12}
    assert_each_once(sim, mobiles)


def test_a_batch_cancelled_before_its_split_is_never_sent(stack, sim, monkeypatch):
    mobiles = numbers("133", 300)
    receipt = stored_unsplit(monkeypatch, mobiles)
    cancel_batch(receipt.batch_id)
    assert run_split(settings(), receipt.batch_id) == 0  # cut, but nothing published
    status = batch_status(receipt.batch_id)
    assert status.final and status.chunks == {"cancelled": 3} and status.recipients == {"cancelled": 300}
    assert sim.sends == []


def test_no_valid_number_stores_nothing(stack, sim):
    with session_scope(settings().database_url) as s:
        before = s.scalar(select(Batch.id).order_by(Batch.id.desc()).limit(1))
    with pytest.raises(NoValidNumbersError):
        send_sms("shop-dxt", ["123", "abc"] * 3000, CONTENT)
    with session_scope(settings().database_url) as s:
        assert s.scalar(select(Batch.id).order_by(Batch.id.desc()).limit(1)) == before

"""What one chunk costs the database: an accepted chunk takes two transactions
(claim, record), on PostgreSQL one statement each, whatever its size; a chunk
whose account has no rate-limit slot takes none and goes back to its queue.

Runs the send path in this process against the real database (PostgreSQL or
SQLite), the real broker and the dxt simulator over HTTP, counting on the
real engine; no worker consumes the queues here.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest
from celery.signals import before_task_publish
from sqlalchemy import select

from smsq.store.models import Chunk, Recipient
from smsq.tasks import send_sms
from smsq.tasks.account_health import HEALTH_TTL
from smsq.tasks.send import run_chunk
from smsq.tasks.split import run_split
from smsq.worker.config import settings
from smsq.worker.db import engine_for, session_scope
from smsq.worker.limiter import limiter

from .conftest import Tally

CONTENT = "【某某科技】您的验证码是 345678"


def chunks_of(batch_id: int) -> list[tuple[int, str]]:
    with session_scope(settings().database_url) as s:
        return s.execute(select(Chunk.id, Chunk.lane).where(Chunk.batch_id == batch_id).order_by(Chunk.seq)).all()


def test_an_accepted_chunk_costs_two_transactions(direct):
    direct.reset()
    numbers = [f"1370000{i:04d}" for i in range(1000)]
    receipt = send_sms("shop-dxt", numbers, CONTENT)
    run_split(settings(), receipt.batch_id)  # what a worker does with the batch's split job
    chunks = chunks_of(receipt.batch_id)
    assert len(chunks) == 10
    run_chunk(chunks[0][0], "shop-dxt", chunks[0][1])  # warm: first health read, schema, connections
    started = time.monotonic()
    with Tally(engine_for(settings().database_url)) as tally:
        for chunk_id, lane in chunks[1:]:
            assert run_chunk(chunk_id, "shop-dxt", lane) == "accepted"
    elapsed = time.monotonic() - started
    sends = len(chunks) - 1
    health = tally.health_reads()
    # the account's health (its send flag, its circuit): each once a second, not once a chunk
    assert health <= 2 * math.ceil(elapsed / HEALTH_TTL)
    assert len(tally.transactions) - health == 2 * sends
    statements = sum(len(t) for t in tally.transactions) - health
    dialect = engine_for(settings().database_url).dialect.name
    # PostgreSQL: the claim, and the record (the call, the chunk, the numbers), one statement each;
    # SQLite: claim, batch, numbers; the call, the chunk, the numbers
    assert statements == (2 if dialect == "postgresql" else 6) * sends
    with session_scope(settings().database_url) as s:
        states = Counter(s.scalars(select(Recipient.state).where(Recipient.batch_id == receipt.batch_id)))
        stored = dict(
            s.execute(select(Recipient.mobile, Recipient.vendor_id).where(Recipient.batch_id == receipt.batch_id)).all()
        )
    assert states == {"sent": 1000}
    given = {number: smsid for send in direct.sends for number, smsid in zip(send.numbers, send.smsids, strict=False)}
    assert given == stored  # every number once, each with the id the vendor gave it


def test_a_chunk_without_a_rate_limit_slot_costs_no_transaction_and_goes_back(direct):
    direct.reset()
    receipt = send_sms("shop-dxt", ["13700009999"], CONTENT)
    ((chunk_id, lane),) = chunks_of(receipt.batch_id)
    rate = settings().account("shop-dxt").rate_limit
    # every call of the window, the priority lane's reserve included
    taken = [limiter(settings().redis_url).try_take("shop-dxt", rate, jump=True) for _ in range(int(rate))]
    published = []

    def capture(sender=None, body=None, headers=None, routing_key=None, **_):
        published.append((body, headers, routing_key))

    before_task_publish.connect(capture, weak=False)
    try:
        with Tally(engine_for(settings().database_url)) as tally:
            assert run_chunk(chunk_id, "shop-dxt", lane) == "deferred"
    finally:
        before_task_publish.disconnect(capture)
        for t in taken:
            if t.ok:
                limiter(settings().redis_url).give_back("shop-dxt", t.ticket)
    assert len(tally.transactions) - tally.health_reads() == 0
    ((body, headers, routing_key),) = published
    assert body[0] == [chunk_id] and headers["eta"] is not None and routing_key == f"smsq.{lane}"
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert (chunk.state, chunk.attempts) == ("pending", 0)  # not claimed, no attempt counted
    assert direct.sends == []
    assert run_chunk(chunk_id, "shop-dxt", lane) == "accepted"  # the slot is free again: sent once
    assert len(direct.sends) == 1


def test_a_chunk_whose_slot_cannot_be_stamped_goes_back_unsent_not_unknown(direct, monkeypatch):
    """Redis went away between the claim and the call (seen in a fault test: the claim
    was slow, so the slot was stamped, and the stamp met the closed connection). No
    call was made: the chunk is pending again for the relay, not 'sending' until it
    turns 'unknown'."""
    import redis

    from smsq import tasks
    from smsq.tasks.relay import publish_due

    direct.reset()
    receipt = send_sms("shop-dxt", ["13700008888"], CONTENT)
    ((chunk_id, lane),) = chunks_of(receipt.batch_id)
    bucket = limiter(settings().redis_url)

    def gone(*_):
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(tasks.send, "CLAIM_WITHIN_MARGIN", -1.0)  # every claim "slow": the slot is stamped
    monkeypatch.setattr(bucket, "stamp", gone)
    with pytest.raises(redis.exceptions.ConnectionError):
        run_chunk(chunk_id, "shop-dxt", lane)
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert (chunk.state, chunk.attempts, chunk.queued_at) == ("pending", 0, None)
        assert "ConnectionError" in chunk.detail
    assert direct.sends == []
    monkeypatch.undo()
    assert publish_due(settings()) >= 1  # the relay's next pass publishes it again
    with session_scope(settings().database_url) as s:
        assert s.get(Chunk, chunk_id).queued_at is not None
    assert run_chunk(chunk_id, "shop-dxt", lane) == "accepted" and len(direct.sends) == 1


def test_an_otp_without_a_slot_books_one_and_comes_back_for_it(direct):
    """A refused OTP's message carries the slot booked for it; back early it goes back
    again with the booking (traded for a new ticket), back on time it is sent in that slot."""
    direct.reset()
    receipt = send_sms("shop-dxt", ["13700009998"], CONTENT)
    ((chunk_id, lane),) = chunks_of(receipt.batch_id)
    assert lane == "priority"
    bucket, rate = limiter(settings().redis_url), settings().account("shop-dxt").rate_limit
    taken = [bucket.try_take("shop-dxt", rate, jump=True) for _ in range(int(rate))]  # reserve included
    published = []

    def capture(sender=None, body=None, headers=None, routing_key=None, **_):
        published.append(body[1])  # the task's kwargs

    before_task_publish.connect(capture, weak=False)
    try:
        asked = time.monotonic()
        assert run_chunk(chunk_id, "shop-dxt", lane) == "deferred"
        assert run_chunk(chunk_id, "shop-dxt", lane, booking=published[0]["booking"]) == "deferred"  # early
        assert published[1] == {"account": "shop-dxt", "lane": lane, "booking": published[1]["booking"]}
        time.sleep(max(0.0, asked + 1.1 - time.monotonic()))  # the window: 1.05 s
        assert run_chunk(chunk_id, "shop-dxt", lane, booking=published[1]["booking"]) == "accepted"
    finally:
        before_task_publish.disconnect(capture)
        for t in taken:
            if t.ok:
                bucket.give_back("shop-dxt", t.ticket)
    assert len(published) == 2 and len(direct.sends) == 1


def test_a_message_from_a_newer_version_is_sent_all_the_same(direct):
    """A field this version does not know (a rolling upgrade) is ignored, not a TypeError."""
    from smsq.tasks.send import send_chunk

    direct.reset()
    receipt = send_sms("shop-dxt", ["13700009997"], CONTENT)
    ((chunk_id, lane),) = chunks_of(receipt.batch_id)
    assert send_chunk(chunk_id, account="shop-dxt", lane=lane, hint="a newer version's") == "accepted"
    assert [s.numbers for s in direct.sends] == [["13700009997"]]


def test_an_otp_is_stored_in_one_transaction_and_its_refusals_counted_in_another(direct):
    direct.reset()
    send_sms("shop-dxt", ["13700009990"], CONTENT)  # warm: schema, connections
    published = []

    def count(sender=None, headers=None, **_):
        published.append(headers["task"])

    before_task_publish.connect(count)
    try:
        with Tally(engine_for(settings().database_url)) as tally:
            receipt = send_sms("shop-dxt", ["13700009991", "13700009992", "13700009991", "12345"], CONTENT)
    finally:
        before_task_publish.disconnect(count)
    # the account's blocked numbers among these, the batch, its chunk, its numbers, and the
    # rejected entry; then, as a number was refused, the count of refusals by reason
    # (smsq_rejected_total) in a transaction of its own. Under the duplicate guard (off in the
    # suite's config) the batch's row would be written first, as a guarded number names it,
    # and completed at the end: one more, and the guard's own in the database without Redis.
    rules = settings().kind_rules("shop-dxt", "notice")
    guarded = bool(rules.duplicate_window or rules.per_number)
    extra = (1 + (0 if settings().redis_url else 1)) if guarded else 0
    assert [len(t) for t in tally.transactions] == [5 + extra, 1], tally.transactions
    assert receipt.queued and receipt.accepted == 2 and [m for m, _ in receipt.rejected] == ["12345"]
    assert published == ["smsq.send_chunk"]  # its chunk, published by the call itself: no split job
    with session_scope(settings().database_url) as s:
        rows = s.execute(
            select(Recipient.mobile, Recipient.state, Recipient.chunk_seq)
            .where(Recipient.batch_id == receipt.batch_id)
            .order_by(Recipient.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("13700009991", "queued", 0),
        ("13700009992", "queued", 0),
        ("12345", "rejected", None),
    ]
    chunk_id, lane = chunks_of(receipt.batch_id)[0]
    assert lane == "priority" and run_chunk(chunk_id, "shop-dxt", lane) == "accepted"
    assert direct.sends[-1].numbers == ["13700009991", "13700009992"]  # in the order given


@pytest.mark.parametrize(
    "ids",
    [["a\x1fb", "c", "d"], ["", "c", "d"], ["x1", "x2", "x3"]],
    ids=["a separator in an id", "an empty id", "plain ids"],
)
def test_each_number_keeps_the_vendor_id_it_was_given_whatever_the_id(direct, ids):
    from smsq.providers.base import Outcome, SendResult
    from smsq.store.ledger import claim
    from smsq.tasks.outcomes import decided, record

    numbers = [f"1370005{i:04d}" for i in range(3)]
    receipt = send_sms("shop-dxt", numbers, f"{CONTENT} ({ids!r})")  # its own text: no duplicate
    [(chunk_id, _)] = chunks_of(receipt.batch_id)
    work = claim(settings(), chunk_id)
    assert [m for _, m in work.recipients] == numbers
    accepted = SendResult(Outcome.OK, code="0", vendor_ids=ids)
    assert record(settings(), work, accepted, decided(settings(), work, accepted), 0.01)[0] == "accepted"
    with session_scope(settings().database_url) as s:
        stored = dict(
            s.execute(
                select(Recipient.mobile, Recipient.vendor_id).where(
                    Recipient.batch_id == receipt.batch_id, Recipient.state == "sent"
                )
            ).all()
        )
    assert stored == dict(zip(numbers, ids, strict=False))


def test_no_index_of_recipients_names_a_column_the_record_writes(direct):
    """On PostgreSQL the record's update of a chunk's 100 numbers then touches no index
    (a HOT update, with the room fillfactor 50 leaves on the page): migration 0008."""
    from sqlalchemy import inspect

    engine = engine_for(settings().database_url)
    written = {"state", "vendor_id", "updated_at", "code", "detail"}
    inspector = inspect(engine)
    indexed = {column for index in inspector.get_indexes("recipients") for column in index["column_names"]}
    indexed |= {
        column for unique in inspector.get_unique_constraints("recipients") for column in unique["column_names"]
    }
    assert not indexed & written, indexed & written
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            options = conn.exec_driver_sql("SELECT reloptions FROM pg_class WHERE relname = 'recipients'").scalar()
        assert "fillfactor=50" in (options or [])

"""Validity (tasks/validity.py): the arithmetic with a fake clock, and what a send keeps
of it; then a chunk claimed or left pending past it ends ``expired``, unsent, with its
numbers, and nothing moves it again. Embedded (a SQLite file for the module), no worker,
no vendor: nothing here may call one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from smsq.store import ledger
from smsq.store.lifecycle import ChunkState, IllegalTransition, RecipientState, check_chunk, check_recipient
from smsq.store.models import Batch, Chunk, Recipient, utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks import validity as v
from smsq.tasks.settle import settle
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import apply_env, mode_env, restore_env, write_config

SIGNED = "【某某科技】您的验证码是 345678"
T0 = datetime(2026, 12, 3, 10, 0, 0)


@pytest.fixture(scope="module", autouse=True)
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validity")
    config = write_config(tmp / "smsq.toml", "http://127.0.0.1:9/")  # never called here
    saved = apply_env(mode_env("embedded", tmp, config))
    yield
    restore_env(saved)


# -- the arithmetic ----------------------------------------------------------------


@pytest.mark.parametrize(
    "given, seconds",
    [
        (None, 300),  # the kind's default
        (timedelta(minutes=2), 120),
        (90, 90),
        (2.5, 2.5),
        ("90s", 90),
        ("5m", 300),
        (" 2H ", 7200),
        ("1d", 86400),
        (0, None),  # no limit, whatever the kind's default
        ("0", None),
        (timedelta(0), None),
    ],
)
def test_what_a_caller_may_give_as_valid_for(given, seconds):
    assert v.validity_seconds(given, 300) == seconds


def test_without_a_default_and_without_valid_for_there_is_no_limit():
    assert v.validity_seconds(None, None) is None


@pytest.mark.parametrize("given", ["5x", "", "m5", "-5m", -1, float("nan"), float("inf"), True, [300], timedelta(-1)])
def test_a_valid_for_that_is_no_duration_is_refused_in_one_sentence(given):
    with pytest.raises(ValueError, match=r'^valid_for must be a duration like "90s", "5m"') as raised:
        v.validity_seconds(given, 300)
    assert "\n" not in str(raised.value)


def test_a_send_lapses_at_its_moment_and_not_before():
    until = v.valid_until(300, T0)
    assert until == T0 + timedelta(minutes=5)
    assert not v.lapsed(until, T0)
    assert not v.lapsed(until, until - timedelta(microseconds=1))
    assert v.lapsed(until, until)  # at the moment itself it is too late
    assert v.lapsed(until, until + timedelta(hours=1))
    assert v.valid_until(None, T0) is None and not v.lapsed(None, T0 + timedelta(days=365))


def test_validity_is_described_as_the_config_writes_it():
    assert [v.describe(s) for s in (300, 90, 7200, 86400, 2.5, None)] == ["5m", "90s", "2h", "1d", "2.5s", None]
    assert v.clock(T0) == "2026-12-03T18:00:00+08:00"  # Beijing time


# -- what a send keeps -----------------------------------------------------------------


def _batch(batch_id: int) -> Batch:
    with session_scope(settings().database_url) as s:
        batch = s.get(Batch, batch_id)
        s.expunge(batch)
        return batch


def test_an_otp_is_valid_for_its_kinds_five_minutes_a_notice_without_limit():
    before = utcnow()
    otp = send_sms("shop-dxt", ["13800000001"], SIGNED, kind="otp")
    after = utcnow()
    assert otp.valid_until is not None
    assert before + timedelta(minutes=5) <= otp.valid_until <= after + timedelta(minutes=5)
    assert _batch(otp.batch_id).valid_until == otp.valid_until
    status = batch_status(otp.batch_id)
    assert status.valid_until == otp.valid_until and status.as_dict()["valid_until"].endswith("+08:00")
    notice = send_sms("shop-dxt", ["13800000001"], SIGNED)
    assert notice.valid_until is None and batch_status(notice.batch_id).as_dict()["valid_until"] is None
    # given: it wins over the kind's, and 0 lifts the otp's limit (another number: the otp caps allow 1 a minute)
    assert send_sms("shop-dxt", ["13800000002"], SIGNED, valid_for="0", kind="otp").valid_until is None
    given = send_sms("shop-dxt", ["13800000001"], SIGNED, valid_for=timedelta(seconds=30))
    assert given.valid_until is not None and given.valid_until - _batch(given.batch_id).created_at == timedelta(
        seconds=30
    )


def test_a_scheduled_send_is_valid_from_its_time_not_from_when_it_was_stored():
    at = datetime.now().astimezone() + timedelta(hours=2)
    receipt = send_sms("shop-dxt", ["13800000002"], SIGNED, send_at=at, valid_for="10m")
    batch = _batch(receipt.batch_id)
    assert batch.send_at is not None and receipt.valid_until == batch.send_at + timedelta(minutes=10)


def batch_count() -> int:
    with session_scope(settings().database_url) as s:
        return s.scalar(select(func.count()).select_from(Batch)) or 0


def test_a_bad_valid_for_stores_nothing():
    before = batch_count()
    with pytest.raises(ValueError, match="^valid_for must be"):
        send_sms("shop-dxt", ["13800000003"], SIGNED, valid_for="5 minutes")
    assert batch_count() == before


def test_an_idempotency_key_replays_only_the_same_validity():
    from smsq.tasks.idempotency import IdempotencyConflictError

    first = send_sms("shop-dxt", ["13800000004"], SIGNED, idempotency_key="code-1", valid_for="5m")
    again = send_sms("shop-dxt", ["13800000004"], SIGNED, idempotency_key="code-1", valid_for=300)
    assert again.replayed and again.batch_id == first.batch_id and again.valid_until == first.valid_until
    with pytest.raises(IdempotencyConflictError):
        send_sms("shop-dxt", ["13800000004"], SIGNED, idempotency_key="code-1", valid_for="10m")


# -- a chunk past it -------------------------------------------------------------------


def _lapse(batch_id: int) -> None:
    """The batch's validity ended a second ago (the clock moved on, in effect)."""
    with session_scope(settings().database_url) as s:
        s.execute(update(Batch).where(Batch.id == batch_id).values(valid_until=utcnow() - timedelta(seconds=1)))


def _states(batch_id: int) -> tuple[list[str], list[str]]:
    with session_scope(settings().database_url) as s:
        chunks = s.scalars(select(Chunk.state).where(Chunk.batch_id == batch_id).order_by(Chunk.seq)).all()
        numbers = s.scalars(
            select(Recipient.state).where(Recipient.batch_id == batch_id, Recipient.chunk_seq.is_not(None))
        ).all()
    return list(chunks), list(numbers)


def test_a_chunk_claimed_after_its_validity_ends_expired_unsent(monkeypatch):
    receipt = send_sms("shop-dxt", ["13800000010", "13800000011"], SIGNED, kind="otp", valid_for="1m")
    conf = settings()
    with session_scope(conf.database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    claimed = ledger.claim(conf, chunk_id)
    assert claimed is not None and claimed.valid_until == receipt.valid_until
    assert receipt.valid_until is not None
    monkeypatch.setattr(v, "utcnow", lambda: receipt.valid_until - timedelta(seconds=1))
    assert not v.expire_if_lapsed(conf, claimed)  # a second to go: it is sent
    assert _states(receipt.batch_id) == (["sending"], ["queued", "queued"])
    monkeypatch.setattr(v, "utcnow", lambda: receipt.valid_until)
    assert v.expire_if_lapsed(conf, claimed)
    assert _states(receipt.batch_id) == (["expired"], ["expired", "expired"])
    with session_scope(conf.database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        assert (chunk.attempts, chunk.outcome) == (0, "expired")  # no vendor call was made
        assert chunk.detail is not None and "valid until 20" in chunk.detail
    status = batch_status(receipt.batch_id)
    assert status.recipients == {"expired": 2} and status.chunks == {"expired": 1}
    assert status.final and not status.clean


def test_the_relay_expires_pending_chunks_past_their_validity_and_no_other():
    conf = settings()
    past = send_sms("shop-dxt", [f"1390000{i:04d}" for i in range(3)], SIGNED, valid_for="1h")
    current = send_sms("shop-dxt", ["13900001000"], SIGNED, valid_for="1h")
    unlimited = send_sms("shop-dxt", ["13900002000"], SIGNED)
    _lapse(past.batch_id)
    with session_scope(conf.database_url) as s:  # old, but without a limit: never expired
        s.execute(update(Batch).where(Batch.id == unlimited.batch_id).values(created_at=utcnow() - timedelta(days=9)))
    assert v.expire_waiting(conf) >= 1
    assert _states(past.batch_id) == (["expired"], ["expired"] * 3)
    assert _states(current.batch_id) == (["pending"], ["queued"])
    assert _states(unlimited.batch_id) == (["pending"], ["queued"])
    assert v.expire_waiting(conf) == 0  # a second pass finds nothing more
    # a worker that claims it now finds it no longer pending
    with session_scope(conf.database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == past.batch_id))
    assert ledger.claim(conf, chunk_id) is None


def test_an_expired_chunk_is_never_settled_nor_resent():
    receipt = send_sms("shop-dxt", ["13800000020"], SIGNED, valid_for="1h")
    _lapse(receipt.batch_id)
    v.expire_waiting(settings())
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    for action in ("resend", "failed", "accepted"):
        with pytest.raises(ValueError, match=f"chunk {chunk_id} is expired; only"):
            settle(chunk_id, action)
    assert _states(receipt.batch_id) == (["expired"], ["expired"])
    for chunk_to in ChunkState:  # final: no move of the tables leads out
        with pytest.raises(IllegalTransition):
            check_chunk(ChunkState.EXPIRED, chunk_to)
    for number_to in RecipientState:
        with pytest.raises(IllegalTransition):
            check_recipient(RecipientState.EXPIRED, number_to)


def test_a_worker_that_claims_a_chunk_past_its_validity_calls_no_vendor_and_says_expired():
    from smsq.tasks.send import ChunkExpired, run_chunk, send_chunk

    # the account's vendor is at 127.0.0.1:9, where nothing listens: a call would end pending
    # (a transient failure), not expired
    receipt = send_sms("shop-dxt", ["13800000030", "13800000031"], SIGNED, kind="otp")
    _lapse(receipt.batch_id)
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    with pytest.raises(ChunkExpired, match=rf"^chunk {chunk_id} \(batch {receipt.batch_id}, shop-dxt\): expired — not"):
        run_chunk(chunk_id)
    assert _states(receipt.batch_id) == (["expired"], ["expired", "expired"])
    with session_scope(settings().database_url) as s:
        assert s.scalar(select(Chunk.attempts).where(Chunk.id == chunk_id)) == 0
    assert run_chunk(chunk_id) == "skipped"  # a redelivered message finds it final
    assert ChunkExpired in send_chunk.throws  # Flower: an expected failure, logged without a traceback


def test_a_group_ends_as_expired_only_when_every_chunk_not_sent_expired():
    from smsq.tasks.send import ChunkExpired, ChunkFailed, ChunkUnknown, _group_error

    assert _group_error([ChunkExpired("a"), ChunkExpired("b")]) is ChunkExpired
    assert _group_error([ChunkExpired("a"), ChunkFailed("b")]) is ChunkFailed
    assert _group_error([ChunkExpired("a"), ChunkUnknown("b")]) is ChunkUnknown

"""Each operation of the ledger (store/ledger), on SQLite and on PostgreSQL: what it
writes, and that a move the transition table does not allow raises and writes nothing."""

from __future__ import annotations

import os
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from smsq.providers import Outcome, SendResult
from smsq.store import ledger
from smsq.store.lifecycle import ChunkState as C
from smsq.store.lifecycle import IllegalTransition
from smsq.store.lifecycle import RecipientState as R
from smsq.store.models import (
    Batch,
    BlockedNumber,
    Chunk,
    EarlierSend,
    Recipient,
    SplitChunk,
    SplitJob,
    StatusReport,
    VendorCall,
    utcnow,
)
from smsq.worker.db import session_scope, upgrade

from ..conftest import fresh_postgres

CONTENT = "【某某科技】您的验证码是 345678"


@pytest.fixture(params=["sqlite", "postgresql"])
def conf(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = fresh_postgres(f"smsq_ledger_{os.getpid()}")
    upgrade(url)
    return SimpleNamespace(database_url=url)


def a_batch(conf, numbers: list[str], chunk_size: int = 100, account: str = "shop-dxt", kind: str = "notice") -> int:
    """A batch cut into pending chunks (the ledger's write_short); its id."""
    now = utcnow()
    with session_scope(conf.database_url) as s:
        batch = Batch(account=account, content=CONTENT, lane="bulk", created_at=now, kind=kind)
        s.add(batch)
        s.flush()
        rows = [
            (seq, len(numbers[at : at + chunk_size]), ",".join(numbers[at : at + chunk_size]))
            for seq, at in enumerate(range(0, len(numbers), chunk_size))
        ]
        ledger.write_short(s, batch, rows, not_before=None, now=now)
        return batch.id


def chunks(conf, batch_id: int) -> dict[int, tuple]:
    with session_scope(conf.database_url, readonly=True) as s:
        return {
            seq: (state, attempts)
            for seq, state, attempts in s.execute(
                select(Chunk.seq, Chunk.state, Chunk.attempts).where(Chunk.batch_id == batch_id)
            )
        }


def numbers(conf, batch_id: int) -> dict[str, tuple]:
    with session_scope(conf.database_url, readonly=True) as s:
        return {
            m: (state, vid)
            for m, state, vid in s.execute(
                select(Recipient.mobile, Recipient.state, Recipient.vendor_id).where(Recipient.batch_id == batch_id)
            )
        }


def chunk_id(conf, batch_id: int, seq: int = 0) -> int:
    with session_scope(conf.database_url, readonly=True) as s:
        return s.scalar(select(Chunk.id).where(Chunk.batch_id == batch_id, Chunk.seq == seq))


def calls(conf) -> int:
    with session_scope(conf.database_url, readonly=True) as s:
        return s.scalar(select(func.count()).select_from(VendorCall))


TWO = ["13800000001", "13800000002"]


def test_claim_takes_a_pending_chunk_once_with_its_numbers_in_order(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    assert [m for _, m in claimed.recipients] == TWO and claimed.attempt == 1 and claimed.content == CONTENT
    assert ledger.claim(conf, claimed.chunk_id) is None  # a redelivered message claims nothing
    assert chunks(conf, batch_id) == {0: (C.SENDING, 1)}


def test_a_claim_carries_its_batchs_kind_and_a_batch_stored_without_one_is_a_notice(conf):
    otp = a_batch(conf, TWO, kind="otp")
    assert ledger.claim(conf, chunk_id(conf, otp)).kind == "otp"
    with session_scope(conf.database_url) as s:  # as a batch row written before the column existed
        s.execute(
            text(
                "INSERT INTO batches (account, content, lane, segments, accepted, rejected, created_at) "
                "VALUES ('shop-dxt', :content, 'bulk', 1, 1, 0, :now)"
            ),
            {"content": CONTENT, "now": utcnow()},
        )
        older = s.scalar(select(func.max(Batch.id)))
        ledger.write_short(s, s.get(Batch, older), [(0, 1, TWO[0])], not_before=None, now=utcnow())
    assert ledger.claim(conf, chunk_id(conf, older)).kind == "notice"


def test_release_gives_the_claim_back_uncounted_and_hold_keeps_a_pending_chunk_waiting(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    later = utcnow() + timedelta(minutes=5)
    assert ledger.release(conf, claimed, "no slot", later)
    assert chunks(conf, batch_id) == {0: (C.PENDING, 0)}
    assert not ledger.release(conf, claimed, "again")  # no longer this claim's
    assert ledger.claim(conf, claimed.chunk_id) is None  # not due yet
    ledger.hold(conf, [claimed.chunk_id], "waiting for the account", later)
    with session_scope(conf.database_url, readonly=True) as s:
        row = s.get(Chunk, claimed.chunk_id)
        assert (row.state, row.detail, row.next_attempt_at, row.queued_at) == (
            C.PENDING,
            "waiting for the account",
            later,
            None,
        )


@pytest.mark.parametrize("call_seconds", [0.05, None], ids=["one statement on postgresql", "portable"])
def test_record_accepted_keeps_each_numbers_vendor_id_and_counts_the_call(conf, call_seconds):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    result = SendResult(Outcome.OK, code="0", vendor_ids=["v1", "v2"], batch_ref="ref")
    assert ledger.record(conf, claimed, result, C.ACCEPTED, call_seconds=call_seconds)
    assert chunks(conf, batch_id) == {0: (C.ACCEPTED, 1)}
    assert numbers(conf, batch_id) == {TWO[0]: (R.SENT, "v1"), TWO[1]: (R.SENT, "v2")}
    assert calls(conf) == (1 if call_seconds else 0)
    # A second answer to the same claim changes nothing (but its call is counted).
    assert not ledger.record(conf, claimed, SendResult(Outcome.AMBIGUOUS), C.UNKNOWN, call_seconds=0.1)
    assert chunks(conf, batch_id) == {0: (C.ACCEPTED, 1)}


def test_record_failed_numbers_and_a_retry_that_does_not_count(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    retry_at = utcnow() + timedelta(seconds=30)
    assert ledger.record(
        conf,
        claimed,
        SendResult(Outcome.RATE_LIMITED, message="slow down"),
        C.PENDING,
        retry_at=retry_at,
        queued=True,
        counted=False,
    )
    assert chunks(conf, batch_id) == {0: (C.PENDING, 0)}
    with session_scope(conf.database_url) as s:
        s.get(Chunk, claimed.chunk_id).next_attempt_at = None
    claimed = ledger.claim(conf, claimed.chunk_id)
    refused = SendResult(Outcome.OK, code="0", failed_numbers={TWO[1]: "not a subscriber"})
    assert ledger.record(conf, claimed, refused, C.ACCEPTED, call_seconds=0.1)
    assert numbers(conf, batch_id) == {TWO[0]: (R.SENT, None), TWO[1]: (R.FAILED, None)}


@pytest.mark.parametrize("state", [C.CANCELLED, C.MOVED])
def test_record_refuses_a_state_no_answer_leads_to_and_writes_nothing(conf, state):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    with pytest.raises(IllegalTransition, match=f"chunk {claimed.chunk_id}: sending -> {state}"):
        ledger.record(conf, claimed, SendResult(Outcome.OK), state, call_seconds=0.1)
    assert chunks(conf, batch_id) == {0: (C.SENDING, 1)} and calls(conf) == 0
    assert {state for state, _ in numbers(conf, batch_id).values()} == {R.QUEUED}


def test_expire_makes_a_stale_claim_unknown_and_a_late_answer_still_wins(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    with session_scope(conf.database_url) as s:
        assert ledger.expire(s, utcnow() - timedelta(minutes=1), "too slow", 10) == (0, [])
    with session_scope(conf.database_url) as s:
        assert ledger.expire(s, utcnow() + timedelta(seconds=1), "too slow", 10) == (1, [(claimed.chunk_id, batch_id)])
    assert chunks(conf, batch_id) == {0: (C.UNKNOWN, 1)}
    assert {state for state, _ in numbers(conf, batch_id).values()} == {R.UNKNOWN}
    assert ledger.record(conf, claimed, SendResult(Outcome.OK, vendor_ids=["a", "b"]), C.ACCEPTED)
    assert numbers(conf, batch_id) == {TWO[0]: (R.SENT, "a"), TWO[1]: (R.SENT, "b")}


def test_cancel_takes_only_pending_chunks_and_their_queued_numbers(conf):
    batch_id = a_batch(conf, [f"1380000{i:04d}" for i in range(3)], chunk_size=2)
    ledger.claim(conf, chunk_id(conf, batch_id, 0))
    with session_scope(conf.database_url) as s:
        assert ledger.cancel_pending(s, [batch_id]) == (1, 1)
    assert chunks(conf, batch_id) == {0: (C.SENDING, 1), 1: (C.CANCELLED, 0)}
    assert sorted(state for state, _ in numbers(conf, batch_id).values()) == [R.CANCELLED, R.QUEUED, R.QUEUED]


def test_settle_resend_keeps_the_earlier_send_and_settle_refuses_a_pending_chunk(conf):
    batch_id = a_batch(conf, TWO, chunk_size=1)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id, 0))
    ledger.record(conf, claimed, SendResult(Outcome.AMBIGUOUS, message="timeout"), C.UNKNOWN)
    with session_scope(conf.database_url) as s:
        settled, changed = ledger.settle(s, batch_id, C.UNKNOWN, "resend", "resent by an operator")
    assert (len(settled), changed) == (1, 1)
    assert chunks(conf, batch_id) == {0: (C.PENDING, 1), 1: (C.PENDING, 0)}
    with session_scope(conf.database_url, readonly=True) as s:
        assert s.scalars(select(EarlierSend.state)).all() == [R.UNKNOWN]
    with pytest.raises(IllegalTransition, match="pending -> accepted"), session_scope(conf.database_url) as s:
        ledger.settle(s, batch_id, C.PENDING, "accepted", "no")
    assert chunks(conf, batch_id) == {0: (C.PENDING, 1), 1: (C.PENDING, 0)}


def test_a_report_settles_its_number_and_shows_an_unknown_chunk_was_accepted(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    ledger.record(conf, claimed, SendResult(Outcome.AMBIGUOUS), C.UNKNOWN)
    with session_scope(conf.database_url) as s:
        first = s.scalars(select(Recipient).where(Recipient.mobile == TWO[0])).one()
        report = StatusReport(
            account="shop-dxt",
            vendor_id="v9",
            mobile=TWO[0],
            delivered=True,
            code="DELIVRD",
            dedupe_key="k",
            created_at=utcnow(),
        )
        ledger.settle_by_report(s, first, report, utcnow())
    assert chunks(conf, batch_id) == {0: (C.ACCEPTED, 1)}
    assert numbers(conf, batch_id) == {TWO[0]: (R.DELIVERED, "v9"), TWO[1]: (R.SENT, None)}


def test_a_report_for_a_number_refused_at_intake_raises_and_writes_nothing(conf):
    batch_id = a_batch(conf, TWO)
    with session_scope(conf.database_url) as s:
        ledger.write_rejected(s, batch_id, [("12345", "not a mobile number")] * 2, utcnow())  # once
    with pytest.raises(IllegalTransition, match="rejected -> delivered"), session_scope(conf.database_url) as s:
        rejected = s.scalars(select(Recipient).where(Recipient.mobile == "12345")).one()
        report = StatusReport(
            account="shop-dxt", mobile="12345", delivered=True, code="0", dedupe_key="k", created_at=utcnow()
        )
        ledger.settle_by_report(s, rejected, report, utcnow())
    assert numbers(conf, batch_id)["12345"] == (R.REJECTED, None)


def test_move_takes_the_claim_and_the_accounts_pending_chunks_to_new_chunks(conf):
    batch_id = a_batch(conf, [f"1380000{i:04d}" for i in range(5)], chunk_size=2)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id, 0))
    now = utcnow()
    with session_scope(conf.database_url) as s:
        s.add(BlockedNumber(account="shop-linkws", mobile="13800000004", reason="unsubscribed", created_at=now))
    with session_scope(conf.database_url) as s:
        moved, new = ledger.move(s, claimed, s.get(Batch, batch_id), "shop-linkws", CONTENT, 3, "moved on", now)
    assert moved == 3 and len(new) == 2
    assert chunks(conf, batch_id) == {
        0: (C.MOVED, 1),
        1: (C.MOVED, 0),
        2: (C.MOVED, 0),
        3: (C.PENDING, 0),
        4: (C.PENDING, 0),
    }
    assert sorted(state for state, _ in numbers(conf, batch_id).values()) == [R.FAILED] + [R.QUEUED] * 4
    with session_scope(conf.database_url) as s:
        assert ledger.move(s, claimed, s.get(Batch, batch_id), "shop-linkws", CONTENT, 3, "again", now) is None
        assert not ledger.fail_claimed(s, claimed, "no longer ours", now)


BLOCKED_11 = SendResult(Outcome.BLOCKED, code="-11", message="屏蔽手機號碼 (blocked number)", refused_whole=True)


def test_narrow_fails_the_offenders_and_puts_the_rest_in_new_chunks_of_the_account(conf):
    five = [f"1380000{i:04d}" for i in range(5)]
    batch_id = a_batch(conf, five, chunk_size=5, account="shop-linkws")
    claimed = ledger.claim(conf, chunk_id(conf, batch_id, 0))
    now = utcnow()
    with session_scope(conf.database_url) as s:
        s.add(BlockedNumber(account="shop-linkws", mobile=five[3], reason="reported blocked", created_at=now))
        s.add(BlockedNumber(account="other", mobile=five[0], reason="another account's", created_at=now))
    with session_scope(conf.database_url) as s:
        refused = ledger.refused_chunk(s, claimed)
        assert (refused.root, refused.content) == (claimed.chunk_id, None)
        assert refused.numbers == claimed.recipients and refused.blocked == {five[3]}
        assert ledger.spend_calls(s, refused.root, 2, most=2) == 2
        rid = dict((m, r) for r, m in refused.numbers)
        parts = [[rid[five[0]], rid[five[1]]], [rid[five[2]], rid[five[4]]]]
        new = ledger.narrow(s, claimed, BLOCKED_11, refused, failed=[rid[five[3]]], parts=parts, detail="d", now=now)
    assert len(new) == 2
    assert chunks(conf, batch_id) == {0: (C.NARROWED, 1), 1: (C.PENDING, 0), 2: (C.PENDING, 0)}
    with session_scope(conf.database_url, readonly=True) as s:
        rows = s.execute(select(Recipient.mobile, Recipient.state, Recipient.chunk_seq, Recipient.code)).all()
        made = s.execute(select(Chunk.id, Chunk.size, Chunk.account, Chunk.narrowed_from, Chunk.queued_at)).all()
    assert sorted(rows) == [
        (five[0], R.QUEUED, 1, None),
        (five[1], R.QUEUED, 1, None),
        (five[2], R.QUEUED, 2, None),
        (five[3], R.FAILED, 0, "-11"),
        (five[4], R.QUEUED, 2, None),
    ]
    assert {(size, account, root, at) for i, size, account, root, at in made if i in new} == {
        (2, "shop-linkws", claimed.chunk_id, now)
    }
    # A half narrowed in turn counts against the same root: over the cap, nothing is counted.
    half = ledger.claim(conf, new[0])
    with session_scope(conf.database_url) as s:
        refused = ledger.refused_chunk(s, half)
        assert refused.root == claimed.chunk_id
        assert ledger.spend_calls(s, refused.root, 2, most=3) is None
        assert ledger.spent_calls(s, refused.root) == 2
        assert (
            ledger.narrow(
                s, half, BLOCKED_11, refused, failed=[r for r, _ in refused.numbers], parts=[], detail="capped", now=now
            )
            == []
        )
    assert chunks(conf, batch_id)[1] == (C.FAILED, 1)
    with session_scope(conf.database_url) as s:  # no longer this claim's: nothing written
        assert ledger.refused_chunk(s, half) is None
        assert ledger.narrow(s, half, BLOCKED_11, refused, failed=[], parts=[[1]], detail="again", now=now) is None


def test_fail_claimed_fails_the_chunk_and_its_queued_numbers(conf):
    batch_id = a_batch(conf, TWO)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    with session_scope(conf.database_url) as s:
        assert ledger.fail_claimed(s, claimed, "no account can carry it", utcnow())
    assert chunks(conf, batch_id) == {0: (C.FAILED, 1)}
    assert {state for state, _ in numbers(conf, batch_id).values()} == {R.FAILED}


def test_cut_writes_staged_chunks_once(conf):
    now = utcnow()
    with session_scope(conf.database_url) as s:
        batch = Batch(account="shop-dxt", content=CONTENT, lane="bulk", created_at=now)
        s.add(batch)
        s.flush()
        batch_id = batch.id
        s.add_all(
            [
                SplitJob(batch_id=batch_id, created_at=now),
                SplitChunk(batch_id=batch_id, seq=0, size=2, mobiles=",".join(TWO)),
                SplitChunk(batch_id=batch_id, seq=1, size=1, mobiles="13800000003"),
            ]
        )
    with session_scope(conf.database_url) as s:
        cut = ledger.cut(s, s.get(Batch, batch_id), limit=1, not_before=None, now=now)
    assert (cut.taken, len(cut.published), cut.staged_left) == (1, 1, True)
    with session_scope(conf.database_url) as s:
        cut = ledger.cut(s, s.get(Batch, batch_id), limit=None, not_before=None, now=now)
    assert (cut.taken, cut.staged_left) == (1, False)
    assert chunks(conf, batch_id) == {0: (C.PENDING, 0), 1: (C.PENDING, 0)}
    assert len(numbers(conf, batch_id)) == 3


def test_queue_marks_leave_the_state_alone(conf):
    batch_id = a_batch(conf, TWO, chunk_size=1)
    first, second = chunk_id(conf, batch_id, 0), chunk_id(conf, batch_id, 1)
    now = utcnow()

    def queued() -> dict:
        with session_scope(conf.database_url, readonly=True) as s:
            return dict(s.execute(select(Chunk.id, Chunk.queued_at).where(Chunk.batch_id == batch_id)).all())

    with session_scope(conf.database_url) as s:
        ledger.unqueue(s, [first, second])
        ledger.mark_queued(s, [first], now)
    assert queued() == {first: now, second: None}
    with session_scope(conf.database_url) as s:
        ledger.unqueue(s, [first, second], queued_at=now - timedelta(seconds=1))  # not this caller's mark
    assert queued() == {first: now, second: None}
    ledger.hold(conf, [first], "worker w does not know account a", now + timedelta(hours=1))
    with session_scope(conf.database_url) as s:
        assert ledger.wake(s, ["shop-dxt"], "worker % does not know account %") == 1
        assert s.get(Chunk, first).next_attempt_at is None
    assert chunks(conf, batch_id) == {0: (C.PENDING, 0), 1: (C.PENDING, 0)}


# -- numbers a vendor refused in an answer that took the rest ------------------------

THREE = ["13800000001", "13800000002", "13800000003"]


def refusals(conf, batch_id: int) -> tuple:
    with session_scope(conf.database_url, readonly=True) as s:
        row = s.execute(select(Chunk.refused, Chunk.refused_open, Chunk.refused_due_at)).one()
        return tuple(row)


def details(conf, batch_id: int) -> dict[str, tuple]:
    with session_scope(conf.database_url, readonly=True) as s:
        return {
            m: (state, code, detail)
            for m, state, code, detail in s.execute(
                select(Recipient.mobile, Recipient.state, Recipient.code, Recipient.detail).where(
                    Recipient.batch_id == batch_id
                )
            )
        }


def delivered(conf, mobile: str, vendor_id: str) -> None:
    """A delivery report for ``mobile``, as the polls apply one."""
    with session_scope(conf.database_url) as s:
        send = s.scalars(select(Recipient).where(Recipient.mobile == mobile)).one()
        report = StatusReport(
            account="shop-dxt",
            vendor_id=vendor_id,
            mobile=mobile,
            delivered=True,
            code="10",
            dedupe_key=mobile,
            created_at=utcnow(),
        )
        ledger.settle_by_report(s, send, report, utcnow())


# dxt "0|2|1|9001,9002": two taken with an SMSID each, one refused, none named
COUNTED = SendResult(Outcome.OK, code="0", vendor_ids=["9001", "9002"], batch_ref="9001,9002", accepted=2, rejected=1)


@pytest.mark.parametrize(
    "call_seconds", [0.05, None], ids=["with a call (postgresql: never one statement)", "portable"]
)
def test_numbers_refused_by_count_get_no_id_and_reports_place_the_refused_one(conf, call_seconds):
    batch_id = a_batch(conf, THREE)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    due = utcnow() + timedelta(hours=1)
    assert ledger.record(conf, claimed, COUNTED, C.ACCEPTED, call_seconds=call_seconds, refused_due_at=due)
    assert refusals(conf, batch_id) == (1, 1, due)
    # which number the ids belong to the vendor does not say: none gets one
    assert numbers(conf, batch_id) == {m: (R.SENT, None) for m in THREE}
    assert all("counted 1 of this call's 3 numbers refused" in d for _, _, d in details(conf, batch_id).values())
    delivered(conf, THREE[0], "9001")
    with session_scope(conf.database_url) as s:
        assert ledger.place_refusals(s, utcnow(), "1 h", 10) == []  # two still unplaced, for one refusal
    delivered(conf, THREE[2], "9002")
    with session_scope(conf.database_url) as s:  # the one left is the refused one, before its time
        assert ledger.place_refusals(s, utcnow(), "1 h", 10) == [(claimed.chunk_id, batch_id, 1)]
    assert numbers(conf, batch_id) == {
        THREE[0]: (R.DELIVERED, "9001"),
        THREE[1]: (R.FAILED, None),
        THREE[2]: (R.DELIVERED, "9002"),
    }
    state, code, detail = details(conf, batch_id)[THREE[1]]
    assert code == ledger.REFUSED_CODE and "delivery reports placed all the others" in detail
    assert refusals(conf, batch_id) == (1, None, None)
    with session_scope(conf.database_url) as s:
        assert ledger.place_refusals(s, utcnow() + timedelta(hours=2), "1 h", 10) == []  # placed once


def test_numbers_no_report_placed_in_the_window_fail_when_it_ends(conf):
    batch_id = a_batch(conf, THREE)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    due = utcnow() + timedelta(hours=1)
    assert ledger.record(conf, claimed, COUNTED, C.ACCEPTED, call_seconds=0.05, refused_due_at=due)
    delivered(conf, THREE[1], "9001")
    with session_scope(conf.database_url) as s:
        assert ledger.place_refusals(s, due - timedelta(seconds=1), "1 h", 10) == []
    with session_scope(conf.database_url) as s:
        assert ledger.place_refusals(s, due, "1 h (SMSQ_REPORT_WAIT)", 10) == [(claimed.chunk_id, batch_id, 2)]
    after = details(conf, batch_id)
    assert after[THREE[1]][0] == R.DELIVERED
    for mobile in (THREE[0], THREE[2]):  # one of them was taken but never reported: it cannot be told
        state, code, detail = after[mobile]
        assert (state, code) == (R.FAILED, ledger.REFUSED_CODE)
        assert "no delivery report came for this one within 1 h (SMSQ_REPORT_WAIT)" in detail
    # a report arriving late still settles its number
    delivered(conf, THREE[0], "9002")
    assert numbers(conf, batch_id)[THREE[0]] == (R.DELIVERED, "9002")


def test_a_count_covering_every_unnamed_number_fails_them_at_once(conf):
    batch_id = a_batch(conf, THREE)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    # orgws-like: one named with its reason; and a count of two, which covers the two others
    result = SendResult(
        Outcome.OK, code="1", rejected=3, failed_numbers={THREE[0]: "黑名单"}, failed_codes={THREE[0]: "00111"}
    )
    assert ledger.record(conf, claimed, result, C.ACCEPTED, call_seconds=0.05, refused_due_at=utcnow())
    assert refusals(conf, batch_id) == (3, None, None)
    after = details(conf, batch_id)
    assert after[THREE[0]] == (R.FAILED, "00111", "黑名单")
    assert {after[m][:2] for m in THREE[1:]} == {(R.FAILED, ledger.REFUSED_CODE)}
    assert "which leaves none it took" in after[THREE[1]][2]


def test_a_count_without_reports_stays_open_and_the_numbers_sent(conf):
    batch_id = a_batch(conf, THREE)
    claimed = ledger.claim(conf, chunk_id(conf, batch_id))
    result = SendResult(Outcome.OK, code="00000", batch_ref="S" * 32, rejected=1)  # jinxin failCount, no failList
    assert ledger.record(conf, claimed, result, C.ACCEPTED, call_seconds=0.05, refused_due_at=None)
    assert refusals(conf, batch_id) == (1, 1, None)
    assert {state for state, _, _ in details(conf, batch_id).values()} == {R.SENT}
    assert all("sends no delivery reports" in d for _, _, d in details(conf, batch_id).values())
    with session_scope(conf.database_url) as s:
        assert ledger.place_refusals(s, utcnow() + timedelta(days=30), "2 d", 10) == []

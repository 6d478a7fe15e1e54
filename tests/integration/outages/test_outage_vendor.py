"""Transient vendor failures are retried for a time budget, not a count (tasks/decisions.py).

A vendor answering HTTP 500 for a stretch: every number goes out once when it
recovers, each chunk called a bounded number of times. Waits longer than a
broker countdown are held in the database and released by the relay.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert

from smsq.providers import Outcome, SendResult
from smsq.store.ledger import ClaimedChunk, claim
from smsq.store.models import Batch, Chunk, utcnow
from smsq.tasks import send_sms
from smsq.tasks.decisions import backoff
from smsq.tasks.outcomes import decided, record
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ...conftest import wait_final
from .conftest import CONTENT, assert_each_sent_once, chunk_attempts, installed, make_site, numbers, relay_running

pytestmark = pytest.mark.distributed


@pytest.mark.fault
def test_a_vendor_outage_of_30s_ends_with_every_number_sent_once(sim, dxt_sim, tmp_path):
    site = make_site(tmp_path, dxt_sim[1], "distributed", SMSQ_RETRY_FOR="120", SMSQ_RETRY_BACKOFF_MAX="4")
    with installed(site), relay_running():
        site.start_worker(concurrency=4)
        sim.fail_http_for(30)  # longer than the old five attempts lasted
        started = time.monotonic()
        to = numbers(1000)
        receipt = send_sms("shop-dxt", to, CONTENT)
        status = wait_final(receipt.batch_id, timeout=75)
        assert time.monotonic() - started > 29  # nothing could be sent before the vendor recovered
        assert status.chunks == {"accepted": 10}, site.worker_log()[-3000:]
        assert_each_sent_once(sim, to)
        attempts = chunk_attempts(receipt.batch_id)
        assert min(attempts) >= 3 and max(attempts) <= 30, attempts
        assert len(sim.calls) == sum(attempts)  # each attempt one vendor call


def test_backoff_doubles_to_its_cap_with_jitter():
    for attempt, ceiling in [(1, 2), (2, 4), (5, 32), (9, 300), (40, 300)]:
        waits = [backoff(attempt, 300) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


@pytest.fixture
def site(dxt_sim, tmp_path):
    with installed(make_site(tmp_path, dxt_sim[1], "distributed")) as site:
        yield site


def a_chunk(claimed_ago: float, first_ago: float | None = None, state: str = "sending") -> int:
    now = utcnow()
    with session_scope(settings().database_url) as s:
        batch_id = s.execute(
            insert(Batch)
            .values(account="shop-dxt", content=CONTENT, created_at=now, lane="bulk", accepted=1, rejected=0)
            .returning(Batch.id)
        ).scalar()
        return s.execute(
            insert(Chunk)
            .values(
                batch_id=batch_id,
                seq=0,
                account="shop-dxt",
                lane="bulk",
                size=1,
                state=state,
                attempts=7,
                claimed_at=now - timedelta(seconds=claimed_ago),
                first_attempt_at=None if first_ago is None else now - timedelta(seconds=first_ago),
            )
            .returning(Chunk.id)
        ).scalar()


def claimed(claimed_ago: float, first_ago: float | None = None) -> ClaimedChunk:
    """A chunk on its 7th call, as its claim returned it."""
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, a_chunk(claimed_ago, first_ago))
        return ClaimedChunk(
            chunk.id,
            chunk.batch_id,
            0,
            "shop-dxt",
            "bulk",
            7,
            CONTENT,
            None,
            utcnow(),
            [],
            chunk.first_attempt_at or chunk.claimed_at,
        )


def recorded(conf, work: ClaimedChunk, result: SendResult) -> tuple[str, float | None]:
    return record(conf, work, result, decided(conf, work, result))


def test_a_long_wait_is_held_in_the_database_for_the_relay(site):
    work = claimed(claimed_ago=1)
    state, retry_in = recorded(settings(), work, SendResult(Outcome.TRANSIENT, code="500", message="HTTP 500"))
    assert state == "pending" and 64 <= retry_in <= 128  # 2**7 jittered: longer than any broker countdown
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, work.chunk_id)
        assert chunk.queued_at is None  # the relay publishes it when next_attempt_at comes
        assert abs((chunk.next_attempt_at - utcnow()).total_seconds() - retry_in) < 5
        assert chunk.first_attempt_at == chunk.claimed_at  # the budget counts from here


def test_the_claim_brings_the_first_attempt_and_the_spent_budget_gives_up(site):
    conf = dataclasses.replace(settings(), retry_for=3600)
    retried = a_chunk(claimed_ago=600, first_ago=3000, state="pending")
    fresh = a_chunk(claimed_ago=600, state="pending")
    with_first, first_claim = claim(conf, retried), claim(conf, fresh)
    with session_scope(conf.database_url) as s:
        assert with_first.first_attempt_at == s.get(Chunk, retried).first_attempt_at
        assert first_claim.first_attempt_at == s.get(Chunk, fresh).claimed_at  # this claim's call is the first
    assert abs((utcnow() - with_first.first_attempt_at).total_seconds() - 3000) < 60
    spent = claimed(claimed_ago=5, first_ago=3601)
    state, retry_in = recorded(conf, spent, SendResult(Outcome.TRANSIENT, code="-99", message="busy"))
    assert (state, retry_in) == ("failed", None)
    with session_scope(settings().database_url) as s:
        assert "SMSQ_RETRY_FOR=3600s" in s.get(Chunk, spent.chunk_id).detail

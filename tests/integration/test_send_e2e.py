"""The send path end to end: send_sms -> broker -> a real worker -> the dxt simulator over HTTP.

Runs embedded (SQLite + SQLite broker), distributed (PostgreSQL + Redis) and on
RabbitMQ (PostgreSQL + RabbitMQ, Redis for the rate limiter).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from smsq.store.models import BlockedNumber, Chunk, Recipient, utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks.cancel import cancel_batch
from smsq.tasks.publish import publish_chunk
from smsq.tasks.relay import run_relay
from smsq.worker.app import QUEUES
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, PASSWORD, on_stacks, stack_fixture, wait_final, wait_until

stack = stack_fixture(*MODES, "rabbitmq")

CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"


def queue_bindings(stack) -> set[tuple[str, str, str]]:
    """(exchange, queue, routing key) of every binding of smsq's queues, as the broker has them
    after the worker declared them (the broker's default exchange "" left out)."""
    if stack.mode == "rabbitmq":
        vhost = stack.env["SMSQ_BROKER_URL"].rsplit("/", 1)[1]
        listed = subprocess.run(
            [
                "rabbitmqctl",
                "-q",
                "--no-table-headers",
                "list_bindings",
                "-p",
                vhost,
                "source_name",
                "destination_name",
                "routing_key",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        rows = {tuple(line.split("\t")) for line in listed.splitlines() if line.strip()}
    elif stack.mode == "distributed":  # kombu keeps a Redis set of bindings per exchange
        import redis

        client = redis.Redis.from_url(stack.env["SMSQ_BROKER_URL"])
        rows = {
            (key.decode().removeprefix("_kombu.binding."), queue.decode(), routing_key.decode())
            for key in client.scan_iter("_kombu.binding.*")
            for routing_key, _, queue in (m.split(b"\x06\x16") for m in client.smembers(key))
        }
    else:
        raise ValueError(f"the {stack.mode} stack's broker (kombu's SQLAlchemy transport) has no exchanges")
    return {row for row in rows if row[0] and row[1] in QUEUES}


@on_stacks("distributed", "rabbitmq")  # kombu's SQLAlchemy transport (embedded) has no exchanges
def test_each_queue_has_its_own_exchange(stack):
    """As docs/operator.md says: each queue is bound to a direct exchange of its own name, by its
    own name; nothing published to one lane's exchange reaches another lane."""
    assert queue_bindings(stack) == {(name, name, name) for name in QUEUES}


def messy_numbers() -> tuple[list[str], set[str], int]:
    """1,234 entries: 1,100 unique mobiles in mixed spellings, 100 repeats, 34 invalid."""
    unique = [f"139{i:08d}" for i in range(1100)]
    spellings = [
        lambda n: n,
        lambda n: "+86" + n,
        lambda n: f"86 {n[:3]}-{n[3:7]}-{n[7:]}",
        lambda n: "0086" + n,
        lambda n: n.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    ]
    entries = [spellings[i % len(spellings)](n) for i, n in enumerate(unique)]
    entries += [spellings[(i + 1) % len(spellings)](unique[i * 7]) for i in range(100)]  # repeats
    invalid = [f"1{i:03d}" for i in range(20)] + [f"2{i:010d}" for i in range(10)] + ["abc", "+1 555 0100", "", "139"]
    entries += invalid
    return entries, set(unique), len(invalid) - 1  # "" is skipped, not rejected


def test_a_messy_list_arrives_once_per_number_in_gbk(stack, sim):
    entries, unique, invalid = messy_numbers()
    assert len(entries) == 1234
    receipt = send_sms("shop-dxt", entries, CONTENT)
    assert receipt.accepted == len(unique)
    assert len(receipt.rejected) == invalid
    assert all(reason for _, reason in receipt.rejected)

    status = wait_final(receipt.batch_id, timeout=90)
    received = Counter(n for s in sim.sends for n in s.numbers)
    assert set(received) == unique
    assert max(received.values()) == 1, "a number reached the vendor twice"
    assert max(len(s.numbers) for s in sim.sends) <= 100
    assert len(sim.sends) == 11
    assert {s.content for s in sim.sends} == {CONTENT}  # decoded by the vendor as GBK, intact
    assert not sim.decode_errors
    assert status.chunks == {"accepted": 11}
    assert status.recipients == {"sent": len(unique), "rejected": invalid}
    assert status.accepted + status.rejected == sum(status.recipients.values())


def test_redelivered_chunk_sends_nothing(stack, sim):
    receipt = send_sms("shop-dxt", ["13800000001", "13800000002"], CONTENT)
    wait_final(receipt.batch_id)
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    for _ in range(3):  # the broker delivers the same chunk again, three times
        publish_chunk(chunk_id, "priority")
    wait_until(lambda: f"chunk {chunk_id}: not pending" in stack.worker_log(), 20, what="redelivery handled")
    assert len(sim.sends) == 1
    assert batch_status(receipt.batch_id).chunks == {"accepted": 1}


@on_stacks("embedded", "distributed")  # the vendor's timeout and the record: nothing of the broker's
def test_read_timeout_after_the_request_leaves_the_chunk_unknown(stack, sim):
    sim.set_faults(hang=True, hang_seconds=4)  # the vendor accepts, then does not answer in time
    receipt = send_sms("slow-dxt", ["13800000011"], CONTENT)
    status = wait_final(receipt.batch_id, timeout=30)
    assert status.chunks == {"unknown": 1}
    assert status.recipients == {"unknown": 1}
    sim.set_faults(hang=False)
    relayed = run_relay()  # the relay must not resend an unknown chunk either
    assert relayed["published"] == 0 and relayed["expired"] == 0, relayed
    assert len(sim.sends) == 1
    assert batch_status(receipt.batch_id).chunks == {"unknown": 1}


def test_busy_vendor_is_retried_with_backoff_then_accepted(stack, sim):
    sim.set_faults(busy=True)
    receipt = send_sms("shop-dxt", ["13800000021"], CONTENT)
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))

    def attempts():
        with session_scope(settings().database_url) as s:
            return s.get(Chunk, chunk_id).attempts

    wait_until(lambda: attempts() >= 2, 30, what="a second attempt")
    sim.set_faults(busy=False)
    status = wait_final(receipt.batch_id, timeout=60)
    assert status.chunks == {"accepted": 1}
    assert len(sim.sends) == 1  # busy answers record no send
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk.code == "0" and chunk.attempts >= 2


def test_wrong_password_fails_the_chunk_with_the_vendor_code(stack, sim):
    receipt = send_sms("wrong-dxt", ["13800000031"], CONTENT)
    status = wait_final(receipt.batch_id)
    assert status.chunks == {"failed": 1}
    assert status.recipients == {"failed": 1}
    with session_scope(settings().database_url) as s:
        chunk = s.scalar(select(Chunk).where(Chunk.batch_id == receipt.batch_id))
        assert (chunk.outcome, chunk.code) == ("auth", "-7")
        assert "用户登入信息验证失败" in chunk.detail
        assert chunk.attempts == 1  # auth failures are not retried
    from smsq.store.models import PollStatus

    def flag():  # written just after the chunk's outcome, in a transaction of its own
        with session_scope(settings().database_url) as s:
            row = s.get(PollStatus, ("wrong-dxt", "send"))
            return None if row is None else (row.outcome, row.detail)

    outcome, detail = wait_until(flag, 10, what="the account flagged")
    assert outcome == "auth" and "-7" in detail  # `smsq accounts` shows the account unhealthy


def test_after_an_auth_failure_the_accounts_other_chunks_wait(stack, sim):
    """A wrong password is not retried chunk after chunk: vendors lock accounts for that."""
    from smsq.store.models import AccountCircuit, PollStatus

    with session_scope(settings().database_url) as s:  # forget earlier tests' failures of this account
        s.execute(PollStatus.__table__.delete().where(PollStatus.account == "wrong-dxt"))
        s.execute(AccountCircuit.__table__.delete().where(AccountCircuit.account == "wrong-dxt"))
    sim.reset()
    receipt = send_sms("wrong-dxt", [f"1380001{i:04d}" for i in range(500)], CONTENT)  # 5 chunks

    def settled():
        with session_scope(settings().database_url) as s:
            chunks = s.execute(select(Chunk).where(Chunk.batch_id == receipt.batch_id)).scalars().all()
            return all(c.state == "failed" or (c.detail or "").startswith("held until") for c in chunks) and chunks

    chunks = wait_until(settled, 30, what="every chunk failed or held")
    calls = [c.endpoint for c in sim.calls].count("sendsms_txt.asp")
    failed = [c for c in chunks if c.state == "failed"]
    held = [c for c in chunks if c.state == "pending"]
    assert 1 <= calls == len(failed) <= 2  # the worker's two processes may both have been in flight
    assert len(held) == 5 - len(failed) and all(c.next_attempt_at > utcnow() for c in held)
    assert all("auth -7" in c.detail for c in held)
    assert run_relay()["published"] == 0  # not before the hold is over


def test_same_idempotency_key_sends_once(stack, sim):
    first = send_sms("shop-dxt", ["13800000041", "bad"], CONTENT, idempotency_key="order-42")
    second = send_sms("shop-dxt", ["13800000041", "bad"], CONTENT, idempotency_key="order-42")
    assert second.batch_id == first.batch_id and second.replayed and not first.replayed
    assert second.rejected == [("bad", first.rejected[0][1])]
    wait_final(first.batch_id)
    assert [s.numbers for s in sim.sends] == [["13800000041"]]


def test_blocked_number_is_skipped_with_its_reason(stack, sim):
    with session_scope(settings().database_url) as s:
        s.execute(
            insert(BlockedNumber).values(
                account="shop-dxt",
                mobile="13800000051",
                reason="unsubscribed (TD)",
                source="manual",
                created_at=utcnow(),
            )
        )
    receipt = send_sms("shop-dxt", ["13800000051", "13800000052"], CONTENT)
    assert receipt.rejected == [("13800000051", "blocked for this account: unsubscribed (TD)")]
    wait_final(receipt.batch_id)
    assert [s.numbers for s in sim.sends] == [["13800000052"]]


def test_small_batches_take_the_priority_lane(stack, sim):
    small = send_sms("shop-dxt", ["13800000061"], CONTENT)
    big = send_sms("shop-dxt", [f"1370000{i:04d}" for i in range(150)], CONTENT)
    forced = send_sms("shop-dxt", [f"1360000{i:04d}" for i in range(150)], CONTENT, priority=True)
    assert (small.lane, big.lane, forced.lane) == ("priority", "bulk", "priority")
    for r in (small, big, forced):
        wait_final(r.batch_id)
    with session_scope(settings().database_url) as s:
        lanes = dict(
            s.execute(
                select(Chunk.batch_id, Chunk.lane).where(Chunk.batch_id.in_([small.batch_id, big.batch_id]))
            ).all()
        )
    assert lanes == {small.batch_id: "priority", big.batch_id: "bulk"}


def test_the_worker_is_warm_before_it_says_ready(stack, sim):
    """Database, accounts and rate limiter are set up before the first message is taken,
    so the first OTP after a restart does not pay for them (scheduler/warm.py)."""
    log = stack.worker_log()
    assert "warm: database, accounts and rate limiter ready" in log, log[-2000:]
    assert log.index("warm: database, accounts and rate limiter ready") < log.index("ready.")
    assert "warm-up skipped" not in log
    # nor does it wait a second for other workers' revoked task ids (mingle): smsq revokes nothing
    assert "mingle: searching for neighbors" not in log


def test_a_scheduled_send_waits_in_smsq_and_reaches_the_vendor_at_its_time(stack, sim):
    # dxt has a send_time parameter; smsq holds the chunk all the same and calls at the time.
    at = datetime.now(UTC) + timedelta(seconds=5)
    receipt = send_sms("shop-dxt", ["13800000071"], CONTENT, send_at=at)
    waiting = batch_status(receipt.batch_id)
    assert waiting.scheduled and waiting.chunks == {"pending": 1}, waiting
    status = wait_final(receipt.batch_id)
    assert status.recipients == {"sent": 1} and not status.scheduled
    (call,) = sim.sends
    assert call.send_time is None  # sent "now", at the time
    late = call.at - at.timestamp()
    print(f"{stack.mode}: the vendor received the scheduled call {late:+.3f} s after send_at")
    assert -0.01 <= late < settings().relay_interval + 3, late  # never early; at worst a relay interval late


def test_a_scheduled_chunk_released_ahead_of_its_time_can_still_be_cancelled(stack, sim):
    # The relay hands a chunk to the broker a little before its time, with a countdown to
    # it; until a worker claims it at that time, cancel still wins.
    at = datetime.now(UTC) + timedelta(seconds=3)
    receipt = send_sms("shop-dxt", ["13800000072"], CONTENT, send_at=at)
    run_relay()  # (or the worker's own relay pass) publishes it: its time is within two relay intervals
    with session_scope(settings().database_url) as s:
        chunk_id, queued_at = s.execute(
            select(Chunk.id, Chunk.queued_at).where(Chunk.batch_id == receipt.batch_id)
        ).one()
    assert queued_at is not None  # on its way to a worker, which holds it until the time
    assert cancel_batch(receipt.batch_id).cancelled_chunks == 1
    wait_until(lambda: f"chunk {chunk_id}: not pending" in stack.worker_log(), 30, what="the message at its time")
    assert sim.sends == []
    assert batch_status(receipt.batch_id).recipients == {"cancelled": 1}


def test_relay_publishes_a_pending_chunk_whose_message_was_lost(stack, sim):
    receipt = send_sms("shop-dxt", ["13800000081"], CONTENT, send_at=None)
    wait_final(receipt.batch_id)
    # Make it a chunk whose broker message was lost: pending, never queued.
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
        s.execute(update(Chunk).where(Chunk.id == chunk_id).values(state="pending", queued_at=None))
        s.execute(update(Recipient).where(Recipient.batch_id == receipt.batch_id).values(state="queued"))
    sim.reset()
    assert run_relay()["published"] >= 1
    wait_final(receipt.batch_id)
    assert len(sim.sends) == 1


def test_relay_turns_a_stale_sending_chunk_unknown(stack, sim):
    receipt = send_sms("shop-dxt", ["13800000091"], CONTENT)
    wait_final(receipt.batch_id)
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
        s.execute(
            update(Chunk).where(Chunk.id == chunk_id).values(state="sending", claimed_at=utcnow() - timedelta(hours=1))
        )
    assert run_relay()["expired"] == 1
    assert batch_status(receipt.batch_id).chunks == {"unknown": 1}


def test_no_password_in_worker_logs(stack, sim):
    receipt = send_sms("shop-dxt", ["13800000101"], CONTENT)  # (wrong-dxt's calls were made above)
    wait_final(receipt.batch_id)
    log = stack.worker_log()
    assert "smsq.send_chunk" in log
    assert PASSWORD not in log
    assert "not-the-password" not in log


@on_stacks("embedded", "distributed")  # settling is the database's; a resend's publish is tested on each broker above
def test_an_operator_settles_unknown_chunks(stack, sim):
    import json
    import os
    import subprocess
    import sys

    from ..conftest import ROOT

    def smsq(*args):
        return subprocess.run(
            [sys.executable, "-m", "smsq", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
            timeout=60,
        )

    sim.set_faults(hang=True, hang_seconds=3)
    lost = [send_sms("slow-dxt", [number], CONTENT) for number in ("13800000111", "13800000112")]
    for receipt in lost:
        wait_final(receipt.batch_id, timeout=30)
    sim.set_faults(hang=False)
    chunks = []
    for receipt in lost:
        (chunk,) = json.loads(smsq("status", str(receipt.batch_id), "--chunks", "--json").stdout)["problem_chunks"]
        assert chunk["state"] == "unknown" and chunk["outcome"] == "ambiguous"
        chunks.append(chunk["chunk_id"])

    # The vendor's console shows the first went out, and not the second.
    took = smsq("settle", str(chunks[0]), "accepted", "--note", "seen in the vendor console")
    assert took.returncode == 0, took.stderr
    assert batch_status(lost[0].batch_id).recipients == {"sent": 1}
    resend = smsq("settle", str(chunks[1]), "resend", "--note", "vendor console shows nothing")
    assert resend.returncode == 0 and "settled by an operator: resend" in resend.stdout, resend.stderr
    assert wait_final(lost[1].batch_id).chunks == {"accepted": 1}
    # The two hanging calls ran side by side, in either order; the resend came after both.
    calls = [s.numbers for s in sim.sends]
    assert sorted(calls[:2]) == [["13800000111"], ["13800000112"]] and calls[2:] == [["13800000112"]]
    again = smsq("settle", str(chunks[1]), "resend")
    assert again.returncode == 2 and "is accepted; only unknown or failed" in again.stderr


def chunk_of(receipt) -> int:
    with session_scope(settings().database_url) as s:
        return s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))


@on_stacks("distributed")  # a prefork child to kill: the embedded worker runs threads only
def test_a_worker_killed_mid_call_never_sends_twice(stack, sim):
    """SIGKILL the pool process while its vendor call hangs: Celery redelivers the
    message (reject_on_worker_lost), the claim turns the redelivery away, and
    the relay settles the chunk as unknown. (A prefork worker: the default
    thread pool has no child process to kill.)"""
    from ..conftest import start_worker, stop_worker

    stop_worker(stack.worker)
    stack.worker = start_worker(stack, "smsq.priority,smsq.bulk,smsq.poll", "--pool", "prefork")
    try:
        _kill_a_prefork_child_mid_call(stack, sim)
    finally:
        stop_worker(stack.worker)
        stack.worker = start_worker(stack)


def _kill_a_prefork_child_mid_call(stack, sim):
    import dataclasses
    import os
    import signal
    import subprocess

    from smsq.tasks.relay import expire_sending

    sim.set_faults(hang=True, hang_seconds=20)
    receipt = send_sms("shop-dxt", ["13800000121"], CONTENT)
    wait_until(lambda: len(sim.sends) == 1, 20, what="the vendor call")
    children = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(stack.worker.pid)], capture_output=True, text=True
    ).stdout.split("\n")
    busy = [int(line.split()[0]) for line in children if line.strip()]
    turned_away = stack.worker_log().count(f"chunk {chunk_of(receipt)}: not pending")
    # Kill every pool child: one of them is inside the vendor call.
    for pid in busy:
        os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: stack.worker_log().count(f"chunk {chunk_of(receipt)}: not pending") > turned_away,
        30,
        what="the redelivered message to be turned away",
    )
    sim.set_faults(hang=False)
    assert len(sim.sends) == 1
    assert batch_status(receipt.batch_id).chunks == {"sending": 1}
    assert expire_sending(dataclasses.replace(settings(), send_timeout=0)) == 1
    assert batch_status(receipt.batch_id).chunks == {"unknown": 1}
    assert len(sim.sends) == 1

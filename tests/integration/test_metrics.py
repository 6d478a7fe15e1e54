"""`smsq metrics` scraped over HTTP after real sends through a real worker, and
Flower's task list read from a running Flower.

Sends go through the dxt simulator: accepted (shop-dxt), refused for a wrong
password (wrong-dxt), and unknown after a read timeout (slow-dxt, the
simulator hanging after it took the request).
"""

from __future__ import annotations

import itertools

import httpx
from sqlalchemy import delete, select

from smsq.store.models import AccountCircuit, Chunk, PollStatus
from smsq.tasks import send_sms
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import PASSWORD, on_stacks, wait_final, wait_until
from .conftest import running, scrape, value

CONTENT = "【某某科技】您的验证码是 345678"
CALLS = itertools.count(1)


def forget_account_failures(account: str) -> None:
    """An earlier auth failure holds the account's chunks for a while: start clean."""
    with session_scope(settings().database_url) as s:
        s.execute(delete(PollStatus).where(PollStatus.account == account))
        s.execute(delete(AccountCircuit).where(AccountCircuit.account == account))


def sends_of_each_kind(sim) -> dict[str, int]:
    """One accepted batch of two chunks, one refused chunk, one unknown chunk; the batch ids.
    Each call's text is its own: the same text to the same numbers again within 30 s would
    be refused as a duplicate."""
    forget_account_failures("wrong-dxt")
    content = f"{CONTENT} ({next(CALLS)})"
    ok = send_sms("shop-dxt", [f"1371111{i:04d}" for i in range(150)], content)  # 100 + 50
    refused = send_sms("wrong-dxt", ["13722220001"], content)
    for receipt in (ok, refused):
        wait_final(receipt.batch_id)
    sim.set_faults(hang=True, hang_seconds=3)  # slow-dxt gives up after 1 s: unknown
    lost = send_sms("slow-dxt", ["13733330001"], content)
    wait_final(lost.batch_id, timeout=30)
    sim.set_faults(hang=False)
    return {"ok": ok.batch_id, "failed": refused.batch_id, "unknown": lost.batch_id}


def test_metrics_count_what_was_sent(stack, sim):
    with running("metrics", env=stack.env, cwd=stack.tmp) as (port, _):
        before = scrape(port)
        sim.reset()
        sends_of_each_kind(sim)
        vendor_sends = [c.endpoint for c in sim.calls].count("sendsms_txt.asp")
        assert vendor_sends == 4
        # The exporter keeps a scrape's result a few seconds: wait for the new one.
        after = wait_until(
            lambda: (
                (s := scrape(port))
                and value(s, "smsq_chunks", kind="notice", state="unknown")
                > value(before, "smsq_chunks", kind="notice", state="unknown")
                and s
            ),
            20,
            0.5,
            "a fresh scrape",
        )

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("smsq_vendor_calls_total", account="shop-dxt", outcome="ok") == 2
    assert grew("smsq_vendor_calls_total", account="wrong-dxt", outcome="auth") == 1
    assert grew("smsq_vendor_calls_total", account="slow-dxt", outcome="ambiguous") == 1
    all_calls = sum(v for (name, _), v in after.items() if name == "smsq_vendor_calls_total") - sum(
        v for (name, _), v in before.items() if name == "smsq_vendor_calls_total"
    )
    assert all_calls == vendor_sends  # every call the vendor saw, and no other

    assert grew("smsq_recipients_total", account="shop-dxt", kind="notice", state="sent") == 150
    assert grew("smsq_recipients_total", account="wrong-dxt", kind="notice", state="failed") == 1
    assert grew("smsq_recipients_total", account="slow-dxt", kind="notice", state="unknown") == 1
    assert grew("smsq_chunks", kind="notice", state="accepted") == 2
    assert grew("smsq_chunks", kind="notice", state="failed") == 1
    assert grew("smsq_chunks", kind="notice", state="unknown") == 1
    assert not any(  # of any kind
        v
        for (name, labels), v in after.items()
        if name == "smsq_chunks" and dict(labels)["state"] in ("sending", "pending")
    )

    # The histogram: one observation per call; the unknown call lasted its 1 s timeout.
    assert grew("smsq_vendor_call_seconds_count", account="shop-dxt") == 2
    assert grew("smsq_vendor_call_seconds_bucket", account="shop-dxt", le="+Inf") == 2
    assert grew("smsq_vendor_call_seconds_count", account="slow-dxt") == 1
    assert grew("smsq_vendor_call_seconds_sum", account="slow-dxt") >= 1.0
    assert grew("smsq_vendor_call_seconds_bucket", account="slow-dxt", le="0.5") == 0

    assert value(after, "smsq_account_up", account="wrong-dxt") == 0
    assert value(after, "smsq_account_up", account="shop-dxt") == 1
    for queue in ("smsq.priority", "smsq.bulk", "smsq.poll"):
        assert ("smsq_queue_length", frozenset({"queue": queue}.items())) in after
        assert value(after, "smsq_queue_length", queue=queue) == 0  # the worker took everything
    assert value(after, "smsq_up", component="database") == value(after, "smsq_up", component="broker") == 1


def test_a_failed_or_unknown_chunk_is_not_delivered_again(stack, sim):
    """The task ends as a failure; with late acks it must still be acked."""
    sim.reset()
    batches = sends_of_each_kind(sim)
    with session_scope(settings().database_url) as s:
        chunks = {
            kind: s.scalar(select(Chunk.id).where(Chunk.batch_id == batch_id))
            for kind, batch_id in batches.items()
            if kind != "ok"
        }
    ends = [
        f"raised expected: ChunkUnknown('chunk {chunks['unknown']} (batch {batches['unknown']}, slow-dxt): unknown",
        f"raised expected: ChunkFailed('chunk {chunks['failed']} (batch {batches['failed']}, wrong-dxt): "
        f"failed — auth: -7",
    ]
    # Celery logs a task's end after the task has recorded its outcome: wait for the line.
    wait_until(
        lambda: all(end in stack.worker_log() for end in ends), 10, what="both tasks logged as expected failures"
    )
    if stack.mode == "distributed":
        import redis

        broker = redis.Redis.from_url(stack.env["SMSQ_BROKER_URL"])
        wait_until(lambda: broker.hlen("unacked") == 0, 10, what="every message acked")
    import time

    time.sleep(2)
    for chunk_id in chunks.values():
        assert f"chunk {chunk_id}: not pending" not in stack.worker_log()  # no redelivery


# the SQLite broker (embedded) carries no task events: smsq flower says so (tests/integration/test_cli.py)
@on_stacks("distributed")
def test_flower_names_account_and_batch_and_fails_unknown_chunks(stack, sim):
    auth = ("ops", "flower-pw-31")
    env = {**stack.env, "SMSQ_FLOWER_AUTH": ":".join(auth)}
    with running("flower", env=env, cwd=stack.tmp) as (port, _):

        def tasks() -> dict:
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/tasks", params={"taskname": "smsq.send_chunk"}, auth=auth, timeout=10
            )
            assert response.status_code == 200, response.text
            return response.json()

        def seen(batch_id: int) -> list[dict]:
            return [
                t
                for t in tasks().values()
                if f"batch {batch_id}," in (t.get("args") or "") and t.get("state") in ("SUCCESS", "FAILURE")
            ]

        # Flower hears only events sent after it connected: send until it hears one.
        def warmed_up():
            receipt = send_sms("shop-dxt", ["13744440001"], f"{CONTENT} ({next(CALLS)})")
            wait_final(receipt.batch_id)
            try:
                return wait_until(lambda: seen(receipt.batch_id), 3, 0.3)
            except AssertionError:
                return None

        wait_until(warmed_up, 40, 0, "Flower to receive task events")
        sim.reset()
        batches = sends_of_each_kind(sim)
        rows = {
            kind: wait_until(lambda batch_id=batch_id: seen(batch_id), 20, 0.3, f"the {kind} chunk in Flower")
            for kind, batch_id in batches.items()
        }
        body = httpx.get(f"http://127.0.0.1:{port}/api/tasks", auth=auth).text

    assert len(rows["ok"]) == 2
    for row in rows["ok"]:
        assert row["state"] == "SUCCESS" and "shop-dxt" in row["args"] and row["result"] == "'accepted'"
    (unknown,) = rows["unknown"]
    assert unknown["state"] == "FAILURE" and "slow-dxt" in unknown["args"]
    assert "ChunkUnknown" in unknown["exception"] and ": unknown — ambiguous" in unknown["exception"]
    (failed,) = rows["failed"]
    assert failed["state"] == "FAILURE" and "wrong-dxt" in failed["args"]
    assert "ChunkFailed" in failed["exception"] and "auth" in failed["exception"]
    for secret in (PASSWORD, "not-the-password", "13733330001", "您的验证码"):
        assert secret not in body  # no credentials, numbers or content in what Flower shows


def test_metrics_count_the_numbers_a_vendor_refused(stack, sim):
    sim.reset()
    sim.set_faults(refuse=["13744440002"])  # dxt counts it in b, names it nowhere
    with running("metrics", env=stack.env, cwd=stack.tmp) as (port, _):
        before = scrape(port)
        numbers = ["13744440001", "13744440002", "13744440003"]
        wait_final(send_sms("shop-dxt", numbers, f"{CONTENT} ({next(CALLS)})").batch_id)
        after = wait_until(
            lambda: (
                (s := scrape(port))
                and value(s, "smsq_refused_numbers", account="shop-dxt")
                > value(before, "smsq_refused_numbers", account="shop-dxt")
                and s
            ),
            20,
            0.5,
            "a scrape counting the refused number",
        )
    for name in ("smsq_refused_numbers", "smsq_refused_open"):  # counted, and not told apart yet
        assert value(after, name, account="shop-dxt") - value(before, name, account="shop-dxt") == 1
    assert ("smsq_refused_numbers", frozenset({"account": "slow-dxt"}.items())) in after  # every account

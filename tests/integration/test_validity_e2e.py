"""Validity end to end: send_sms / smsq send -> broker -> a real worker -> the dxt
simulator over HTTP. A code whose validity passes before its vendor call (behind an
account's rate limit, waiting out a busy vendor's retries) is never sent: the simulator
never sees it, its numbers end ``expired``, and each number is sent at most once.

Embedded (SQLite + SQLite broker) and distributed (PostgreSQL + Redis: the claim is the
one-statement PostgreSQL claim).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import func, select

from smsq.cli.metrics import SmsqCollector
from smsq.store.models import Chunk, VendorCall
from smsq.tasks import batch_status, send_sms
from smsq.tasks.lookup import export_batch
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, serve_stack, wait_final, wait_until, write_config
from .conftest import sent_numbers, smsq

CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"


@pytest.fixture(scope="module", params=MODES)
def stack(request, dxt_sim, tmp_path_factory):
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(f"validity-{request.param}")
    config = write_config(tmp / "smsq.toml", url)
    with config.open("a", encoding="utf-8") as f:  # an account that may send one call a minute
        f.write(
            f"""
[accounts.minute-dxt]
provider = "dxt"
base_url = "{url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "1/m"
"""
        )
    yield from serve_stack(request.param, tmp, config, state, url)


@pytest.fixture
def sim(stack):
    stack.sim.reset()
    return stack.sim


def expired_metric(kind: str = "otp") -> tuple[float, float]:
    """(smsq_recipients_total summed over accounts, smsq_chunks) with state expired."""
    families = {f.name: f for f in SmsqCollector(settings()).collect()}
    recipients = sum(
        s.value
        for s in families["smsq_recipients_total"].samples
        if s.labels["state"] == "expired" and s.labels["kind"] == kind
    )
    chunks = sum(
        s.value for s in families["smsq_chunks"].samples if s.labels["state"] == "expired" and s.labels["kind"] == kind
    )
    return recipients, chunks


def test_codes_queued_behind_a_one_a_minute_account_expire_unsent(stack, sim):
    before = expired_metric()
    first = send_sms("minute-dxt", ["13800000101"], CONTENT, kind="otp", valid_for="5s")
    # the account's one call of the minute goes to the first code
    assert wait_final(first.batch_id, timeout=30).recipients == {"sent": 1}
    later = [send_sms("minute-dxt", [f"1380000010{i}"], CONTENT, kind="otp", valid_for=4) for i in (2, 3)]
    # the last one through the command line, which waits for it and says how it ended
    cli = smsq(
        "send",
        "--account",
        "minute-dxt",
        "--to",
        "13800000104",
        "--content",
        CONTENT,
        "--kind",
        "otp",
        "--valid-for",
        "3s",
        "--wait",
        "--json",
        env=stack.env,
        timeout=90,
    )
    assert cli.returncode == 1, cli.stderr  # final, not clean: as for failed numbers
    shown = json.loads(cli.stdout.strip().splitlines()[-1])
    assert shown["recipients"] == {"expired": 1} and shown["chunks"] == {"expired": 1}
    assert shown["final"] and not shown["clean"] and shown["valid_until"].endswith("+08:00")
    for receipt in later:
        status = wait_final(receipt.batch_id, timeout=30)
        assert status.recipients == {"expired": 1} and status.chunks == {"expired": 1}
        assert status.final and not status.clean
        ((mobile, state, _code, detail, vendor_id, _at, _text),) = list(export_batch(receipt.batch_id))
        assert (state, vendor_id) == ("expired", None) and "validity" in detail
    # the simulator saw the first code only, once
    assert Counter(n for s in sim.sends for n in s.numbers) == {"13800000101": 1}
    status_line = smsq("status", str(later[0].batch_id), env=stack.env)
    assert "expired 1" in status_line.stdout and "valid until" in status_line.stdout, status_line.stdout
    recipients, chunks = expired_metric()
    assert (recipients - before[0], chunks - before[1]) == (3, 3)


def test_a_code_waiting_out_a_busy_vendor_expires_at_its_next_turn(stack, sim):
    sim.set_faults(busy=True)
    receipt = send_sms("shop-dxt", ["13800000201", "13800000202"], CONTENT, kind="otp", valid_for="3s")
    with session_scope(settings().database_url) as s:
        chunk_id = s.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    status = wait_final(receipt.batch_id, timeout=30)
    sim.set_faults(busy=False)
    assert status.chunks == {"expired": 1} and status.recipients == {"expired": 2}
    with session_scope(settings().database_url) as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.state == "expired" and chunk.outcome == "expired"
        assert chunk.attempts >= 1  # it was tried, and refused busy
    assert not sim.sends  # busy answers record no send: nothing was sent
    # the vendor is back: nothing of the expired code goes out, a new one does
    fresh = send_sms("shop-dxt", ["13800000203"], CONTENT, kind="otp")
    assert wait_final(fresh.batch_id, timeout=30).recipients == {"sent": 1}
    wait_until(lambda: sent_numbers(sim) == {"13800000203"}, 10, what="only the fresh code sent")
    assert batch_status(receipt.batch_id).recipients == {"expired": 2}


def vendor_calls(account: str) -> int:
    with session_scope(settings().database_url) as s:
        return s.scalar(select(func.count()).where(VendorCall.account == account)) or 0


def test_a_code_held_by_an_open_circuit_expires_where_it_waits(stack, sim):
    # a wrong password: the vendor refuses it (auth), and the account's circuit opens for
    # SMSQ_ACCOUNT_HOLD (5 minutes): its other chunks wait, pending, without a call
    tripped = send_sms("wrong-dxt", ["13800000301"], CONTENT, kind="otp")
    assert wait_final(tripped.batch_id, timeout=30).recipients == {"failed": 1}
    calls = vendor_calls("wrong-dxt")
    held = send_sms("wrong-dxt", ["13800000302"], CONTENT, kind="otp", valid_for="4s")
    # held by the circuit for minutes, it is expired by the relay once its 4 s are over
    status = wait_final(held.batch_id, timeout=30)
    assert status.chunks == {"expired": 1} and status.recipients == {"expired": 1}
    assert vendor_calls("wrong-dxt") == calls  # no call was made for it
    with session_scope(settings().database_url) as s:
        chunk = s.scalar(select(Chunk).where(Chunk.batch_id == held.batch_id))
        assert chunk is not None and chunk.attempts == 0 and "validity" in (chunk.detail or "")

"""A throttled account never holds a worker slot: another account's chunks go
out while its backlog waits, and the vendor still sees no more than its rate.

A real worker with two slots, the dxt simulator over HTTP; account A at 1/s.
Before, both slots slept in A's limiter and B waited behind A's whole backlog.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import select

from smsq.store.models import Chunk
from smsq.tasks import send_sms
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import (
    Stack,
    apply_env,
    busiest_second,
    mode_env,
    restore_env,
    start_worker,
    stop_worker,
    wait_final,
    wait_until,
    write_config,
)

A_CHUNKS = 12


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def two_accounts(request, dxt_sim, tmp_path_factory):
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(f"fair-{request.param}")
    config = write_config(tmp / "smsq.toml", url)
    config.write_text(
        config.read_text()
        + f"""
[accounts.throttled-dxt]
provider = "dxt"
base_url = "{url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "1/s"
""",
        encoding="utf-8",
    )
    env = mode_env(request.param, tmp, config)
    saved = apply_env(env)
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    stack = Stack(request.param, env, state, url, tmp)
    stack.worker = start_worker(stack)
    yield stack
    stop_worker(stack.worker)
    restore_env(saved)


def test_a_throttled_backlog_does_not_delay_another_account(two_accounts):
    sim = two_accounts.sim
    sim.reset()
    a_numbers = [f"1351000{i:04d}" for i in range(100 * A_CHUNKS)]
    a = send_sms("throttled-dxt", a_numbers, "【某某科技】A 的群发")
    wait_until(
        lambda: any("A 的群发" in send.content for send in sim.sends), 30, 0.05, "A's backlog to reach the worker first"
    )
    b_numbers = [f"1352000{i:04d}" for i in range(500)]
    b_sent = time.monotonic()
    b = send_sms("shop-dxt", b_numbers, "【某某科技】B 的通知")
    assert wait_final(b.batch_id, 30).recipients == {"sent": 500}
    b_took = time.monotonic() - b_sent
    assert b_took < 5, f"B waited {b_took:.1f}s behind A's throttled backlog"  # A alone needs {A_CHUNKS} s
    with session_scope(settings().database_url) as s:
        waiting = s.scalars(select(Chunk.attempts).where(Chunk.batch_id == a.batch_id, Chunk.state == "pending")).all()
    assert waiting and set(waiting) == {0}  # given back, never claimed: no attempt counted

    assert wait_final(a.batch_id, A_CHUNKS * 3 + 30).recipients == {"sent": len(a_numbers)}
    a_calls = [send.at for send in sim.sends if "A 的群发" in send.content]
    assert len(a_calls) == A_CHUNKS
    assert busiest_second(a_calls) == 1  # the vendor never saw two of A's calls in one second
    sent = Counter(n for send in sim.sends for n in send.numbers)
    assert set(sent) == set(a_numbers) | set(b_numbers) and set(sent.values()) == {1}

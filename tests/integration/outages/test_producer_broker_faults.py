"""The producer never hangs on the broker.

A fault-injecting proxy sits between smsq and the real Redis broker. Whatever
it does (refuses connections, or accepts them and never answers), ``smsq send``
and ``send_sms`` return within seconds: the batch is committed, the receipt
says it was not queued, and once the broker answers again the relay publishes
it and a worker delivers every number exactly once (judged by the simulator).

The worker talks to Redis directly: what is under test is the producer's side.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from smsq.tasks import batch_status, send_sms
from smsq.tasks.relay import run_relay

from ...conftest import (
    PASSWORD,
    REDIS_URL,
    ROOT,
    Stack,
    apply_env,
    fresh_redis,
    migrated_postgres,
    restore_env,
    start_worker,
    stop_worker,
    wait_final,
    write_config,
)
from .conftest import FaultProxy

CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"
RETURNS_WITHIN = 12.0  # seconds: the bound is ~10 s; a little slack for a loaded machine


@pytest.fixture(scope="module")
def proxied(dxt_sim, tmp_path_factory):
    """PostgreSQL + Redis, with this process and its CLI children reaching the broker
    through a FaultProxy; a worker on the broker directly."""
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp("broker-faults")
    redis = urlsplit(REDIS_URL)
    proxy = FaultProxy(redis.hostname, redis.port or 6379)
    database = migrated_postgres(f"smsq_test_faults_{os.getpid()}")
    fresh_redis(REDIS_URL)
    common = {
        "SMSQ_CONFIG": str(write_config(tmp / "smsq.toml", url)),
        "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
        "SMSQ_DATABASE_URL": database,
        "SMSQ_REDIS_URL": REDIS_URL,
    }
    through_proxy = {**common, "SMSQ_BROKER_URL": f"redis://127.0.0.1:{proxy.port}{redis.path}"}
    saved = apply_env(through_proxy)
    from smsq.worker.config import settings
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    # The worker's own relay pass (every SMSQ_RELAY_INTERVAL) stays out of the way: the
    # tests run the relay themselves once the broker answers again, and count what it did.
    worker_stack = Stack(
        "distributed", {**common, "SMSQ_BROKER_URL": REDIS_URL, "SMSQ_RELAY_INTERVAL": "3600"}, state, url, tmp
    )
    worker_stack.worker = start_worker(worker_stack)
    yield proxy, worker_stack
    stop_worker(worker_stack.worker)
    proxy.close()
    restore_env(saved)


def smsq_send(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "smsq", "send", "--account", "shop-dxt", "--content", CONTENT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done, time.monotonic() - start


def assert_delivered_once(sim, batches: dict[int, list[str]]) -> None:
    for batch_id in batches:
        status = wait_final(batch_id, timeout=60)
        assert status.chunks and set(status.chunks) == {"accepted"}, status
    received = Counter(n for s in sim.sends for n in s.numbers)
    expected = [n for numbers in batches.values() for n in numbers]
    assert sorted(received) == sorted(expected)
    assert max(received.values()) == 1, "a number reached the vendor twice"


def test_smsq_send_returns_when_the_broker_never_answers(proxied, tmp_path):
    proxy, stack = proxied
    stack.sim.reset()
    bulk = [f"139{i:08d}" for i in range(250)]  # above SMSQ_PRIORITY_MAX: one split job
    otp = ["13800000001"]  # one chunk, cut by the producer itself
    numbers_file = tmp_path / "numbers.txt"
    numbers_file.write_text("\n".join(bulk) + "\n", encoding="utf-8")

    proxy.blackhole()
    sent: dict[int, list[str]] = {}
    for args, numbers in ((["--to-file", str(numbers_file)], bulk), (["--to", otp[0]], otp)):
        done, took = smsq_send(*args)
        assert took < RETURNS_WITHIN, f"smsq send took {took:.1f} s with a silent broker"
        assert done.returncode == 0, done.stderr
        batch_id = int(done.stdout.split()[0])
        assert f"batch {batch_id} is stored and the relay" in done.stderr
        assert "Traceback" not in done.stderr
        assert batch_status(batch_id).accepted == len(numbers)  # committed, whatever the broker did
        sent[batch_id] = numbers
    assert not batch_status(next(iter(sent))).final  # chunks still to cut: not final
    assert stack.sim.sends == []

    proxy.heal()
    relayed = run_relay()
    assert relayed["splits"] == 1 and relayed["published"] == 1, relayed
    assert_delivered_once(stack.sim, sent)


def test_send_sms_returns_when_the_broker_refuses(proxied):
    proxy, stack = proxied
    stack.sim.reset()
    numbers = [f"137{i:08d}" for i in range(150)]
    proxy.refuse()
    start = time.monotonic()
    receipt = send_sms("shop-dxt", numbers, CONTENT)
    assert time.monotonic() - start < RETURNS_WITHIN
    assert not receipt.queued and receipt.accepted == len(numbers)
    assert run_relay()["splits"] == 0  # still refused: the relay gives the job back too
    assert stack.sim.sends == []

    proxy.heal()
    assert run_relay()["splits"] == 1
    assert_delivered_once(stack.sim, {receipt.batch_id: numbers})


def test_send_sms_keeps_its_broker_connections_and_survives_a_cut_one(proxied):
    proxy, stack = proxied
    stack.sim.reset()
    proxy.heal()
    sent, connections = {}, proxy.accepted
    for i in range(20):  # OTPs, each published by the producer itself
        receipt = send_sms("shop-dxt", [f"1360000{i:04d}"], CONTENT)
        assert receipt.queued
        sent[receipt.batch_id] = [f"1360000{i:04d}"]
    # Twenty sends, not twenty connections: the outbox's connections are kept and reused.
    assert proxy.accepted - connections <= 4, f"{proxy.accepted - connections} broker connections for 20 sends"

    proxy.drop()  # the network cuts every open connection (a broker restart looks the same)
    proxy.heal()
    receipt = send_sms("shop-dxt", ["13611112222"], CONTENT)
    assert receipt.queued, "a kept connection that was cut must not cost the next send its publish"
    sent[receipt.batch_id] = ["13611112222"]
    assert_delivered_once(stack.sim, sent)

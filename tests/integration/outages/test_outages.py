"""Outages as production meets them: a Redis killed and restarted empty, a beat killed,
no beat at all, a database that stops answering — with real worker and beat processes,
a private redis-server, a fault proxy in front of PostgreSQL, and the dxt simulator's
record as the judge: every number sent once, none lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smsq.tasks import send_sms
from smsq.worker.config import settings

from ...conftest import (
    PASSWORD,
    RABBITMQ_URL,
    apply_env,
    drop_vhost,
    fresh_vhost,
    migrated_postgres,
    restore_env,
    wait_final,
    wait_until,
    write_config,
)
from .conftest import FaultProxy, Process, RedisServer

CONTENT = "【某某科技】您的验证码是 345678"


@dataclass
class Outages:
    env: dict
    sim: object
    tmp: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, *args: str, **env: str) -> Process:
        process = Process(name, list(args), {**self.env, **env}, self.tmp)
        self.processes.append(process)
        return process

    def worker(self, name: str = "worker", **env: str) -> Process:
        return self.start(name, "worker", "--concurrency", "2", **env)


@pytest.fixture
def broker():
    return "redis"


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def outages(tmp_path, dxt_sim, redis_server, broker):
    sim, url = dxt_sim
    sim.reset()
    env = {
        "SMSQ_CONFIG": str(write_config(tmp_path / "smsq.toml", url)),
        "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
        "SMSQ_DATABASE_URL": migrated_postgres(f"smsq_outage_{os.getpid()}"),
        "SMSQ_BROKER_URL": redis_server.url,
        "SMSQ_REDIS_URL": "",
        "SMSQ_RELAY_INTERVAL": "1",
        "SMSQ_REPUBLISH_AFTER": "5",
        "SMSQ_SEND_TIMEOUT": "300",
    }
    vhost = None
    if broker == "rabbitmq":
        vhost = fresh_vhost(f"smsq_outage_{os.getpid()}")
        env["SMSQ_BROKER_URL"], env["SMSQ_REDIS_URL"] = f"{RABBITMQ_URL}/{vhost}", redis_server.url
    saved = apply_env(env)
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    run = Outages(env, sim, tmp_path)
    try:
        yield run
    finally:
        for process in run.processes:
            process.stop()
        restore_env(saved)
        if vhost:
            drop_vhost(vhost)


def assert_each_sent_once(sim, numbers) -> None:
    received = Counter(n for s in sim.sends for n in s.numbers)
    assert set(received) == set(numbers), f"{len(set(numbers) - set(received))} numbers never sent"
    assert max(received.values()) == 1, "a number reached the vendor twice"


@pytest.mark.fault
def test_a_standby_beat_takes_over_within_a_minute_of_a_sigkill_and_never_schedules_before(outages):
    first = outages.start("beat1", "beat")
    first.wait_for("acquired the lock")
    first.wait_for("Sending due task smsq.poll_balance:shop-dxt")
    second = outages.start("beat2", "beat")
    second.wait_for("standby: another beat holds the lock")
    time.sleep(6)  # more than a tick of the standby's
    assert "Sending due task" not in second.text()  # neither the relay nor its start-up polls

    first.signal(signal.SIGKILL)
    takeover = second.wait_for("acquired the lock", timeout=60)
    second.wait_for("Sending due task smsq.relay", timeout=10)
    second.wait_for("Sending due task smsq.poll_balance:shop-dxt", timeout=10)
    said = second.text()
    assert said.index("acquired the lock") < said.index("Sending due task")
    assert takeover < 40, f"the standby took {takeover:.0f} s to take over"
    # The start-up polls went out once per beat that held the lock, never from the standby.
    assert first.text().count("Sending due task smsq.poll_balance:shop-dxt") == 1
    assert second.text().count("Sending due task smsq.poll_balance:shop-dxt") == 1

    # A clean stop releases the lock: the next standby takes over within one of its ticks.
    third = outages.start("beat3", "beat")
    third.wait_for("standby: another beat holds the lock")
    second.signal(signal.SIGTERM)
    assert third.wait_for("acquired the lock", timeout=30) < 10
    print(f"takeover after SIGKILL: {takeover:.1f} s")


@pytest.mark.fault
def test_redis_killed_mid_burst_and_restarted_empty_loses_no_number(outages, redis_server):
    sim = outages.sim
    sim.set_faults(latency=0.1)
    worker = outages.worker()
    worker.wait_for("ready.")
    beat = outages.start("beat", "beat")
    beat.wait_for("acquired the lock")
    numbers = [f"137{i:08d}" for i in range(3000)]
    receipt = send_sms("shop-dxt", numbers, CONTENT)
    wait_until(lambda: len(sim.sends) >= 3, 30, what="the burst to start")

    redis_server.kill()
    beat.wait_for("cannot reach Redis", timeout=20)
    time.sleep(3)
    redis_server.start()  # empty: queued messages, the lock and the schedule are gone

    status = wait_final(receipt.batch_id, timeout=60)
    assert status.chunks == {"accepted": 30}
    assert_each_sent_once(sim, numbers)
    beat.wait_for("lost the lock")
    assert beat.text().count("acquired the lock") == 2  # taken again, the schedule written again
    beat.wait_for("Sending due task smsq.relay", after=beat.text().rindex("acquired the lock"))
    assert beat.text().count("cannot reach Redis") == 1  # one line for the outage, not one per tick
    assert beat.alive() and worker.alive()
    assert "Traceback" not in beat.text()


@pytest.mark.fault
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_without_any_beat_a_worker_republishes_a_chunk_the_broker_lost(outages):
    from smsq.worker.app import get_app

    numbers = ["13800000001", "13800000002", "13800000003"]
    receipt = send_sms("shop-dxt", numbers, CONTENT)
    assert get_app().control.purge() >= 1  # the broker lost the message; no worker had taken it
    started = time.monotonic()
    worker = outages.worker()
    status = wait_final(receipt.batch_id, timeout=5 + 60)
    took = time.monotonic() - started
    assert status.chunks == {"accepted": 1}
    assert_each_sent_once(outages.sim, numbers)
    assert "relay: published 1 due chunks" in worker.text()
    print(f"republished and sent by the worker alone {took:.1f} s after the loss (SMSQ_REPUBLISH_AFTER=5)")


@pytest.mark.fault
def test_worker_and_beat_wait_for_the_database_and_lose_nothing_when_it_drops(outages):
    pg = FaultProxy("127.0.0.1", 5432)
    try:
        url = settings().database_url.replace("127.0.0.1:5432", f"127.0.0.1:{pg.port}")
        pg.blackhole()  # answers nothing: the processes must not hang or die on it
        worker = outages.worker(SMSQ_DATABASE_URL=url)
        beat = outages.start("beat", "beat", SMSQ_DATABASE_URL=url)
        for process in (worker, beat):
            process.wait_for("cannot reach the database (postgresql+psycopg://postgres@127.0.0.1:", timeout=30)
            assert "waits for it" in process.text() and "Traceback" not in process.text()
        pg.heal()
        worker.wait_for("ready.", timeout=30)
        beat.wait_for("acquired the lock", timeout=30)

        pg.drop()  # now every connection through it is cut, and every new one
        numbers = [f"136{i:08d}" for i in range(250)]
        receipt = send_sms("shop-dxt", numbers, CONTENT)  # this process reaches the database directly
        mark = len(beat.text())
        beat.wait_for("cannot reach the database", timeout=30, after=mark)
        pg.heal()
        beat.wait_for("is back after", timeout=30, after=mark)
        status = wait_final(receipt.batch_id, timeout=60)
        assert status.chunks == {"accepted": 3}
        assert_each_sent_once(outages.sim, numbers)
        assert worker.alive() and beat.alive()
        assert beat.text().count("cannot reach the database") == 2  # at start-up, and the drop
    finally:
        pg.close()


COMMANDS = (
    ["accounts"],
    ["poll", "shop-dxt", "balance"],
    ["poll", "--reparse"],
    ["batches"],
    ["status", "1"],
    ["status", "--number", "13800000001"],
    ["export", "1"],
    ["cancel", "1"],
    ["settle", "1", "failed"],
    ["purge", "--older-than", "90d"],
    ["blocked"],
    ["inbound"],
    ["check", "shop-dxt"],
    ["send", "--account", "shop-dxt", "--to", "13800000001", "--content", CONTENT],
)


def run_smsq(args: list[str], env: dict, cwd: Path, timeout: float = 60):
    import subprocess
    import sys

    from ...conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "smsq", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=timeout,
    )


def assert_says_unreachable(result, args, url_shown: str) -> None:
    assert result.returncode == 3, (args, result.stderr)
    assert f"smsq: cannot reach the database ({url_shown})" in result.stderr, (args, result.stderr)
    assert "Sup3r-secret" not in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert len(result.stderr.strip().splitlines()) <= 2, (args, result.stderr)


def test_every_command_says_in_one_line_that_the_database_is_unreachable(tmp_path, dxt_sim):
    _, url = dxt_sim
    env = {
        "SMSQ_CONFIG": str(write_config(tmp_path / "smsq.toml", url)),
        "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
        "SMSQ_DATABASE_URL": "postgresql://smsq:Sup3r-secret@127.0.0.1:1/smsq",
        "SMSQ_BROKER_URL": "redis://127.0.0.1:1/0",
        "SMSQ_REDIS_URL": "",
    }
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # independent commands: side by side
        results = list(pool.map(lambda args: run_smsq(args, env, tmp_path), COMMANDS))
    for args, result in zip(COMMANDS, results, strict=False):
        assert_says_unreachable(result, args, "postgresql+psycopg://smsq:***@127.0.0.1:1/smsq")


@pytest.mark.fault
def test_a_database_that_answers_nothing_is_unreachable_not_a_hang(tmp_path, dxt_sim):
    _, url = dxt_sim
    pg = FaultProxy("127.0.0.1", 5432)
    pg.blackhole()
    try:
        env = {
            "SMSQ_CONFIG": str(write_config(tmp_path / "smsq.toml", url)),
            "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
            "SMSQ_DATABASE_URL": f"postgresql://smsq:Sup3r-secret@127.0.0.1:{pg.port}/smsq",
            "SMSQ_BROKER_URL": "redis://127.0.0.1:1/0",
            "SMSQ_REDIS_URL": "",
        }
        started = time.monotonic()
        result = run_smsq(["status", "1"], env, tmp_path, timeout=40)
        assert_says_unreachable(result, ["status", "1"], f"postgresql+psycopg://smsq:***@127.0.0.1:{pg.port}/smsq")
        assert time.monotonic() - started < 25
    finally:
        pg.close()


@pytest.mark.fault
def test_a_relay_pass_that_cannot_reach_the_broker_leaves_its_chunks_due(outages, redis_server):
    from datetime import timedelta

    import kombu.exceptions
    from sqlalchemy import select, update

    from smsq.store.models import Chunk, utcnow
    from smsq.tasks.relay import run_relay
    from smsq.worker.db import session_scope
    from smsq.worker.services import unreachable_service

    receipt = send_sms("shop-dxt", ["13800000001"], CONTENT)
    with session_scope(settings().database_url) as s:  # its message was lost long ago
        s.execute(
            update(Chunk).where(Chunk.batch_id == receipt.batch_id).values(queued_at=utcnow() - timedelta(hours=1))
        )
    redis_server.kill()
    with pytest.raises(kombu.exceptions.OperationalError, match="Connection refused") as refused:
        run_relay()
    # what beat logs for it, once: "cannot reach the broker (redis://…)"
    assert unreachable_service(refused.value) == f"the broker ({redis_server.url})"
    with session_scope(settings().database_url) as s:
        assert s.scalar(select(Chunk.queued_at).where(Chunk.batch_id == receipt.batch_id)) is None

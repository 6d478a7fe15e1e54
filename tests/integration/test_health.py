"""`smsq health`, the healthchecks of deploy/: against a real worker, a real beat,
Redis and PostgreSQL, run as the container runs it (a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ..conftest import (
    ROOT,
    Stack,
    apply_env,
    fresh_redis,
    mode_env,
    restore_env,
    start_worker,
    stop_worker,
    wait_until,
    write_config,
)
from .conftest import smsq


@pytest.fixture(scope="module")
def distributed(dxt_sim, tmp_path_factory):
    """PostgreSQL + Redis and one worker started as `smsq worker` is in compose (no --hostname)."""
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp("health")
    env = mode_env("distributed", tmp, write_config(tmp / "smsq.toml", url))
    env["SMSQ_RELAY_INTERVAL"] = "1"
    saved = apply_env(env)
    from smsq.worker.config import settings
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    stack = Stack("distributed", env, state, url, tmp)
    stack.worker = start_worker(stack)
    yield stack
    stop_worker(stack.worker)
    restore_env(saved)


def health(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return smsq("health", *args, env={**stack.env, **env}, cwd=stack.tmp)


def test_a_running_worker_is_healthy_under_its_default_node_name(distributed):
    result = health(distributed, "worker")
    assert result.returncode == 0, result.stderr
    assert "answered" in result.stdout


def test_the_worker_is_not_named_like_an_applications_own_worker(distributed):
    """Celery's default node name, celery@host, is left to the application's own worker
    (its hooks): smsq's answers as smsq@host, and nothing of smsq's as celery@host."""
    host = socket.gethostname()
    ours = health(distributed, "worker", "--node", "smsq@%h")
    assert ours.returncode == 0 and f"worker smsq@{host} answered" in ours.stdout, ours.stderr
    celerys = health(distributed, "worker", "--node", "celery@%h", "--timeout", "1")
    assert celerys.returncode == 3 and f"worker celery@{host} did not answer" in celerys.stderr


def test_a_worker_that_is_not_there_is_unhealthy(distributed):
    result = health(distributed, "worker", "--node", "nobody@%h", "--timeout", "1")
    assert result.returncode == 3
    assert "did not answer" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_broker_is_unhealthy_not_a_traceback(distributed):
    result = health(distributed, "worker", "--timeout", "1", SMSQ_BROKER_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 3
    assert "broker unreachable" in result.stderr and "Traceback" not in result.stderr


def test_beat_is_healthy_while_it_schedules_and_unhealthy_once_stopped(distributed):
    fresh_redis(distributed.env["SMSQ_BROKER_URL"])
    before = health(distributed, "beat")
    assert before.returncode == 3 and "no beat has scheduled" in before.stderr

    env = {**os.environ, **distributed.env, "PYTHONPATH": str(ROOT)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "smsq", "beat"],
        cwd=distributed.tmp,
        env=env,
        stdout=open(distributed.tmp / "beat.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: health(distributed, "beat").returncode == 0, 60, 1, "beat to report healthy")
    finally:
        beat.terminate()
        beat.wait(20)
    after = wait_until(
        lambda: (said := health(distributed, "beat", "--max-age", "2")).returncode == 3 and said,
        30,
        0.5,
        "the stopped beat's last relay to be older than 2 s",
    )
    assert "last sent the outbox relay" in after.stderr


def test_beat_health_with_an_unreachable_redis(distributed):
    result = health(distributed, "beat", "--timeout", "1", SMSQ_BROKER_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 3
    assert "Redis unreachable" in result.stderr and "Traceback" not in result.stderr


def test_a_url_that_does_not_answer_is_unhealthy():
    result = smsq("health", "url", "http://127.0.0.1:9/healthcheck", "--timeout", "1")
    assert result.returncode == 3 and "unreachable" in result.stderr

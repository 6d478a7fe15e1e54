"""The smsq command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import httpx
import pytest

from ..conftest import ROOT
from .conftest import free_port, listening_addresses, smsq, wait_port


def test_help_explains_every_command():
    out = smsq("--help").stdout
    for command in ("send", "status", "worker", "beat", "flower", "metrics", "simulate", "demo", "db"):
        assert command in out
    assert "SMSQ_CONFIG" in out and "SMSQ_BROKER_URL" in out
    send_help = smsq("send", "--help").stdout
    for option in ("--account", "--to", "--to-file", "--content", "--at", "--wait", "--json"):
        assert option in send_help


@pytest.mark.parametrize(
    "args, message",
    [
        (["--account", "nope", "--to", "13800000000", "--content", "【某某科技】hi"], "unknown account 'nope'"),
        (["--account", "shop-dxt", "--to", "13800000000", "--content", "【某某科技】hi 😀"], "cannot be sent in gbk"),
        (["--account", "slow-dxt", "--to", "13800000000", "--content", "no signature"], "has no signature"),
    ],
)
def test_bad_input_exits_2_with_the_reason(env, args, message):
    result = smsq("send", *args, env=env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("smsq: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr


def test_bad_time_is_a_usage_error(env):
    result = smsq("send", "--account", "shop-dxt", "--to", "13800000000", "--content", "x", "--at", "tomorrow", env=env)
    assert result.returncode == 2 and "YYYY-MM-DD HH:MM:SS" in result.stderr


def test_send_reads_a_file_and_reports_rejections(env, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("13800000001\n+86 138 0000 0002\n\nnot-a-number\n13800000001\n", encoding="utf-8")
    result = smsq(
        "send", "--account", "shop-dxt", "--to-file", str(numbers), "--content", "【某某科技】hi", "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    import json

    receipt = json.loads(result.stdout)
    assert receipt["accepted"] == 2 and receipt["rejected"][0][0] == "not-a-number"
    status = smsq("status", str(receipt["batch_id"]), env=env)
    assert status.returncode == 0 and "accepted 2" in status.stdout and "rejected 1" in status.stdout


def test_status_of_an_unknown_batch(env):
    result = smsq("status", "999", env=env)
    assert result.returncode == 2 and "no batch 999" in result.stderr


def start_flower(env: dict, cwd, *args: str, **extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    run_env = {**os.environ, "PYTHONPATH": str(ROOT), **env, **extra}
    if "SMSQ_FLOWER_AUTH" not in extra:
        run_env.pop("SMSQ_FLOWER_AUTH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsq", "flower", "--port", str(port), *args],
        cwd=cwd,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


@pytest.mark.parametrize("auth", [None, "ops:flower-pw-77"])
def test_flower_needs_a_password_or_stays_local(env, tmp_path, auth):
    proc, port = start_flower(env, tmp_path, **({"SMSQ_FLOWER_AUTH": auth} if auth else {}))
    try:
        wait_port(port, proc)
        if auth:
            assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
            assert httpx.get(f"http://127.0.0.1:{port}/", auth=tuple(auth.split(":"))).status_code == 200
            assert auth.split(":")[1] not in " ".join(proc.args)  # not on the command line
            assert listening_addresses(port) == {"127.0.0.1"}  # a password alone opens nothing
        else:
            assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
            assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    if not auth:
        assert "SMSQ_FLOWER_AUTH is not set" in output and "127.0.0.1 only" in output
    # Embedded (the env fixture): Flower says at start-up what it cannot show, and where to look instead.
    assert "embedded mode (SQLite broker). Flower can show no workers and no tasks here" in output
    assert "smsq status BATCH_ID" in output and "smsq metrics" in output


def test_flower_on_another_address_needs_a_password(env, tmp_path):
    proc, port = start_flower(env, tmp_path, "--address", "0.0.0.0")
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2
    assert "refusing to serve Flower on 0.0.0.0 without a password" in output and "Traceback" not in output
    assert not listening_addresses(port)


def test_flower_auth_from_a_secret_file_and_an_open_healthcheck(env, tmp_path):
    secret = tmp_path / "flower_auth"
    secret.write_text("ops:flower-file-pw-31\n", encoding="utf-8")
    proc, port = start_flower(env, tmp_path, "--address", "0.0.0.0", SMSQ_FLOWER_AUTH_FILE=str(secret))
    try:
        wait_port(port, proc)
        assert listening_addresses(port) == {"0.0.0.0"}
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", auth=("ops", "flower-file-pw-31")).status_code == 200
        # The container's healthcheck needs no password, and gets none.
        check = smsq("health", "url", f"http://127.0.0.1:{port}/healthcheck")
        assert check.returncode == 0, check.stderr
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert "flower-file-pw-31" not in output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pool", "prefork"], "--pool prefork needs the distributed mode"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (
            ["--processes", "2"],
            "--processes starts bulk processes beside the priority lane's: it needs the distributed mode",
        ),
        (["--processes", "0"], "--processes must be at least 1"),
    ],
)
def test_worker_refuses_a_pool_it_cannot_run(env, args, message):
    """Embedded mode's rate limiter lives in the worker process: prefork children would each have their own."""
    result = smsq("worker", *args, env=env)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "queues, named",
    [
        ("smsq.prio", "unknown queue 'smsq.prio'"),
        ("smsq.bulk,smsq.hooks", "unknown queue 'smsq.hooks'"),
        ("", "no queue named"),
    ],
)
def test_worker_refuses_a_queue_smsq_does_not_have(env, queues, named):
    """A typo would start a worker that consumes nothing: refused in one line, exit 2, no worker."""
    result = smsq("worker", "--queues", queues, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"smsq: error: --queues {queues!r}: {named}; smsq's queues are smsq.priority, smsq.bulk, smsq.poll"
    ]


@pytest.mark.parametrize(
    "options, cores, expected",
    [
        ([], 2, (2, 32)),  # 64 threads, one bulk process per core
        ([], 1, (1, 64)),
        ([], 16, (4, 16)),  # up to four processes
        (["--concurrency", "10"], 16, (1, 10)),  # as asked: one process of 10
        (["--processes", "3"], 16, (3, 22)),
        (["--processes", "3", "--concurrency", "8"], 16, (3, 8)),
        (["--queues", "smsq.bulk"], 16, (1, 64)),
    ],
)
def test_a_default_worker_spreads_its_threads_over_a_process_per_core(monkeypatch, options, cores, expected):
    from smsq.cli import build_parser
    from smsq.cli.commands.processes import bulk_processes, worker_pool

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    args = build_parser().parse_args(["worker", *options])
    distributed = types.SimpleNamespace(embedded=False)
    pool, concurrency = worker_pool(args, distributed)
    assert (bulk_processes(args, distributed), concurrency) == expected and pool == "threads"
    embedded = types.SimpleNamespace(embedded=True)  # one process: its rate limiter lives in it
    assert bulk_processes(build_parser().parse_args(["worker"]), embedded) == 1

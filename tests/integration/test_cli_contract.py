"""The CLI contract, kept by running the real ``smsq`` as a user does.

Exit status: 0 done; 1 ``--wait`` ended with numbers failed or unknown; 2 bad
input or configuration; 3 a service unreachable. No traceback for an expected
failure. Embedded mode keeps its files next to the config, wherever a command
runs from. ``--wait`` says why a batch does not move.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from smsq.store.models import Batch

from ..conftest import PASSWORD, ROOT, write_config

CONTENT = "【某某科技】您的验证码是 345678"


def smsq(*args: str, env: dict, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=timeout,
    )


def follow(*args: str, env: dict, cwd: Path, until: str, timeout: float = 40) -> str:
    """Run a command that does not end by itself (``--wait`` on a stuck batch) until its
    stderr says ``until``; return what it said."""
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "smsq", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if until in "".join(said):
                return "".join(said)
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
        reader.join(5)
    raise AssertionError(f"{args} never said {until!r} (exit {proc.returncode}); it said:\n{''.join(said)}")


def batches_in(db: Path) -> int:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Batch))
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path, dxt_sim):
    """A config in its own directory, and nothing else set: embedded mode as a newcomer meets it."""
    _, url = dxt_sim
    (tmp_path / "conf").mkdir()
    config = write_config(tmp_path / "conf" / "smsq.toml", url)
    (tmp_path / "elsewhere").mkdir()
    env = {"SMSQ_CONFIG": str(config), "SMSQ_TEST_DXT_PASSWORD": PASSWORD}
    for key in ("SMSQ_DATABASE_URL", "SMSQ_BROKER_URL", "SMSQ_HOME", "SMSQ_REDIS_URL"):
        env[key] = ""  # the settings treat empty as unset
    return tmp_path, env


def test_bad_input_is_refused_with_one_line_and_nothing_is_stored(home):
    tmp, env = home
    cwd = tmp / "elsewhere"
    only_invalid = tmp / "junk.txt"
    only_invalid.write_text("12345\nnot-a-number\n", encoding="utf-8")
    cases = [
        (["--to", ""], "no number to send: the list is empty"),
        (["--to-file", str(tmp / "no" / "such.txt")], "cannot read numbers from"),
        (["--to-file", str(only_invalid)], "no valid number to send; 2 rejected"),
        (["--to", "13800000001", "--at", "2020-01-01 00:00:00"], "is in the past"),
        (["--to", "13800000001", "--kind", "sms"], "unknown kind 'sms'; the kinds are otp, notice, marketing"),
    ]
    for extra, message in cases:
        result = smsq("send", "--account", "shop-dxt", "--content", CONTENT, *extra, env=env, cwd=cwd)
        assert result.returncode == 2, (extra, result.stderr)
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("smsq: error:")]
        assert len(errors) == 1 and message in errors[0], (extra, result.stderr)
    # Not one empty batch was stored (the database lives next to the config).
    assert batches_in(tmp / "conf" / "smsq.db") == 0
    assert not (cwd / "smsq.db").exists()

    unknown = smsq("status", "424242", env=env, cwd=cwd)
    assert unknown.returncode == 2 and "smsq: error: no batch 424242" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_missing_config_file_is_an_error_for_commands_that_need_accounts(home):
    tmp, env = home
    env = {**env, "SMSQ_CONFIG": str(tmp / "missing.toml")}
    for args in (
        ["send", "--account", "shop-dxt", "--to", "13800000001", "--content", CONTENT],
        ["accounts"],
        ["worker"],
        ["beat"],
        ["status", "1"],
    ):
        result = smsq(*args, env=env, cwd=tmp, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert f"no accounts file at {tmp / 'missing.toml'}" in result.stderr, args
        assert "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly(home):
    tmp, env = home
    for _ in range(3):  # a few inbound-less accounts; the reader is gone before the first line
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsq", "accounts"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(30) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err


def test_an_unreachable_database_exits_3_naming_it_without_its_password(home):
    tmp, env = home
    url = "postgresql://smsq:Sup3r-secret@127.0.0.1:1/smsq"
    env = {**env, "SMSQ_DATABASE_URL": url, "SMSQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    for args in (["status", "1"], ["send", "--account", "shop-dxt", "--to", "13800000001", "--content", CONTENT]):
        result = smsq(*args, env=env, cwd=tmp, timeout=60)
        assert result.returncode == 3, (args, result.stderr)
        assert "smsq: cannot reach the database (postgresql+psycopg://smsq:***@127.0.0.1:1/smsq)" in result.stderr
        assert "Sup3r-secret" not in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


def test_embedded_mode_follows_the_config_and_wait_tells_the_outcome_and_why(home, dxt_sim):
    tmp, env = home
    sim, _ = dxt_sim
    sim.reset()
    worker_dir, send_dir = tmp / "worker-cwd", tmp / "elsewhere"
    worker_dir.mkdir()
    log_path = tmp / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "smsq", "worker", "--loglevel", "info"],
        cwd=worker_dir,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env, "SMSQ_RELAY_INTERVAL": "2"},
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        assert f"embedded mode: database {tmp / 'conf' / 'smsq.db'}" in log_path.read_text()

        # Sent from another directory, it reaches the worker all the same.
        ok = smsq(
            "send",
            "--account",
            "shop-dxt",
            "--to",
            "13800000301,13800000302",
            "--content",
            CONTENT,
            "--wait",
            env=env,
            cwd=send_dir,
        )
        assert ok.returncode == 0, ok.stderr
        assert sorted(n for s in sim.sends for n in s.numbers) == ["13800000301", "13800000302"]
        assert not (send_dir / "smsq.db").exists() and not (worker_dir / "smsq.db").exists()

        # The vendor refuses the password: the batch ends failed, and --wait says so by its exit status.
        refused = smsq(
            "send",
            "--account",
            "wrong-dxt",
            "--to",
            "13800000303",
            "--content",
            CONTENT,
            "--wait",
            env=env,
            cwd=send_dir,
        )
        assert refused.returncode == 1, refused.stderr
        assert "failed 1" in refused.stderr

        # The account is now held: a new batch waits, and --wait says until when and why.
        said = follow(
            "send",
            "--account",
            "wrong-dxt",
            "--to",
            "13800000304",
            "--content",
            CONTENT,
            "--wait",
            env=env,
            cwd=send_dir,
            until="(Beijing time): its circuit is open",
        )
        assert "waiting: account wrong-dxt is held until" in said
    finally:
        worker.terminate()
        worker.wait(30)

    # No worker at all: --wait says nothing takes the lane.
    said = follow(
        "send",
        "--account",
        "shop-dxt",
        "--to",
        "13800000305",
        "--content",
        CONTENT,
        "--wait",
        env=env,
        cwd=send_dir,
        until="no worker seems to take smsq.priority",
    )
    assert "is `smsq worker` running with this SMSQ_CONFIG" in said


def test_wait_names_a_lane_no_worker_consumes_on_redis(home):
    from ..conftest import REDIS_URL, fresh_postgres, fresh_redis

    tmp, env = home
    env = {
        **env,
        "SMSQ_DATABASE_URL": fresh_postgres(f"smsq_contract_{os.getpid()}"),
        "SMSQ_BROKER_URL": fresh_redis(REDIS_URL),
    }
    assert smsq("db", "upgrade", env=env, cwd=tmp).returncode == 0
    said = follow(
        "send",
        "--account",
        "shop-dxt",
        "--to",
        "13800000306",
        "--content",
        CONTENT,
        "--wait",
        env=env,
        cwd=tmp,
        until="no worker consumes smsq.priority",
    )
    assert "start one with `smsq worker`" in said


def only_line(result: subprocess.CompletedProcess) -> str:
    """The one error line a refused command says (warnings aside, no traceback)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("smsq: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_a_database_or_broker_url_smsq_cannot_use_is_a_configuration_error(home):
    tmp, env = home
    send = ["send", "--account", "shop-dxt", "--to", "13800000001", "--content", CONTENT]
    cases = [
        (
            {"SMSQ_DATABASE_URL": "mysql://app:Db-pw-31@127.0.0.1/app"},
            "SMSQ_DATABASE_URL mysql://app:***@127.0.0.1/app: smsq keeps its data in PostgreSQL",
        ),
        ({"SMSQ_DATABASE_URL": "notaurl"}, "SMSQ_DATABASE_URL is not a database URL: 'notaurl'"),
        # A misspelt broker is not an outage: nothing is stored for a relay to publish.
        ({"SMSQ_BROKER_URL": "foo://x"}, "SMSQ_BROKER_URL 'foo://x' is not a broker smsq knows"),
    ]
    for extra, message in cases:
        for args in (send, ["status", "1"], ["worker"]):
            result = smsq(*args, env={**env, **extra}, cwd=tmp, timeout=30)
            assert result.returncode == 2, (extra, args, result.stderr)
            assert message in only_line(result), (extra, args)
            assert "Db-pw-31" not in result.stderr
    database = tmp / "conf" / "smsq.db"
    assert not database.exists() or batches_in(database) == 0


def test_commands_that_call_no_vendor_need_no_vendor_password(home):
    tmp, env = home
    sent = smsq("send", "--account", "shop-dxt", "--to", "13800000001", "--content", CONTENT, env=env, cwd=tmp)
    assert sent.returncode == 0, sent.stderr
    batch = sent.stdout.split()[0]
    env = {**env, "SMSQ_TEST_DXT_PASSWORD": ""}  # this host has no vendor password
    for args in (
        ["status", batch],
        ["batches"],
        ["export", batch],
        ["inbound"],
        ["accounts"],
        ["blocked"],
        ["purge", "--older-than", "90d", "--dry-run"],
    ):
        result = smsq(*args, env=env, cwd=tmp, timeout=30)
        assert result.returncode == 0, (args, result.stderr)
        assert "SMSQ_TEST_DXT_PASSWORD" not in result.stderr
    follow("metrics", "--port", "0", env=env, cwd=tmp, until="serving Prometheus metrics")

    # What calls a vendor, or starts what will, still stops at once on the missing password.
    missing = "account 'shop-dxt': password_env names SMSQ_TEST_DXT_PASSWORD, which is not set in the environment"
    for args in (
        ["send", "--account", "shop-dxt", "--to", "13800000002", "--content", CONTENT],
        ["worker"],
        ["beat"],
        ["check", "shop-dxt"],
        ["poll", "shop-dxt", "balance"],
    ):
        result = smsq(*args, env=env, cwd=tmp, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert missing in only_line(result), args
    assert batches_in(tmp / "conf" / "smsq.db") == 1
    # An account with its password at hand sends although another's is missing.
    other = smsq("send", "--account", "wrong-dxt", "--to", "13800000003", "--content", CONTENT, env=env, cwd=tmp)
    assert other.returncode == 0, other.stderr


def test_an_idempotency_key_reused_for_another_send_is_refused(home):
    tmp, env = home
    send = ["send", "--account", "shop-dxt", "--content", CONTENT, "--idempotency-key", "order-7"]
    first = smsq(*send, "--to", "13800000071,13800000072", env=env, cwd=tmp)
    assert first.returncode == 0, first.stderr
    again = smsq(*send, "--to", "13800000071,13800000072", env=env, cwd=tmp)
    assert again.returncode == 0 and "replayed: same idempotency key" in again.stderr
    assert again.stdout.split()[0] == first.stdout.split()[0]
    other = smsq(*send, "--to", "13800000073", env=env, cwd=tmp)
    assert other.returncode == 2, other.stderr
    assert f"idempotency key 'order-7' was used for batch {first.stdout.split()[0]}" in only_line(other)
    assert other.stdout == ""
    assert batches_in(tmp / "conf" / "smsq.db") == 1


def test_a_celery_started_worker_also_stops_on_a_missing_vendor_password(home):
    tmp, env = home
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "smsq", "worker", "--pool", "threads"],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env, "SMSQ_TEST_DXT_PASSWORD": "", "C_FORCE_ROOT": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        "smsq: error: account 'shop-dxt': password_env names SMSQ_TEST_DXT_PASSWORD, which is not set "
        "in the environment"
    ) in result.stderr
    assert "Traceback" not in result.stderr

"""Where smsq writes its own files, and the start-up check that it can: a worker
whose spool cannot be written refuses to start (exit 2, one line) instead of
losing a vendor's answer during the next database outage; beat likewise for its
local schedule file. Real `smsq worker` / `smsq beat` processes; the read-only
case in a mount namespace of its own, as systemd's ``ProtectSystem=strict``
leaves the config's directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smsq.worker.config import load_settings

from ..conftest import ROOT, wait_until

NOT_A_DIRECTORY = os.strerror(20)  # ENOTDIR
READ_ONLY = os.strerror(30)  # EROFS


@pytest.fixture
def env(tmp_path):
    """Embedded mode, the accounts file in ``etc/`` (as /etc/smsq), the databases elsewhere."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "smsq.toml").write_text(
        """
[accounts.shop-dxt]
provider = "dxt"
base_url = "http://127.0.0.1:9/"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
""",
        encoding="utf-8",
    )
    data = tmp_path / "data"
    data.mkdir()
    return {
        "SMSQ_CONFIG": str(etc / "smsq.toml"),
        "SMSQ_TEST_DXT_PASSWORD": "pw",
        "SMSQ_DATABASE_URL": f"sqlite:///{data / 'smsq.db'}",
        "SMSQ_BROKER_URL": f"sqla+sqlite:///{data / 'broker.db'}",
        "SMSQ_HOME": "",
        "SMSQ_STATE_DIR": "",
        "SMSQ_SPOOL_DIR": "",
        "STATE_DIRECTORY": "",
    }


def full_env(env: dict) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **env}


def run_smsq(*args: str, env: dict, cwd: Path, wrap: list[str] = ()) -> subprocess.CompletedProcess:
    """A start-up that must fail: one that starts instead runs into the timeout."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "smsq", *args],
        capture_output=True,
        text=True,
        env=full_env(env),
        cwd=cwd,
        timeout=60,
    )


def test_a_worker_refuses_to_start_when_its_spool_cannot_be_made(env, tmp_path):
    (tmp_path / "etc" / "spool").write_text("")  # a file where the spool directory would go
    result = run_smsq("worker", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    spool = tmp_path / "etc" / "spool"
    assert result.stderr.splitlines() == [
        f"smsq: error: the spool directory {spool} is not writable ({NOT_A_DIRECTORY}): set SMSQ_STATE_DIR "
        f"to a directory this user can write and that outlives the process (a state directory, a volume; "
        f"docs/operator.md: The database down)"
    ]
    assert result.stdout == ""

    # SMSQ_SPOOL_DIR given: the line names it.
    given = tmp_path / "etc" / "spool" / "answers"
    result = run_smsq("worker", env={**env, "SMSQ_SPOOL_DIR": str(given)}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"smsq: error: the spool directory {given} is not writable ({NOT_A_DIRECTORY}): set SMSQ_SPOOL_DIR "
        f"to a directory this user can write and that outlives the process (a state directory, a volume; "
        f"docs/operator.md: The database down)"
    ]


def read_only(directory: Path) -> list[str]:
    """A command prefix that runs its command with ``directory`` read-only (its own mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    wrap = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
        str(directory),
    ]
    probe = subprocess.run([*wrap, "touch", str(directory / "probe")], capture_output=True, text=True)
    if READ_ONLY not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()}")
    return wrap


def test_under_a_read_only_config_directory_the_worker_refuses_then_starts_with_a_state_directory(env, tmp_path):
    etc = tmp_path / "etc"
    wrap = read_only(etc)
    result = run_smsq("worker", env=env, cwd=tmp_path, wrap=wrap)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"smsq: error: the spool directory {etc / 'spool'} is not writable ({READ_ONLY}): set SMSQ_STATE_DIR "
        f"to a directory this user can write and that outlives the process (a state directory, a volume; "
        f"docs/operator.md: The database down)"
    ]

    # systemd's StateDirectory=smsq makes /var/lib/smsq and says so in $STATE_DIRECTORY.
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [*wrap, sys.executable, "-m", "smsq", "worker", "--concurrency", "1"],
            env=full_env({**env, "STATE_DIRECTORY": str(state)}),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "ready." in log.read_text(errors="replace") or worker.poll() is not None,
            90,
            0.2,
            "the worker to be ready",
        )
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        assert (state / "spool").is_dir() and not any((state / "spool").iterdir())  # the probe is gone
        assert not (etc / "spool").exists()
    finally:
        worker.terminate()
        worker.wait(60)


def test_beat_refuses_to_start_when_its_schedule_file_cannot_be_written(env, tmp_path):
    (tmp_path / "state").write_text("")
    result = run_smsq("beat", env={**env, "SMSQ_STATE_DIR": str(tmp_path / "state")}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"smsq: error: the directory of beat's schedule file {tmp_path / 'state'} is not writable "
        f"({NOT_A_DIRECTORY}): set SMSQ_STATE_DIR to a directory this user can write and that outlives the "
        f"process (a state directory, a volume; docs/operator.md: The database down)"
    ]


@pytest.mark.parametrize(
    "given, state, spool",
    [
        ({}, "etc", "etc/spool"),  # beside the accounts file, as before
        ({"SMSQ_HOME": "home"}, "home", "home/spool"),
        ({"STATE_DIRECTORY": "unit"}, "unit", "unit/spool"),  # systemd's StateDirectory=
        ({"STATE_DIRECTORY": "unit:unit2", "SMSQ_HOME": "home"}, "unit", "unit/spool"),
        ({"SMSQ_STATE_DIR": "state", "STATE_DIRECTORY": "unit"}, "state", "state/spool"),
        ({"SMSQ_STATE_DIR": "state", "SMSQ_SPOOL_DIR": "answers"}, "state", "answers"),
    ],
)
def test_where_the_state_directory_and_the_spool_are(env, tmp_path, monkeypatch, given, state, spool):
    for name, value in {**env, **given}.items():
        paths = ":".join(str(tmp_path / part) for part in value.split(":")) if name in given else value
        monkeypatch.setenv(name, paths)
    conf = load_settings()
    assert conf.state_dir == tmp_path / state
    assert conf.spool_dir == tmp_path / spool

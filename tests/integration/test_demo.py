"""`smsq demo`, run twice in the same directory as a user reruns `make demo`.

The demo's simulators run on free ports here (--any-port): 8800-8804 belong to
a user's own `smsq simulate` or `make demo`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ..conftest import ROOT


def demo_env(own: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}  # embedded, as `make demo`
    return {**env, "PYTHONPATH": str(ROOT), **own}


def run_demo(directory, count: int, own: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smsq", "demo", "--any-port", "--dir", str(directory), "--count", str(count)],
        capture_output=True,
        text=True,
        env=demo_env(own),
        timeout=400,
    )


def check_first(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all 20 of its delivery reports came back" in run.stdout


def check_second(run: subprocess.CompletedProcess, own: dict, run_dir) -> int:
    """The rerun's batch id, once its reports came back and `smsq status` reads the same."""
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "delivery reports: 20/20" in out
    assert "all 20 of its delivery reports came back" in out
    batch = int(re.search(r"batch (\d+): 20 accepted", out).group(1))
    # What the demo printed is what the database holds.
    status = subprocess.run(
        [sys.executable, "-m", "smsq", "status", str(batch)],
        capture_output=True,
        text=True,
        env=demo_env({**own, "SMSQ_CONFIG": str(run_dir / "smsq.toml"), "SMSQ_DEMO_PASSWORD": "demo-secret"}),
    )
    assert status.returncode == 0, status.stderr
    assert "delivered 20" in status.stdout
    return batch


def test_a_second_run_in_the_same_directory_gets_its_own_reports(tmp_path):
    """scratch: the demo's own SQLite files, which a rerun replaces. users-own: a
    database named by URL, which the demo must never clear: the second run shares
    it with the first, and its reports still come back (the restarted simulators
    hand out new ids). The users-own runs come first and last: the first run's poll
    windows (one poll per 30 s, kept in that database) have opened again by its rerun,
    while the scratch runs go on."""
    own_dir, scratch_dir = tmp_path / "own" / "demo-run", tmp_path / "scratch" / "demo-run"
    own = {
        "SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'mine.db'}",
        "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'mine-broker.db'}",
    }
    check_first(run_demo(own_dir, 20, own))

    check_first(run_demo(scratch_dir, 20, {}))
    second = run_demo(scratch_dir, 20, {})
    scratch_files = {
        "SMSQ_DATABASE_URL": f"sqlite:///{scratch_dir / 'smsq.db'}",
        "SMSQ_BROKER_URL": f"sqla+sqlite:///{scratch_dir / 'broker.db'}",
    }
    assert check_second(second, scratch_files, scratch_dir) == 1  # a new database...
    assert "fresh start" in second.stdout  # ...and told

    assert check_second(run_demo(own_dir, 20, own), own, own_dir) > 1  # the first run's batches are still there

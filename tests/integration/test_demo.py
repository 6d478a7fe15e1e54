"""`smsq demo`, run twice in the same directory as a user reruns `make demo`.

The demo's simulators run on free ports here (--any-port): 8800-8804 belong to
a user's own `smsq simulate` or `make demo`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ..conftest import ROOT


def demo_env(own: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}  # embedded, as `make demo`
    return {**env, "PYTHONPATH": str(ROOT), **own}


def run_demo(directory, count: int, own: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smsq", "demo", "--any-port", "--dir", str(directory),
                           "--count", str(count)], capture_output=True, text=True, env=demo_env(own),
                          timeout=400)


@pytest.mark.parametrize("database", ["scratch", "users-own"])
def test_a_second_run_in_the_same_directory_gets_its_own_reports(tmp_path, database):
    """scratch: the demo's own SQLite files, which a rerun replaces. users-own: a
    database named by URL, which the demo must never clear: the second run shares
    it with the first, and its reports still come back (the restarted simulators
    hand out new ids)."""
    run_dir = tmp_path / "demo-run"
    own = {}
    if database == "users-own":
        own = {"SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'mine.db'}",
               "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'mine-broker.db'}"}
    first = run_demo(run_dir, 20, own)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "all 20 of its delivery reports came back" in first.stdout

    second = run_demo(run_dir, 20, own)
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    assert "delivery reports: 20/20" in out
    assert "all 20 of its delivery reports came back" in out
    batch = int(re.search(r"batch (\d+): 20 accepted", out).group(1))
    if database == "scratch":
        assert "fresh start" in out and batch == 1  # told, and a new database
        own = {"SMSQ_DATABASE_URL": f"sqlite:///{run_dir / 'smsq.db'}",
               "SMSQ_BROKER_URL": f"sqla+sqlite:///{run_dir / 'broker.db'}"}
    else:
        assert batch > 1  # the first run's batches are still there
    # What the demo printed is what the database holds.
    status = subprocess.run([sys.executable, "-m", "smsq", "status", str(batch)], capture_output=True, text=True,
                            env=demo_env({**own, "SMSQ_CONFIG": str(run_dir / "smsq.toml"),
                                          "SMSQ_DEMO_PASSWORD": "demo-secret"}))
    assert status.returncode == 0, status.stderr
    assert "delivered 20" in status.stdout

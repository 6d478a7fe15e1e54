"""`smsq demo`, run twice in the same directory as a user reruns `make demo`.

The demo's simulators run on free ports here (--any-port): 8800-8804 belong to
a user's own `smsq simulate` or `make demo`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import ROOT


def run_demo(directory, count: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}  # embedded, as `make demo`
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "smsq", "demo", "--any-port", "--dir", str(directory),
                           "--count", str(count)], capture_output=True, text=True, env=env, timeout=400)


def test_a_second_run_in_the_same_directory_gets_its_own_reports(tmp_path):
    first = run_demo(tmp_path, 20)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "all 20 of its delivery reports came back" in first.stdout

    second = run_demo(tmp_path, 20)
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    assert "fresh start" in out  # the last run's database was scratch, and the user is told
    assert "delivery reports: 20/20" in out
    assert "all 20 of its delivery reports came back" in out
    # Its batch is the first of a new database, and the database agrees with what was printed.
    batch = int(re.search(r"batch (\d+): 20 accepted", out).group(1))
    assert batch == 1
    status = subprocess.run(
        [sys.executable, "-m", "smsq", "status", str(batch)], capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}, "PYTHONPATH": str(ROOT),
             "SMSQ_CONFIG": str(tmp_path / "smsq.toml"), "SMSQ_DEMO_PASSWORD": "demo-secret",
             "SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'smsq.db'}",
             "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    assert status.returncode == 0, status.stderr
    assert "delivered 20" in status.stdout

"""`smsq check` against the linkws simulator over real SOAP, with a real worker and beat.

A check uses the password of the shell it runs in and stores nothing; it shares
only the vendor's window (one Get, SelSum or NotSend per 30 s), which it books
with --wait so that beat, polling every 30 s, cannot take every window first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import update

from smsq.store import leases
from smsq.store.models import PollLease
from smsq.tasks import send_sms
from smsq.tasks.polls import poll
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, ROOT, serve_stack, wait_final, wait_until
from .conftest import running, scrape, value

PASSWORD = "Lk-s3cret-5521"
CONTENT = "您的验证码是 202612【某某科技】"
POLLS = ("Get", "SelSum", "NotSend")  # the vendor's calls that share one window


@pytest.fixture(scope="module", params=MODES)
def lk(request, tmp_path_factory):
    """Account ``lk`` on the linkws simulator (polled every 30 s, the vendor's fastest), a worker."""
    from smsq.simulator.linkws import LinkwsState, create_app
    from smsq.simulator.server import serve

    state = LinkwsState({"test": PASSWORD}, balance=10_000)
    sim = serve(create_app(state), port=0)
    tmp = tmp_path_factory.mktemp(f"check-{request.param}")
    config = tmp / "smsq.toml"
    config.write_text(
        f"""
[accounts.lk]
provider = "linkws"
base_url = "{sim.url}"
username = "test"
password_env = "SMSQ_TEST_LK_PASSWORD"
signature = "【某某科技】"
poll_interval = 30
""",
        encoding="utf-8",
    )
    try:
        yield from serve_stack(request.param, tmp, config, state, sim.url, {"SMSQ_TEST_LK_PASSWORD": PASSWORD})
    finally:
        sim.stop()


@pytest.fixture
def vendor(lk):
    """The simulator, reset; the vendor's own 30 s rule is off unless a test turns it on."""
    lk.sim.reset()
    lk.sim.min_poll_interval = 0.0
    open_window()
    return lk.sim


def smsq(lk, *args: str, password: str = PASSWORD, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, **lk.env, "SMSQ_TEST_LK_PASSWORD": password, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args], capture_output=True, text=True, env=env, cwd=lk.tmp, timeout=timeout
    )


def open_window() -> None:
    with session_scope(settings().database_url) as s:
        s.execute(update(PollLease).where(PollLease.account == "lk").values(next_allowed_at=leases.EPOCH, holder=None))


def account(lk) -> dict:
    listed = smsq(lk, "accounts", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    return row


def test_a_wrong_password_in_the_shell_is_reported_and_changes_nothing_shared(lk, vendor):
    refused = smsq(lk, "check", "lk", password="not-the-password")
    assert refused.returncode == 1, refused.stderr
    row = account(lk)
    assert row["health"] == "ok" and "balance" not in row["polls"] and row["circuit"]["state"] == "closed", row
    with running("metrics", env=lk.env, cwd=lk.tmp) as (port, _):
        assert value(scrape(port), "smsq_account_up", account="lk") == 1
    assert refused.stdout.startswith("lk: refused: auth -3 ") and "wrong password" in refused.stdout
    assert "not-the-password" not in refused.stdout + refused.stderr
    receipt = send_sms("lk", ["13800000001"], CONTENT)
    assert wait_final(receipt.batch_id).chunks == {"accepted": 1}

    open_window()
    accepted = smsq(lk, "check", "lk")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("lk: credentials accepted (balance 9,999)")
    assert account(lk)["balance"] is None  # a check's answer is printed, not stored


def test_a_closed_window_is_one_line_and_exit_3(lk, vendor):
    first = smsq(lk, "check", "lk")
    assert first.returncode == 0, first.stderr
    closed = smsq(lk, "check", "lk")
    assert closed.returncode == 3, closed.stdout + closed.stderr
    assert closed.stdout == ""
    (line,) = closed.stderr.splitlines()
    assert line.startswith("smsq: not checked: lk: the vendor allows one call per 30 s") and "--wait" in line
    assert [c.endpoint for c in vendor.calls].count("SelSum") == 1  # the second check never called


# The booking is a conditional UPDATE that both databases run alike (tests/unit/test_poll_leases.py
# covers it on SQLite); PostgreSQL, where three processes really race for the row, is where
# the race means something, and the vendor's 30 s window makes each run cost half a minute.
@pytest.mark.parametrize("lk", ["distributed"], indirect=True)
def test_wait_gets_a_real_check_while_beat_polls_every_30_s(lk, vendor, tmp_path):
    """Beat polls inbound every 30 s and retries a closed window the moment it opens, and
    this process polls as eagerly as it can on top (every 2 ms around the opening): a
    waiting check books the next window and gets it, and the vendor never sees two calls
    inside 30 s."""
    vendor.min_poll_interval = 30.0
    env = {**os.environ, **lk.env, "PYTHONPATH": str(ROOT)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "smsq", "beat", "--scheduler", "local", "--schedule-file", str(tmp_path / "beat")],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "beat.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    check = None
    manual = []
    try:
        wait_until(lambda: any(c.endpoint in POLLS for c in vendor.calls), 60, 0.2, "beat's first poll")
        check = subprocess.Popen(
            [sys.executable, "-m", "smsq", "check", "lk", "--wait", "--timeout", "75"],
            cwd=lk.tmp,
            env={**env, "SMSQ_TEST_LK_PASSWORD": PASSWORD},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while check.poll() is None:
            with session_scope(settings().database_url) as s:
                opens_in = leases.free_in(s, "lk", "linkws-query")
            time.sleep(opens_in - 0.2 if opens_in > 0.2 else 0.002)
            manual.append(poll("lk", "inbound").outcome)
        out, err = check.communicate(timeout=10)
    finally:
        if check is not None and check.poll() is None:
            check.kill()
        beat.terminate()
        beat.wait(20)
    assert check.returncode == 0, out + err
    assert out.startswith("lk: credentials accepted (balance 10,000)")
    assert "lk: waiting for the vendor's window, " in err
    assert "rate_limited" not in manual  # the vendor never refused this process either
    times = sorted(c.at for c in vendor.calls if c.endpoint in POLLS)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= 30.0, gaps  # the vendor never answered -101

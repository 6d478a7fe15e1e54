"""A password the vendor refuses costs one failed login per cool-off, not one per endpoint
per poll interval: polls respect the account's circuit, with a real beat and two workers
against the dxt simulator.

The vendor allows one call per endpoint every 30 s, so beat alone would poll too rarely
to show anything in seconds. The test stands in for many intervals: it queues a poll of
every endpoint twice a second and opens the 30 s windows by hand (``open_window``), as
the other poll tests do. The cool-off is ``SMSQ_ACCOUNT_HOLD`` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from smsq.store.models import AccountCircuit, PollStatus
from smsq.tasks.polls import publish_poll
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, ROOT, serve_stack, start_worker, stop_worker, wait_until, write_config
from .conftest import open_window, smsq

COOLOFF = 2.0  # seconds: SMSQ_ACCOUNT_HOLD of the stack
KINDS = ("balance", "inbound", "reports")  # dxt's polls
POLLERS = 4  # two workers of two threads: the calls that may be in flight as the circuit opens
DRIVE_EVERY = 0.5  # seconds between two rounds of polls of every endpoint


@pytest.fixture(scope="module", params=MODES, name="stack")
def one_account_stack(request, dxt_sim, tmp_path_factory):
    """A stack that knows shop-dxt only (the simulator cannot tell accounts apart), with a
    short cool-off."""
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(request.param)
    config = write_config(tmp / "smsq.toml", url)
    config.write_text(config.read_text().split("[accounts.slow-dxt]")[0] + "poll_interval = 30\n")
    yield from serve_stack(request.param, tmp, config, state, url, {"SMSQ_ACCOUNT_HOLD": str(COOLOFF)})


def circuit_row() -> AccountCircuit | None:
    with session_scope(settings().database_url) as s:
        row = s.get(AccountCircuit, "shop-dxt")
        if row is not None:
            s.expunge(row)
        return row


def unix(at: datetime) -> float:
    return at.replace(tzinfo=UTC).timestamp()


def polled_ok_since(since: datetime) -> set[str]:
    with session_scope(settings().database_url) as s:
        rows = s.query(PollStatus).filter(PollStatus.account == "shop-dxt", PollStatus.kind.in_(KINDS)).all()
        return {r.kind for r in rows if r.outcome == "ok" and r.polled_at >= since}


def drive(until, timeout: float, what: str):
    """Poll every endpoint every DRIVE_EVERY seconds, each window opened, until ``until()``."""

    def round_of_polls():
        open_window()
        for kind in KINDS:
            publish_poll("shop-dxt", kind)
        return until()

    return wait_until(round_of_polls, timeout, DRIVE_EVERY, what)


def test_a_refused_password_costs_one_login_per_cool_off_across_all_endpoints(stack, sim, tmp_path):
    sim.set_faults(auth_fail=True)  # the vendor refuses the password: -7 帐号登录验证失败
    second = dataclasses.replace(stack, worker=None, tmp=tmp_path)
    second.worker = start_worker(second, queues="smsq.poll")
    beat = subprocess.Popen(
        [sys.executable, "-m", "smsq", "beat", "--scheduler", "local", "--schedule-file", str(tmp_path / "beat")],
        cwd=tmp_path,
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
        stdout=open(tmp_path / "beat.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # Beat's first polls meet the refusal and open the circuit; then two probes, one
        # per cool-off, are refused (the cool-off doubles each time): trip 3. Polls that
        # ignored the circuit would pile up failed logins first.
        drive(
            lambda: ((row := circuit_row()) is not None and row.trips >= 3) or len(sim.refused_logins) > 3 * POLLERS,
            60,
            "two refused probes",
        )
        refusals = sorted(c.at for c in sim.refused_logins)
        held = circuit_row()
        assert held is not None and held.trips >= 3, (
            f"{len(refusals)} failed logins in {refusals[-1] - refusals[0]:.1f} s"
        )
        shown = json.loads(smsq("accounts", "--json", env=stack.env).stdout)[0]
        by_hand = smsq("poll", "shop-dxt", "reports", env=stack.env)

        sim.set_faults(auth_fail=False)  # the password is fixed
        fixed = datetime.now(UTC).replace(tzinfo=None)
        reopen = circuit_row().reopen_at
        drive(lambda: polled_ok_since(fixed) == set(KINDS), 60, "every endpoint polled again")
    finally:
        beat.terminate()
        stop_worker(second.worker)
        beat.wait(20)

    # At most one failed login per cool-off, across all endpoints: besides the calls in
    # flight as the circuit first opened (one per poller at most), only the probes.
    probes = held.trips - 1
    burst = len(refusals) - probes
    assert 1 <= burst <= POLLERS, refusals
    # The first probe comes a cool-off after the first refusal, each next one after twice
    # the cool-off before it (a refused probe doubles it).
    since = [refusals[burst] - refusals[0]] + [
        b - a for a, b in zip(refusals[burst:], refusals[burst + 1 :], strict=False)
    ]
    assert len(since) == probes, refusals
    assert all(gap >= COOLOFF * 2**i for i, gap in enumerate(since)), since
    assert "on the " in held.reason and " poll" in held.reason and "-7" in held.reason, held.reason
    # What `smsq accounts` showed meanwhile.
    assert shown["circuit"]["state"] in ("open", "half_open") and "circuit" in shown["health"], shown
    assert by_hand.returncode == 1 and "not polled: the account's circuit is open for" in by_hand.stdout, by_hand
    log = stack.worker_log() + second.worker_log()
    assert "not polled: the account's circuit is open for" in log

    # The fixed password is tried once the cool-off is over, not before; then every endpoint polls.
    calls_after = [c.at for c in sim.calls if c.at >= unix(fixed)]
    assert min(calls_after) >= unix(reopen), (min(calls_after), unix(reopen))
    assert circuit_row().state == "closed"
    assert not [c for c in sim.refused_logins if c.at >= unix(fixed)]

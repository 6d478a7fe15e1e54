"""Beat's poll tasks through a database outage: one log line each, no traceback.

The worker reaches PostgreSQL through a fault proxy; the test cuts it, queues
the polls as beat does, and reads the worker's log."""

from __future__ import annotations

import re

import pytest

from smsq.tasks.polls import publish_poll
from smsq.worker.app import get_app

from ...conftest import wait_until
from .conftest import installed, outage_site

pytestmark = [pytest.mark.distributed, pytest.mark.fault]

POLLS = [("shop-dxt", "reports"), ("shop-dxt", "inbound"), ("slow-dxt", "reports"), ("slow-dxt", "balance")]


def task_ids(log: str, outcome: str, task: str = r"poll_\w+") -> list[str]:
    return re.findall(rf"Task smsq\.{task}\[([0-9a-f-]+)\] {outcome}", log)


def test_a_database_outage_logs_one_line_per_poll_task(sim, dxt_sim, tmp_path, proxy):
    site = outage_site(tmp_path, dxt_sim, proxy)
    with installed(site):
        site.start_worker(concurrency=2)
        proxy.drop()  # PostgreSQL stopped
        before = len(site.worker_log())
        for account, kind in POLLS:
            publish_poll(account, kind)

        def all_done() -> bool:
            log = site.worker_log()[before:]
            return len(task_ids(log, "succeeded")) + len(task_ids(log, "raised")) >= len(POLLS)

        wait_until(all_done, 60, 0.2, "the poll tasks to end")
        log = site.worker_log()[before:]
        proxy.heal()

    assert "Traceback" not in log, log[-3000:]
    assert len(task_ids(log, "succeeded")) == len(POLLS), log[-3000:]
    said = [line for line in log.splitlines() if "cannot reach the database" in line and "poll " in line]
    assert sorted(re.search(r"poll (\S+ \S+):", line).group(1) for line in said) == sorted(
        f"{account} {kind}" for account, kind in POLLS
    ), log[-3000:]
    assert all("postgresql" in line and "polled again at its next turn" in line for line in said)
    # the polls' own lines: beside Celery's "received" and "succeeded" lines, one line each
    polls_own = [line for line in log.splitlines() if "poll " in line and "Task smsq.poll" not in line]
    assert len(polls_own) == len(POLLS), log[-3000:]


def test_relay_runs_through_a_database_outage_say_it_once(sim, dxt_sim, tmp_path, proxy):
    site = outage_site(tmp_path, dxt_sim, proxy)
    with installed(site):
        site.start_worker(concurrency=2)
        proxy.drop()
        before = len(site.worker_log())
        for _ in range(4):  # as beat sends it, every SMSQ_RELAY_INTERVAL
            get_app().send_task("smsq.relay", queue="smsq.poll")
        wait_until(
            lambda: len(task_ids(site.worker_log()[before:], "(?:succeeded|raised)", "relay")) >= 4,
            60,
            0.2,
            "the relay tasks to end",
        )
        log = site.worker_log()[before:]
        proxy.heal()
    assert "Traceback" not in log, log[-3000:]
    # the relay's own lines (a lane process that starts during the outage says it waits, once, too)
    said = [line for line in log.splitlines() if "cannot reach the database" in line and "smsq.relay:" in line]
    assert len(said) == 1 and "the relay tries again" in said[0], log[-3000:]

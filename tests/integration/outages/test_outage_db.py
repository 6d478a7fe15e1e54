"""A database outage while vendor calls are in flight loses no vendor answer.

The worker reaches PostgreSQL through a fault proxy; the test cuts it while
the (slow) vendor holds calls, and judges from the simulator's record and the
database: every number sent once, no chunk ``unknown``.
"""

from __future__ import annotations

import signal
import time

import pytest

from smsq.tasks import send_sms
from smsq.tasks.outcome_keeper import spool_of
from smsq.worker.config import settings

from ...conftest import wait_final, wait_until
from .conftest import (
    CONTENT,
    FaultProxy,
    assert_each_sent_once,
    chunk_states,
    installed,
    numbers,
    outage_site,
    relay_running,
)

pytestmark = [pytest.mark.distributed, pytest.mark.fault]


def cut_while_calls_are_in_flight(sim, proxy: FaultProxy) -> None:
    wait_until(lambda: len(sim.calls) >= 2, 30, 0.05, "vendor calls in flight")
    proxy.drop()  # PostgreSQL stopped: connections closed, new ones closed at once


def test_a_15s_database_outage_leaves_no_chunk_unknown(sim, dxt_sim, tmp_path, proxy):
    site = outage_site(tmp_path, dxt_sim, proxy)
    with installed(site), relay_running():
        site.start_worker(concurrency=2)
        sim.set_faults(latency=2.0)
        to = numbers(1000)
        receipt = send_sms("shop-dxt", to, CONTENT)
        cut_while_calls_are_in_flight(sim, proxy)
        time.sleep(15)
        proxy.heal()
        status = wait_final(receipt.batch_id, timeout=60)
        assert status.chunks == {"accepted": 10}, site.worker_log()[-3000:]
        assert_each_sent_once(sim, to)
        assert "database unavailable" in site.worker_log()  # the outage did meet a recording


def test_answers_spooled_in_an_outage_are_recorded_by_the_next_worker(sim, dxt_sim, tmp_path, proxy):
    site = outage_site(tmp_path, dxt_sim, proxy, SMSQ_DB_RETRY_FOR="2")
    with installed(site), relay_running():
        worker = site.start_worker(concurrency=2)
        sim.set_faults(latency=1.5)
        to = numbers(400, prefix="136")
        receipt = send_sms("shop-dxt", to, CONTENT)
        cut_while_calls_are_in_flight(sim, proxy)
        spool = spool_of(settings())
        wait_until(lambda: spool.pending() >= 2, 20, 0.1, "the answers to be spooled")
        site.signal_group(worker, signal.SIGKILL)  # the worker dies while the database is down
        worker.wait()
        sent_before = len(sim.sends)
        assert chunk_states(receipt.batch_id)["sending"] >= 2
        lines = b"".join(p.read_bytes() for p in spool.files()).decode()
        assert not [n for n in to if n in lines] and CONTENT not in lines  # no number nor content in the spool
        proxy.heal()
        site.start_worker(concurrency=2)  # replays the spool at start-up
        sim.set_faults(latency=0.0)
        status = wait_final(receipt.batch_id, timeout=45)
        assert status.chunks == {"accepted": 4}, site.worker_log()[-3000:]
        assert_each_sent_once(sim, to)
        assert len(sim.sends) == 4 and sent_before >= 2  # the spooled chunks were not sent again
        assert "recorded from the spool" in site.worker_log()
        assert spool.pending() == 0

"""Warm shutdown from any signal path: SIGTERM or SIGINT to the worker's whole
process group (Ctrl-C in a terminal, some container runtimes) lets the vendor
calls in flight finish and be recorded; nothing ends ``unknown``.

Embedded mode runs the threads pool, distributed mode the prefork pool, whose
children get the group's signal directly (worker/shutdown.py)."""
from __future__ import annotations

import signal

import pytest

from smsq.tasks import send_sms

from .conftest import wait_final, wait_until
from .outage_support import CONTENT, assert_each_sent_once, chunk_states, installed, make_site, numbers, \
    relay_running
from .outage_support import sim  # noqa: F401 (a fixture)

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("mode", ["embedded", "distributed"], ids=["threads", "prefork"])
def test_a_signal_to_the_process_group_lets_calls_in_flight_finish(sim, dxt_sim, tmp_path, mode, sig):
    # SMSQ_SEND_TIMEOUT=15: a chunk left 'sending' by a killed call would turn 'unknown' within the test
    site = make_site(tmp_path, dxt_sim[1], mode, SMSQ_SEND_TIMEOUT="15", SMSQ_REPUBLISH_AFTER="5")
    with installed(site), relay_running():
        worker = site.start_worker(concurrency=2)
        sim.set_faults(latency=3.0)
        to = numbers(500, prefix="135")
        receipt = send_sms("shop-dxt", to, CONTENT)
        wait_until(lambda: len(sim.calls) >= 2, 30, 0.05, "two vendor calls in flight")
        site.signal_group(worker, sig)
        assert worker.wait(30) == 0, site.worker_log()[-3000:]  # a warm shutdown, after the calls
        states = chunk_states(receipt.batch_id)
        assert states["accepted"] >= 2 and not states["sending"] and not states["unknown"], states
        assert "WorkerLostError" not in site.worker_log()
        sim.set_faults(latency=0.0)
        site.start_worker(concurrency=2)  # the rest goes out with the next worker
        status = wait_final(receipt.batch_id, timeout=45)
        assert status.chunks == {"accepted": 5}, site.worker_log()[-3000:]
        assert_each_sent_once(sim, to)

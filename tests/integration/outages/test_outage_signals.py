"""Warm shutdown from any signal path: SIGTERM or SIGINT to the worker's whole
process group (Ctrl-C in a terminal, some container runtimes) lets the vendor
calls in flight finish and be recorded; nothing ends ``unknown``.

Embedded mode runs the threads pool, distributed mode the prefork pool, whose
children get the group's signal directly (worker/shutdown.py)."""

from __future__ import annotations

import signal

import pytest

from smsq.tasks import send_sms

from ...conftest import wait_final, wait_until
from .conftest import CONTENT, assert_each_sent_once, chunk_states, installed, make_site, numbers, relay_running

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


def lane_pids(worker) -> list[int]:
    """The worker processes `smsq worker` started beside itself (worker/lanes.py)."""
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def test_the_priority_lane_process_lives_and_ends_with_its_worker(sim, dxt_sim, tmp_path):
    """`smsq worker` (distributed, no --queues) runs the priority lane in a process of its own:
    started again when it exits, ended warmly with the worker, and gone when the worker is killed."""
    import os

    site = make_site(tmp_path, dxt_sim[1], "distributed", SMSQ_SEND_TIMEOUT="15")
    with installed(site):
        worker = site.start_worker(concurrency=2)
        wait_until(
            lambda: "priority@" in site.worker_log() and site.worker_log().count("ready.") >= 2,
            60,
            0.2,
            "the priority lane to be ready",
        )
        (lane,) = lane_pids(worker)
        os.kill(lane, signal.SIGKILL)
        wait_until(lambda: "the priority lane (pid" in site.worker_log(), 10, 0.2, "the lane's exit noticed")
        wait_until(
            lambda: len(lane_pids(worker)) == 1 and lane_pids(worker) != [lane], 30, 0.2, "the lane started again"
        )
        wait_until(lambda: site.worker_log().count("ready.") >= 3, 60, 0.2, "the new lane to be ready")
        (lane,) = lane_pids(worker)

        # An OTP in flight in the lane when the worker alone is told to stop: it is recorded.
        sim.set_faults(latency=3.0)
        otp = send_sms("shop-dxt", ["13566660001"], CONTENT)
        assert otp.lane == "priority"
        wait_until(lambda: len(sim.calls) >= 1, 30, 0.05, "the OTP's vendor call in flight")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, site.worker_log()[-3000:]
        assert not alive(lane), "the priority lane outlived its worker"
        assert chunk_states(otp.batch_id) == {"accepted": 1}
        sim.set_faults(latency=0.0)

        # Killed without a word, the worker takes its lane with it (PR_SET_PDEATHSIG).
        worker = site.start_worker(concurrency=2)
        wait_until(lambda: lane_pids(worker), 30, 0.2, "the lane started")
        (lane,) = lane_pids(worker)
        worker.kill()
        worker.wait()
        wait_until(lambda: not alive(lane), 30, 0.2, "the lane to end with its worker")

        # --processes 2: a second bulk process; the bulk processes yield the CPU to the lane.
        worker = site.start_worker(2, "--processes", "2")
        wait_until(lambda: len(lane_pids(worker)) == 2, 30, 0.2, "both lanes started")
        wait_until(lambda: "bulk2@" in site.worker_log(), 30, 0.2, "the second bulk process")
        nices = {}
        for pid in lane_pids(worker):
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                nices["priority" if b"priority@" in cmdline.read() else "bulk2"] = nice_of(pid)
        base = os.nice(0)  # this process's: the worker starts from it
        assert nices == {"priority": base, "bulk2": base + 5} and nice_of(worker.pid) == base + 5, nices
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0

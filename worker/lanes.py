"""`smsq worker` in distributed mode runs the lanes in processes of their own.

One Python process uses at most one CPU core (the GIL). A blast keeps every
thread of a worker busy with database work and vendor answers, and an OTP
that arrives then waits for a free thread *and* for its turn at the core
behind dozens of others: a quarter of a second more, at 200 ms vendor latency.
So the worker started by `smsq worker` (no ``--queues``) takes the bulk lane
and the polls, and starts one more worker process for ``smsq.priority`` alone,
with a few threads: its core time is the OTPs'. The bulk lane itself runs in
one process per core (up to four; smsq/cli/commands/processes.py) with the 64
threads spread over them, or in ``--processes N``: N-1 more bulk processes.

The extra processes are ordinary `smsq worker --queues ...` processes with
node names of their own (``smsq-priority@host``, ``smsq-bulk2@host``, or the
given ``--hostname`` with ``-priority`` / ``-bulk2`` after its name part). They share
the terminal and the process group, so Ctrl-C or a group signal reaches each
as it reaches the first (each finishes its vendor calls: worker/shutdown.py).
The first process watches them: one that exits is started again (after a
second, then up to a minute); when the first process shuts down it passes
SIGTERM on and waits for them; and should it die without a word (SIGKILL), the
kernel sends them SIGTERM (Linux ``PR_SET_PDEATHSIG``), so no lane outlives
its worker. The embedded mode stays one process: its rate limiter lives in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("smsq.lanes")

# The first process's node name without --hostname: never Celery's default celery@%h,
# which an application's own worker takes (for its hooks) on the same host.
DEFAULT_NODE = "smsq@%h"
PRIORITY_QUEUE = "smsq.priority"
BULK_QUEUES = "smsq.bulk,smsq.poll"
PRIORITY_THREADS = 8  # OTPs are few and short; eight in flight at once is plenty
RESTART_AFTER = (1.0, 60.0)  # first and longest wait before a lane that exited is started again
BULK_NICE = 5  # how much lower the bulk lane's CPU priority is than the priority lane's
STOP_WITHIN = 90.0  # seconds the first process waits for the others to finish their calls
_PR_SET_PDEATHSIG = 1


@dataclass
class Lane:
    name: str  # what the log calls it
    queues: str
    concurrency: int
    hostname: str
    pool: str = "threads"
    nice: int = 0  # how much lower its CPU priority is (bulk processes: BULK_NICE)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0

    def argv(self, loglevel: str, events: bool) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "smsq",
            "worker",
            "--queues",
            self.queues,
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            self.hostname,
            "--loglevel",
            loglevel,
        ]
        return argv + (["--events"] if events else [])

    def __str__(self) -> str:
        host = self.hostname.replace("%h", os.uname().nodename)
        return f"{self.name} ({host}, {self.concurrency} threads, {self.queues})"


def node_name(given: str | None, suffix: str) -> str:
    """``smsq-priority@%h`` for the default ``smsq@%h``; ``bulk1-priority@%h`` for ``bulk1@%h``."""
    name, at, host = (given or DEFAULT_NODE).partition("@")
    return f"{name}-{suffix}{at}{host}" if at else f"{given}-{suffix}"


def plan(args, pool: str, concurrency: int, processes: int) -> list[Lane]:
    """The processes to start beside this one (``processes``: bulk processes in all)."""
    lanes = [Lane("priority lane", PRIORITY_QUEUE, PRIORITY_THREADS, node_name(args.hostname, "priority"))]
    for n in range(2, processes + 1):
        lanes.append(
            Lane(
                f"bulk process {n}",
                BULK_QUEUES,
                concurrency,
                node_name(args.hostname, f"bulk{n}"),
                pool,
                nice=BULK_NICE,
            )
        )
    return lanes


def lower_priority(nice: int) -> None:
    """This process (Linux: this thread, and threads it starts later) at ``nice`` lower
    CPU priority; where that is refused, as it was."""
    with contextlib.suppress(OSError):
        os.nice(nice)


def _child_setup(nice: int):
    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the first process's shutdown still stops them
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if nice:
            lower_priority(nice)

    return setup


class Supervisor:
    """Starts the lanes, starts again one that exits, stops them with the worker."""

    def __init__(self, lanes: list[Lane], loglevel: str = "info", events: bool = False) -> None:
        self.lanes, self.loglevel, self.events = lanes, loglevel, events
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            for lane in self.lanes:
                self._spawn(lane)
        self._thread = threading.Thread(target=self._watch, name="smsq-lanes", daemon=True)
        self._thread.start()

    def _spawn(self, lane: Lane) -> None:
        # Same stdout/stderr and process group as this process: one terminal, one Ctrl-C.
        lane.proc = subprocess.Popen(lane.argv(self.loglevel, self.events), preexec_fn=_child_setup(lane.nice))
        lane.started_at = time.monotonic()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                if self._stopping.is_set():
                    return
                for lane in self.lanes:
                    self._check(lane)

    def _check(self, lane: Lane) -> None:
        now = time.monotonic()
        if lane.proc is not None:
            code = lane.proc.poll()
            if code is None:
                if now - lane.started_at > RESTART_AFTER[1]:
                    lane.restarts = 0  # ran a good while: the next exit is a fresh one
                return
            wait = min(RESTART_AFTER[0] * 2**lane.restarts, RESTART_AFTER[1])
            log.warning(
                "the %s (pid %s) exited with %s; starting it again in %.0f s", lane.name, lane.proc.pid, code, wait
            )
            lane.proc, lane.next_start, lane.restarts = None, now + wait, lane.restarts + 1
        if now >= lane.next_start:
            self._spawn(lane)

    def _running(self) -> list[subprocess.Popen]:
        return [lane.proc for lane in self.lanes if lane.proc is not None and lane.proc.poll() is None]

    def shutting_down(self) -> None:
        """This process begins its warm shutdown: the lanes begin theirs (SIGTERM; a second
        one, when the group got one too, is still a warm shutdown). Safe in a signal handler:
        no lock, no logging."""
        self._stopping.set()
        for proc in self._running():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Warm shutdown of every lane, waiting for their vendor calls to be recorded."""
        self.shutting_down()
        with self._lock:
            running = self._running()
        deadline = time.monotonic() + STOP_WITHIN
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("a worker lane (pid %s) did not stop in %.0f s; killing it", proc.pid, STOP_WITHIN)
                proc.kill()
                proc.wait()


def describe(lanes: list[Lane]) -> str:
    return "; ".join(str(lane) for lane in lanes)


def yield_cpu_to_lanes() -> None:
    """Lower this process's CPU priority below its lanes' (nice +BULK_NICE): on a busy host
    the kernel runs the priority lane (and the database, if it shares the host) first, so an
    OTP does not queue for a core behind a blast. An idle core goes to the bulk lane as before.

    Linux keeps a nice value per thread, inherited by threads started later: the call is
    made from the main thread after the supervisor's thread exists and before Celery starts
    its pool, so the lanes that thread starts (again) keep the normal priority."""
    lower_priority(BULK_NICE)

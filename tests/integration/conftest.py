"""What the integration tests share, beyond the stacks of tests/conftest.py: the vendor
simulators on a free port, the `smsq` command run as a user runs it, a served
`smsq metrics` and its samples, the poll window opened by hand, and the send path
run in this process with its transactions counted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update

from smsq.simulator.server import Running, serve
from smsq.store import leases
from smsq.store.models import PollLease
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import PASSWORD, ROOT, apply_env, mode_env, restore_env, write_config

# ---------------------------------------------------------------------------
# Simulator tests
# ---------------------------------------------------------------------------


@contextmanager
def running_simulator(state, create_app) -> Iterator[Running]:
    """The simulator app ``create_app(state)`` on a free port of 127.0.0.1, stopped on leaving."""
    with serve(create_app(state), port=0) as running:
        yield running


class AppSlot:
    """An ASGI app that hands every request to the app put in it."""

    app = None

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def simulator_slot():
    """(slot, running): one simulator server for the module's tests, each of which puts an app
    of its own, on a vendor state of its own, in the slot. Starting and stopping a server
    (which waits for requests a hang fault parked) costs more than most simulator tests."""
    slot = AppSlot()
    with serve(slot, port=0) as running:
        yield slot, running


def set_faults(sim: Running, **faults) -> None:
    resp = httpx.post(f"{sim.url}_sim/faults", json=faults)
    assert resp.status_code == 200, resp.text


def snapshot_errors_during(state, action: Callable[[], object], times: int = 20) -> list[BaseException]:
    """Do ``action`` ``times`` times while another thread keeps reading ``state.snapshot()``.

    Returns what the reading thread raised (nothing, if the state is safe to read meanwhile).
    """
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                state.snapshot()
        except BaseException as exc:  # pragma: no cover - reported to the caller
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(times):
        action()
    thread.join()
    return errors


# ---------------------------------------------------------------------------
# The command line, run as a user runs it
# ---------------------------------------------------------------------------


def smsq(*args: str, env: dict | None = None, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture
def env(tmp_path):
    config = write_config(tmp_path / "smsq.toml", "http://127.0.0.1:9/")
    return {
        "SMSQ_CONFIG": str(config),
        "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
        "SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'smsq.db'}",
        "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port``, read from /proc/net/tcp."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"flower exited: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("flower did not listen")


@contextmanager
def running(*args: str, env: dict, cwd):
    """A real `python -m smsq ARGS` serving on the port given after --port; stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsq", *args, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_port(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics: {(sample name, labels): value}."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------------------
# Polls and sends on a stack
# ---------------------------------------------------------------------------


def open_window(account: str = "shop-dxt") -> None:
    with session_scope(settings().database_url) as s:
        s.execute(update(PollLease).where(PollLease.account == account).values(next_allowed_at=leases.EPOCH))


def sent_numbers(sim) -> set[str]:
    return {n for s in sim.sends for n in s.numbers}


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def direct(request, dxt_sim, tmp_path_factory):
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(f"cost-{request.param}")
    saved = apply_env(mode_env(request.param, tmp, write_config(tmp / "smsq.toml", url)))
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    yield state
    restore_env(saved)


class Tally:
    """Transactions on the engine, each with the tables its statements named."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.transactions: list[list[str]] = []

    def _begin(self, conn):
        self.transactions.append([])

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        if self.transactions and not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE is the begin
            self.transactions[-1].append(statement)

    def __enter__(self):
        event.listen(self.engine, "begin", self._begin)
        event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "before_cursor_execute", self._statement)

    def health_reads(self) -> int:
        return sum(
            1
            for statements in self.transactions
            if statements and all("poll_status" in s or "account_circuits" in s for s in statements)
        )

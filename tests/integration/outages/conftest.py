"""What the outage tests share: real processes to break (a private redis-server,
smsq worker and beat processes with their own logs, waiting on what they say), a
worker in its own process group (so a test can signal the whole group, as a
terminal's Ctrl-C or a container runtime does), the outbox relay running beside
it, a fault proxy in front of PostgreSQL (faultproxy.py), and judging a batch from
the simulator's record."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from smsq.store.models import Chunk
from smsq.tasks.relay import run_relay
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ...conftest import ROOT, apply_env, mode_env, restore_env, wait_until, write_config
from ..conftest import free_port
from .faultproxy import FaultProxy


class RedisServer:
    """A redis-server of the test's own, empty at every start, that can be killed."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Process:
    """``smsq <args>`` in the background, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, tmp: Path) -> None:
        self.name, self.log = name, tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smsq", *args],
            cwd=tmp,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, said: str, timeout: float = 60, after: int = 0) -> float:
        """Seconds until the log says ``said`` (past offset ``after``); fails if the process ends."""
        started = time.monotonic()
        while said not in self.text()[after:]:
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.text()[-3000:]}"
            assert time.monotonic() - started < timeout, (
                f"{self.name} did not say {said!r} in {timeout:.0f} s:\n{self.text()[-3000:]}"
            )
            time.sleep(0.1)
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CONTENT = "【某某科技】您的验证码是 345678，请在5分钟内输入。"


@pytest.fixture
def sim(dxt_sim):
    """The module's dxt simulator, without the faults and sends of earlier tests."""
    state, _ = dxt_sim
    state.reset()
    return state


def numbers(count: int, prefix: str = "137") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(count)]


@dataclass
class Site:
    """One smsq installation for a test: its settings, the test process's env, its workers."""

    tmp: Path
    env: dict  # what the test process (producer, relay) uses
    worker_env: dict  # what the worker uses (e.g. the database through a fault proxy)
    workers: list = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.tmp / "worker.log"

    def worker_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start_worker(self, concurrency: int = 2, *options: str) -> subprocess.Popen:
        env = {**os.environ, **self.worker_env, "PYTHONPATH": str(ROOT)}
        seen = self.worker_log().count("ready.")
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsq", "worker", "--concurrency", str(concurrency), "--loglevel", "info", *options],
            cwd=self.tmp,
            env=env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        wait_until(
            lambda: self.worker_log().count("ready.") > seen or proc.poll() is not None,
            60,
            0.2,
            "the worker to be ready",
        )
        assert proc.poll() is None, self.worker_log()[-3000:]
        return proc

    def signal_group(self, proc: subprocess.Popen, sig: int) -> None:
        os.killpg(proc.pid, sig)  # start_new_session: the worker leads its own group

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def make_site(tmp: Path, sim_url: str, mode: str, db_url_for_worker=None, **settings_env: str) -> Site:
    config = write_config(tmp / "smsq.toml", sim_url)
    env = {
        **mode_env(mode, tmp, config),
        "SMSQ_HOME": str(tmp),
        "SMSQ_RELAY_INTERVAL": "1",
        "SMSQ_SPOOL_DIR": str(tmp / "spool"),
        **settings_env,
    }
    worker_env = dict(env)
    if db_url_for_worker:
        worker_env["SMSQ_DATABASE_URL"] = db_url_for_worker(env["SMSQ_DATABASE_URL"])
    return Site(tmp, env, worker_env)


class installed:
    """``with installed(site):`` the test process uses the site's settings, schema in place."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __enter__(self) -> Site:
        from smsq.worker.db import upgrade

        self.saved = apply_env(self.site.env)
        upgrade(settings().database_url)
        return self.site

    def __exit__(self, *exc) -> None:
        self.site.stop_all()
        restore_env(self.saved)


class relay_running:
    """The outbox relay every second in a thread, as beat would run it."""

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.wait(1):
            with contextlib.suppress(Exception):  # a relay pass that fails is retried by the next one, as under beat
                run_relay()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def chunk_states(batch_id: int) -> Counter:
    with session_scope(settings().database_url, readonly=True) as s:
        return Counter(s.scalars(select(Chunk.state).where(Chunk.batch_id == batch_id)).all())


def chunk_attempts(batch_id: int) -> list[int]:
    with session_scope(settings().database_url, readonly=True) as s:
        return list(s.scalars(select(Chunk.attempts).where(Chunk.batch_id == batch_id)).all())


def assert_each_sent_once(sim, expected: list[str]) -> None:
    received = Counter(n for send in sim.sends for n in send.numbers)
    assert set(received) == set(expected), f"{len(set(expected) - set(received))} numbers never reached the vendor"
    assert max(received.values()) == 1, "a number reached the vendor twice"


# A database outage: the worker reaches PostgreSQL through a fault proxy.
@pytest.fixture
def proxy():
    pg = make_url("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    proxy = FaultProxy(pg.host, pg.port)
    yield proxy
    proxy.close()


def through(proxy: FaultProxy):
    return lambda url: make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def outage_site(tmp_path, dxt_sim, proxy, **env) -> Site:
    # SMSQ_REPUBLISH_AFTER: a chunk whose claim met the outage is published again soon
    return make_site(
        tmp_path, dxt_sim[1], "distributed", db_url_for_worker=through(proxy), SMSQ_REPUBLISH_AFTER="5", **env
    )

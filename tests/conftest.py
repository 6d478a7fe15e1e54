"""Shared fixtures: real simulators over HTTP, real Redis/PostgreSQL, real Celery workers.

``stack`` is parametrised over the two modes smsq ships:
  embedded     SQLite database + kombu's SQLAlchemy transport on SQLite, thread pool
  distributed  PostgreSQL + Redis broker, Redis rate limiter
and a module may ask for a third (``stack_fixture(*MODES, "rabbitmq")``):
  rabbitmq     PostgreSQL + RabbitMQ broker (a vhost of its own), Redis for the limiter
All run `smsq worker`'s default pool (threads).
Each module that uses it gets one worker process per mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsq.simulator.dxt import DxtState, create_app
from smsq.simulator.server import serve

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Pw-s3cret-dxt-9917"  # must never show in logs, task messages or reprs
PG_ADMIN_URL = os.environ.get("SMSQ_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _redis_for_this_worker(url: str) -> str:
    """The test Redis database of this pytest process: `make test` runs two at once
    (pytest-xdist workers gw0, gw1, ...), and each flushes its database freely, so
    worker N takes the base database + N. PostgreSQL databases and RabbitMQ vhosts are
    already per process (named after the pid)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) + int(worker[2:])}"


REDIS_URL = _redis_for_this_worker(os.environ.get("SMSQ_TEST_REDIS", "redis://127.0.0.1:6379/9"))
RABBITMQ_URL = os.environ.get("SMSQ_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
MODES = ("embedded", "distributed")


def reset_process_state() -> None:
    """Forget every per-process cache that depends on the environment."""
    from smsq.tasks import schema
    from smsq.worker import app, clients, limiter
    from smsq.worker.config import settings

    settings.cache_clear()
    app.reset_app()
    clients.close_all()
    limiter.reset()
    schema.forget()


# The suite sends fixed texts to fixed numbers again and again, seconds apart: the duplicate
# guard (30 s by default) would refuse them. It is off in the suite's configs; the send
# policy's own tests (tests/integration/test_send_policy.py, tests/unit/test_caps.py) write
# the rules they test, the defaults among them.
GUARD_OFF = "".join(f'\n[kinds.{kind}]\nduplicate_window = "0"\n' for kind in ("otp", "notice", "marketing"))


def write_config(path: Path, sim_url: str, kinds: str = GUARD_OFF) -> Path:
    """The suite's accounts file; ``kinds``: its [kinds.KIND] tables (the guard off)."""
    path.write_text(
        kinds
        + f"""
[accounts.shop-dxt]
provider = "dxt"
base_url = "{sim_url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
charset = "gbk"
signature = "【某某科技】"
rate_limit = "200/s"
timeout = 5

[accounts.slow-dxt]
provider = "dxt"
base_url = "{sim_url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
rate_limit = "200/s"
timeout = 1

[accounts.wrong-dxt]
provider = "dxt"
base_url = "{sim_url}"
username = "test"
password = "not-the-password"
signature = "【某某科技】"
""",
        encoding="utf-8",
    )
    return path


def fresh_postgres(name: str, template: str = "template1") -> str:
    """An empty database ``name`` (a copy of ``template``), dropped first if it was there."""
    drop_postgres(name)
    admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres(name: str) -> None:
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin_sql(statement: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


_template: list[str] = []  # the database this run migrated once, to copy


def migrated_postgres(name: str) -> str:
    """A fresh database ``name`` with smsq's schema: a copy of one this run migrated once.
    PostgreSQL copies a template in a fraction of the time the migrations take; the first
    call still migrates an empty database (and the `smsq db upgrade` tests start empty)."""
    from smsq.worker.db import upgrade

    if not _template:
        template = f"smsq_template_{os.getpid()}"
        upgrade(fresh_postgres(template))
        _template.append(template)
    return fresh_postgres(name, _template[0])


def pytest_sessionfinish(session, exitstatus):
    if _template:
        drop_postgres(_template.pop())


def fresh_redis(url: str) -> str:
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@dataclass
class Stack:
    mode: str
    env: dict
    sim: DxtState
    sim_url: str
    tmp: Path
    worker: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.tmp / f"worker-{self.mode}.log"

    def worker_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def mode_env(mode: str, tmp: Path, config: Path) -> dict:
    env = {
        "SMSQ_CONFIG": str(config),
        "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
        "SMSQ_RELAY_INTERVAL": "2",
        "SMSQ_SEND_TIMEOUT": "300",
    }
    if mode == "embedded":
        env["SMSQ_DATABASE_URL"] = f"sqlite:///{tmp / 'smsq.db'}"
        env["SMSQ_BROKER_URL"] = f"sqla+sqlite:///{tmp / 'broker.db'}"
    elif mode == "rabbitmq":
        env["SMSQ_DATABASE_URL"] = migrated_postgres(f"smsq_test_{os.getpid()}")
        env["SMSQ_BROKER_URL"] = f"{RABBITMQ_URL}/{fresh_vhost(f'smsq_test_{os.getpid()}')}"
        env["SMSQ_REDIS_URL"] = fresh_redis(REDIS_URL)  # the shared rate limiter
    else:
        env["SMSQ_DATABASE_URL"] = migrated_postgres(f"smsq_test_{os.getpid()}")
        env["SMSQ_BROKER_URL"] = fresh_redis(REDIS_URL)
    return env


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fresh_vhost(name: str) -> str:
    """A RabbitMQ vhost of this run's own: smsq's queue names are fixed, so parallel
    runs on one RabbitMQ would take each other's tasks otherwise."""
    drop_vhost(name)
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, RABBITMQ_URL.split("//")[1].split(":")[0], ".*", ".*", ".*")
    return name


def drop_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)


def apply_env(env: dict) -> dict:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_process_state()
    return saved


def restore_env(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_process_state()


def start_worker(stack: Stack, queues: str = "smsq.priority,smsq.bulk,smsq.poll", *options: str) -> subprocess.Popen:
    """``options``: more `smsq worker` options (``--pool prefork``)."""
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    readies = stack.worker_log().count("ready.")  # the log is kept across restarts: wait for a new one
    out = open(stack.log, "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsq",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "2",
            "--loglevel",
            "info",
            *options,
        ],
        cwd=stack.tmp,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while stack.worker_log().count("ready.") <= readies:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}:\n{stack.worker_log()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"worker not ready in 60 s:\n{stack.worker_log()[-3000:]}")
        time.sleep(0.2)
    return proc


def stop_worker(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def dxt_sim():
    state = DxtState({"test": PASSWORD}, balance=10_000_000)
    running = serve(create_app(state), port=0)
    yield state, running.url
    running.stop()


def stack_fixture(*modes: str):
    """The ``stack`` fixture over ``modes``; a module overrides the default with
    ``stack = stack_fixture(*MODES, "rabbitmq")``."""

    @pytest.fixture(scope="module", params=modes, name="stack")
    def _stack(request, dxt_sim, tmp_path_factory):
        yield from run_stack(request.param, dxt_sim, tmp_path_factory)

    return _stack


stack = stack_fixture(*MODES)


def on_stacks(*modes: str):
    """Run a test on these of its module's stacks only: the ones where it means something
    (not reported as skipped on the others)."""
    return pytest.mark.parametrize("stack", modes, indirect=True)


def run_stack(mode: str, dxt_sim, tmp_path_factory):
    state, url = dxt_sim
    tmp = tmp_path_factory.mktemp(mode)
    yield from serve_stack(mode, tmp, write_config(tmp / "smsq.toml", url), state, url)


def serve_stack(mode: str, tmp: Path, config: Path, state, url: str, extra_env: dict | None = None):
    """A Stack of ``mode`` on the accounts file ``config``, with its worker, until the caller is done."""
    env = {**mode_env(mode, tmp, config), **(extra_env or {})}
    saved = apply_env(env)
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.config import settings
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    s = Stack(mode, env, state, url, tmp)
    try:
        s.worker = start_worker(s)
        yield s
    finally:
        stop_worker(s.worker)
        restore_env(saved)
        if mode == "rabbitmq":
            drop_vhost(env["SMSQ_BROKER_URL"].rsplit("/", 1)[1])


@pytest.fixture
def sim(stack):
    """The stack's simulator, reset for the test."""
    stack.sim.reset()
    return stack.sim


def wait_until(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_final(batch_id: int, timeout: float = 60):
    from smsq.tasks import batch_status

    return wait_until(lambda: (s := batch_status(batch_id)).final and s, timeout, 0.2, f"batch {batch_id} to settle")


# -- the rate limit, judged the same on a fake clock (tests/unit) and on real calls (tests/integration)


def busiest_second(starts: list[float], width: float = 1.0) -> int:
    """The most call starts in any window ``[t, t + width)``."""
    starts = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


class FakeClock:
    """A limiter's clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

"""Database engine and sessions, one engine per process and URL."""
from __future__ import annotations

import time
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Iterator

from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool


CONNECT_TIMEOUT = 10  # seconds to open a PostgreSQL connection
# In a worker, a pooled connection idle longer than this is pinged before use (one
# that died while idle, a restarted server, is replaced then); a connection in
# steady use is not: a ping a checkout was a round trip more per transaction on
# the send path. A connection that breaks between two uses fails its statement,
# which the send path rides out (tasks/outcome_keeper.py) and SQLAlchemy answers
# by replacing every connection of the pool. Every other process (the
# application calling send_sms, the CLI, beat) pings at every checkout, so that
# a database restart never shows its caller an error.
PING_AFTER_IDLE = 1.0
_ping_always = True

_engines: dict[str, Engine] = {}

# Worker slots that may each hold a connection at once (`smsq worker
# --concurrency`); the pool is sized from it. 5 suits any short-lived command.
_slots = 5


def size_pool_for(slots: int) -> None:
    """Size the pool of every engine created from now on for ``slots``
    concurrent users (a thread-pool worker's threads); drops engines made before."""
    global _slots
    _slots = max(1, slots)
    _drop_engines()


def ping_only_idle() -> None:
    """Ping pooled connections only after PING_AFTER_IDLE (a worker's choice, see there),
    for engines created from now on."""
    global _ping_always
    _ping_always = False
    _drop_engines()


def _drop_engines() -> None:
    """Forget the engines made so far: the next use builds them with the settings now."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _sessionmaker.cache_clear()


def pool_size_for(slots: int) -> tuple[int, int]:
    """``(pool_size, max_overflow)``. A slot holds a connection only for its few
    milliseconds of database work per chunk, not across the vendor call, so
    about ten kept connections serve many slots; the overflow lets every slot
    (and two more, for the relay and polls) have one at the same moment, so
    none ever waits for the pool."""
    kept = min(slots + 2, 24)
    return kept, slots + 2 - kept + 3


def engine_for(url: str) -> Engine:
    engine = _engines.get(url)
    if engine is None:
        engine = _engines.setdefault(url, _create(url))
    return engine


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Worker threads, beat and the producer share one file: WAL lets readers
        # go on while a writer commits, and a busy timeout queues writers instead
        # of failing them with "database is locked".
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # Transactions are begun below, not by pysqlite's own guesswork.
            dbapi_conn.isolation_level = None

        # BEGIN IMMEDIATE takes the write lock up front: a transaction that reads
        # and then writes (a claim, a relay pass) then waits its turn under the
        # busy timeout instead of failing with "database is locked" mid-way.
        # Read-only scopes (status, listings) begin a deferred transaction and
        # leave the write lock to the workers.
        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - trivial
            readonly = conn.get_execution_options().get("smsq_readonly")
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # A database behind a dropped route or a silent firewall never refuses: without a
    # connect timeout every process would hang on it instead of saying it is unreachable.
    pool_size, max_overflow = pool_size_for(_slots)
    engine = create_engine(url, pool_pre_ping=_ping_always, pool_size=pool_size, max_overflow=max_overflow,
                           connect_args={"connect_timeout": CONNECT_TIMEOUT})
    if not _ping_always:
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, for connections idle over PING_AFTER_IDLE only (see there)."""
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):  # pragma: no cover - trivial
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # The pool throws this connection away and checks out another (up to 3 tries).
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error


def dispose_after_fork() -> None:
    """Drop pooled connections inherited from the parent without closing them
    under the parent's feet (SQLAlchemy's recipe for multiprocessing)."""
    for engine in _engines.values():
        engine.dispose(close=False)


@lru_cache(maxsize=16)
def _sessionmaker(url: str, readonly: bool) -> sessionmaker:
    engine = engine_for(url)
    if readonly:
        engine = engine.execution_options(smsq_readonly=True)
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str, *, readonly: bool = False) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error.
    ``readonly`` scopes must not write (on SQLite they do not take the write lock)."""
    session = _sessionmaker(url, readonly)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """A Core connection in a transaction, for the send path's hot statements
    (no ORM session to build per chunk)."""
    with engine_for(url).begin() as conn:
        yield conn


@contextmanager
def autocommit(url: str) -> Iterator[Connection]:
    """A Core connection outside any transaction: each statement commits on its own.
    For the send path's single-statement claim and record on PostgreSQL, which then
    cost one round trip each instead of four or six (BEGIN, statements, COMMIT)."""
    with engine_for(url).connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (``smsq db upgrade``)."""
    from alembic import command  # start-up: alembic takes ~0.3 s to import, for a migration only
    from alembic.config import Config  # (as above)

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("smsq.store") / "migrations"))
    cfg.attributes["url"] = url
    command.upgrade(cfg, revision)


def probe(url: str, timeout: float = 5.0) -> None:
    """Open a fresh connection and run ``SELECT 1``; raise if the database cannot be
    reached within ``timeout``. A pooled connection could hang on a dead socket."""
    connect_args = {} if url.startswith("sqlite") else {"connect_timeout": max(1, int(timeout))}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()

"""Database engine and sessions, one engine per process and URL."""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


_engines: dict[str, Engine] = {}


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
    # connect_timeout: a stopped or unreachable database fails a connect in seconds (libpq's
    # default waits forever), so the callers' outage retries and the spool get their turn.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args)


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


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (``smsq db upgrade``)."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("smsq.store") / "migrations"))
    cfg.attributes["url"] = url
    command.upgrade(cfg, revision)

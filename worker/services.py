"""Which service could not be reached, said plainly: for one-shot commands (one line,
exit 3) and for long-running processes (one log line when an outage starts, one
when it ends, never a traceback per retry). URLs are always shown without passwords.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import kombu.exceptions
import sqlalchemy.exc

from .config import settings
from .logs import safe_url

DATABASE, BROKER, REDIS = "database", "broker", "redis"


class DatabaseUnreachableError(ConnectionError):
    """The database could not be reached (down, refusing, timing out). The message names
    it by its URL, the password hidden; ``url`` is that URL, ``__cause__`` the driver's error."""

    def __init__(self, url: str, cause: BaseException):
        self.url = safe_url(url)
        super().__init__(f"cannot reach the database ({self.url}): {first_line(cause)}")


@contextmanager
def database_reached(url: str) -> Iterator[None]:
    """Inside: the driver's "cannot connect" errors become DatabaseUnreachableError, so an
    application calling smsq meets smsq's own error, not SQLAlchemy's."""
    try:
        yield
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        raise DatabaseUnreachableError(url, exc) from exc


def first_line(exc: BaseException) -> str:
    root = exc
    while (orig := getattr(root, "orig", None)) is not None:  # SQLAlchemy wraps the driver's error
        root = orig
    text = str(root).strip().splitlines()
    return text[0] if text else type(root).__name__


def unreachable_kind(exc: BaseException | None) -> str | None:
    """DATABASE, BROKER or REDIS when ``exc`` (or what caused it) says that service could
    not be reached; None for anything else."""
    import redis.exceptions  # start-up: redis is 65 modules, 60-120 ms (-X importtime); needed once an error is here

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (DatabaseUnreachableError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return DATABASE
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return REDIS
        if isinstance(exc, (kombu.exceptions.OperationalError, ConnectionError, socket.timeout, TimeoutError)):
            return BROKER
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def describe(kind: str, conf=None) -> str:
    """'the database (URL)', 'the broker (URL)' or 'Redis (URL)'. Redis that is the
    broker is called the broker: that is what an operator configured it as."""
    if conf is None:
        conf = settings()
    if kind == DATABASE:
        return f"the database ({safe_url(conf.database_url)})"
    if kind == REDIS and conf.redis_url and conf.redis_url != conf.broker_url:
        return f"Redis ({safe_url(conf.redis_url)})"
    return f"the broker ({safe_url(conf.broker_url)})"


def unreachable_service(exc: BaseException) -> str | None:
    """'the database (URL)' or 'the broker (URL)' (or 'Redis (URL)' for SMSQ_REDIS_URL) when
    ``exc`` says a service could not be reached; None for anything else."""
    kind = unreachable_kind(exc)
    return None if kind is None else describe(kind)


class Outage:
    """Tells a log that a service is unreachable once when it happens, and once when
    it is back, however many retries lie between."""

    def __init__(self, log: logging.Logger, what: str, doing: str = "retrying") -> None:
        self.log, self.what, self.doing = log, what, doing
        self.since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def down(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("cannot reach %s: %s; %s", self.what, first_line(exc), self.doing)

    def up(self) -> None:
        if self.since is not None:
            self.log.warning("%s is back after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None

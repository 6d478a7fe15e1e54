"""The embedded broker: kombu's SQLAlchemy transport, polled often enough to be useful.

kombu's virtual transports sleep ``polling_interval`` (1 s) whenever a queue
read comes back empty — including every time the worker already holds its
prefetch limit of unacked messages. With prefetch 1 that caps a worker at a few
chunks a second. The interval is normally a transport option, but this
transport hands every transport option to ``create_engine``, which refuses it.
So the subclass carries a shorter interval itself; smsq points embedded
``sqla+sqlite://`` URLs at it.
"""
from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqla

POLLING_INTERVAL = 0.05  # seconds; an empty poll of a SQLite table costs well under a millisecond


class Transport(kombu_sqla.Transport):
    polling_interval = POLLING_INTERVAL


def broker_settings(broker_url: str) -> tuple[str, str | None]:
    """``(url, transport)`` for Celery: ``sqla+sqlite:///x.db`` becomes the same
    database through this module's transport (kombu takes an import path only
    as the explicit ``transport`` setting, never inside a URL)."""
    prefix = "sqla+"
    if broker_url.startswith(prefix):
        return broker_url[len(prefix):], f"{__name__}:Transport"
    return broker_url, None

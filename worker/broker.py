"""The brokers' transports, where kombu's own cost smsq too much.

The embedded broker: kombu's SQLAlchemy transport, polled often enough to be useful.

kombu's virtual transports sleep ``polling_interval`` (1 s) whenever a queue
read comes back empty — including every time the worker already holds its
prefetch limit of unacked messages. With prefetch 1 that caps a worker at a few
chunks a second. The interval is normally a transport option, but this
transport hands every transport option to ``create_engine``, which refuses it.
So the subclass carries a shorter interval itself; smsq points embedded
``sqla+sqlite://`` URLs at it.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from kombu.transport import sqlalchemy as kombu_sqla

POLLING_INTERVAL = 0.05  # seconds; an empty poll of a SQLite table costs well under a millisecond


class Transport(kombu_sqla.Transport):
    polling_interval = POLLING_INTERVAL


# Redis: kombu's channel builds a new redis-py client object for every publish
# and every ack (``conn_or_acquire``), about a tenth of a busy worker's CPU at
# zero vendor latency. A client object holds no connection of its own (it takes
# one from the channel's pool for each command), and redis-py documents sharing
# one between threads as safe, so the channel keeps one per pool.
class RedisChannel(kombu_redis.Channel):
    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        kept = self.__dict__.get("_smsq_client")
        if kept is None or kept[0] is not pool:  # a new pool after a reconnection: a new client
            kept = self.__dict__["_smsq_client"] = (pool, super()._create_client())
        return kept[1]


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel


def broker_settings(broker_url: str) -> tuple[str, str | None]:
    """``(url, transport)`` for Celery: ``sqla+sqlite:///x.db`` becomes the same
    database through this module's transport, a ``redis://`` URL goes through
    RedisTransport (kombu takes an import path only as the explicit ``transport``
    setting, never inside a URL)."""
    prefix = "sqla+"
    if broker_url.startswith(prefix):
        return broker_url[len(prefix) :], f"{__name__}:Transport"
    if broker_url.startswith("redis://"):
        return broker_url, f"{__name__}:RedisTransport"
    return broker_url, None

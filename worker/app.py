"""The Celery app and the settings that make a send safe.

``get_app()`` builds the app from the current settings once per process;
``reset_app()`` drops it (tests switch between embedded and distributed mode).

smsq is a guest in an application that has a Celery app of its own: its app
never becomes the current or the default one (that is Celery's worker's and
beat's business, in smsq's own processes), and its tasks (``@smsq_task``) are
registered on smsq's app alone, never on the application's.
"""
from __future__ import annotations

import importlib
import sys
import threading
from typing import Callable

from celery import Celery, current_app
from celery.local import Proxy
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue

from .config import ConfigError, Settings, settings
from .guest import APP_NAME, sent_by_smsq
from . import shutdown

QUEUES = ("smsq.priority", "smsq.bulk", "smsq.poll")
TASK_MODULES = ["smsq.tasks.send", "smsq.tasks.split", "smsq.tasks.relay", "smsq.tasks.polls"]
BEAT_LOOP_INTERVAL = 5.0  # seconds
BEAT_LOCK_TIMEOUT = 30  # seconds; well under a minute from a beat's crash to its standby's takeover

_lock = threading.Lock()
_app: Celery | None = None
_defined: list[tuple[Callable, dict]] = []  # smsq's tasks, registered on each app make_app builds


def smsq_task(*, name: str, **options):
    """A task of smsq's app alone. Celery's ``shared_task`` (and ``app.task``'s default)
    adds a task to every app in the process, the application's too, and resolves it
    through the current app; this one is looked up in smsq's app, whatever is current."""
    def define(fun: Callable) -> Proxy:
        _defined.append((fun, {"name": name, **options}))
        return Proxy(lambda: get_app().tasks[name])
    return define


def make_app(conf: Settings) -> Celery:
    from .broker import broker_settings

    broker_url, broker_transport = broker_settings(conf.broker_url)
    # Never the current app (nor, through Celery's Django fix-up, the default one):
    # the application's own @shared_task tasks go through its app, not smsq's.
    app = Celery(APP_NAME, broker=broker_url, set_as_current=False, fixups=[])
    for module in TASK_MODULES:  # their @smsq_task functions, registered on this app alone
        importlib.import_module(module)
    for fun, options in _defined:
        app.task(shared=False, lazy=False, **options)(fun)
    if broker_transport:
        app.conf.broker_transport = broker_transport
    transport_options: dict = {}
    if conf.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message after visibility_timeout: it must
        # outlast the longest retry countdown (60 s) and the longest vendor call
        # by far, or a slow chunk would be delivered twice (the claim would still
        # stop a second send, but it is noise).
        transport_options["visibility_timeout"] = 3600
    # (The SQLAlchemy transport hands its options to create_engine, so nothing goes there.)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # task messages are data (ids), never serialized code
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        result_extended=False,
        task_acks_late=True,  # a chunk is acked only when its outcome is recorded...
        task_reject_on_worker_lost=True,  # ...and redelivered if the worker dies; the claim makes that harmless
        worker_prefetch_multiplier=1,  # no chunk waits in a busy worker's buffer
        task_default_queue="smsq.bulk",
        # Each queue its own direct exchange of its name and key. A bare Queue(name) would
        # be bound to the default exchange (smsq.bulk, key smsq.bulk), all three alike, so
        # whatever was published there would reach every lane.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_routes={"smsq.relay": {"queue": "smsq.poll"}, "smsq.poll*": {"queue": "smsq.poll"}},
        # Task events cost a worker about a fifth of its CPU at full speed (three
        # broadcasts per chunk). Off unless asked for (`smsq worker --events`);
        # a running Flower turns them on in every worker every few seconds.
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    from smsq.scheduler.schedule import beat_schedule

    app.conf.beat_schedule = beat_schedule(conf)
    # Beat wakes at least this often: a standby tries the lock, the holder renews it.
    app.conf.beat_max_loop_interval = BEAT_LOOP_INTERVAL
    if not conf.embedded and conf.redis_url:
        # One beat at a time: redbeat holds a lock in Redis (a second beat waits). A
        # crashed beat's lock expires after this many seconds and a standby takes over.
        app.conf.redbeat_redis_url = conf.redis_url
        app.conf.redbeat_lock_timeout = BEAT_LOCK_TIMEOUT
        # A Redis that stopped answering must not hold beat for longer than a tick.
        app.conf.redbeat_redis_options = {"socket_timeout": 5, "socket_connect_timeout": 5}
    from . import config_probe  # noqa: F401  (the worker answers `smsq health worker` on its accounts file)
    from .relay_timer import RelayTimer
    from .warm import WarmUp

    app.steps["worker"].add(WarmUp)
    app.steps["worker"].add(RelayTimer)
    return app


@worker_init.connect
def _credentials_first(sender=None, **_: object) -> None:
    """A worker of smsq's app, however started (``celery -A smsq worker`` too), stops at
    start on a vendor password it cannot read, as ``smsq worker`` does: one line, exit 2,
    rather than every chunk it takes failing on it. Other apps' workers are not smsq's."""
    if not sent_by_smsq(sender):
        return
    try:
        settings().require_credentials()
    except ConfigError as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """A prefork child must not reuse its parent's sockets: database connections,
    the Redis limiter and HTTP pools are opened again in each child. Only in a child
    of smsq's worker: an application's own prefork worker is left as it is."""
    if _app is None or current_app._get_current_object() is not _app:
        return
    from . import clients, db, limiter

    db.dispose_after_fork()
    limiter.reset()
    clients.forget()
    shutdown.guard_pool_child()  # a SIGTERM to the process group must not end a vendor call


def get_app() -> Celery:
    global _app
    with _lock:
        if _app is None:
            _app = make_app(settings())
        return _app


def reset_app() -> None:
    global _app
    with _lock:
        _app = None

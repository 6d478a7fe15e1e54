"""The Celery app and the settings that make a send safe.

``get_app()`` builds the app from the current settings once per process;
``reset_app()`` drops it (tests switch between embedded and distributed mode).

smsq is a guest in an application that has a Celery app of its own: its app
never becomes the current or the default one (that is Celery's worker's and
beat's business, in smsq's own processes), and its tasks (``@smsq_task``) are
registered on smsq's app alone, never on the application's.

This is the runtime's part of the app: what every process that sends or
publishes needs. A worker's boot steps and beat's schedule are added by
scheduler/app.py, through ``on_app_built``; ``smsq.app``, ``celery -A smsq``
and the ``smsq`` command go through it.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable

from celery import Celery, current_app
from celery.local import Proxy
from celery.signals import worker_init, worker_process_init
from kombu import Exchange, Queue

from . import clients, db, limiter, shutdown
from .broker import broker_settings
from .config import ConfigError, Settings, settings
from .guest import APP_NAME, sent_by_smsq

QUEUES = ("smsq.priority", "smsq.bulk", "smsq.poll")
TASK_MODULES = ["smsq.tasks.send", "smsq.tasks.split", "smsq.tasks.relay", "smsq.tasks.polls"]

_lock = threading.Lock()
_app: Celery | None = None
_defined: list[tuple[Callable, dict]] = []  # smsq's tasks, registered on each app make_app builds
_completions: list[Callable[[Celery, Settings], None]] = []  # see on_app_built


def smsq_task(*, name: str, **options):
    """A task of smsq's app alone. Celery's ``shared_task`` (and ``app.task``'s default)
    adds a task to every app in the process, the application's too, and resolves it
    through the current app; this one is looked up in smsq's app, whatever is current."""

    def define(fun: Callable) -> Proxy:
        _defined.append((fun, {"name": name, **options}))
        return Proxy(lambda: get_app().tasks[name])

    return define


def on_app_built(callback: Callable[[Celery, Settings], None]) -> None:
    """Have ``callback(app, conf)`` complete every app ``make_app`` builds from here on,
    and the one built already: how the floor that runs the worker and beat
    (scheduler/app.py) adds its boot steps and beat schedule without the runtime
    knowing of it."""
    with _lock:
        if callback in _completions:
            return
        _completions.append(callback)
        built = _app
    if built is not None:
        callback(built, settings())


def make_app(conf: Settings) -> Celery:
    """smsq's Celery app for these settings: broker, queues, serializers, and its tasks,
    imported by module name (``include``) and registered on this app alone."""
    broker_url, broker_transport = broker_settings(conf.broker_url)
    # Never the current app (nor, through Celery's Django fix-up, the default one):
    # the application's own @shared_task tasks go through its app, not smsq's.
    app = Celery(APP_NAME, broker=broker_url, include=TASK_MODULES, set_as_current=False, fixups=[])
    register_tasks(app)
    if broker_transport:
        app.conf.broker_transport = broker_transport
    app.conf.update(delivery_settings(conf))
    for complete in list(_completions):
        complete(app, conf)
    return app


def register_tasks(app: Celery) -> None:
    """The ``@smsq_task`` functions of the task modules (the app's ``include``), on this app alone."""
    for module in TASK_MODULES:
        importlib.import_module(module)  # by name, as Celery's include does: the tasks are floors above
    for fun, options in _defined:
        app.task(shared=False, lazy=False, **options)(fun)


def delivery_settings(conf: Settings) -> dict:
    """How messages travel: serializers, acks, queues and their routes, events."""
    transport_options: dict = {}
    if conf.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message after visibility_timeout: it must
        # outlast the longest retry countdown (60 s) and the longest vendor call
        # by far, or a slow chunk would be delivered twice (the claim would still
        # stop a second send, but it is noise).
        transport_options["visibility_timeout"] = 3600
    # (The SQLAlchemy transport hands its options to create_engine, so nothing goes there.)
    return dict(
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

"""``smsq health``: is a long-running process alive and doing its job? For healthchecks.

Exit 0 healthy; 3 unhealthy or unreachable, with the reason on stderr; 2 when
the check cannot apply (bad configuration). Each check asks the thing itself,
not a proxy for it:

* worker -- a Celery ping to the worker's own node name, answered by the
  worker's consumer thread over the broker: a hung or disconnected worker
  does not answer. Then the worker says which version of the accounts file it
  runs (worker/config_probe.py; it reads the file again first if it changed): a
  worker on another version than the file here, which it could not read again
  or is not its file, is unhealthy, with the accounts it lacks and why.
* beat   -- beat's own record in Redis (celery-redbeat) of when it last sent
  the outbox relay, which it sends every ``SMSQ_RELAY_INTERVAL`` seconds: a
  beat that stopped scheduling stops renewing it. A standby beat, idle behind
  the lock, is healthy while the active one is: the schedule is running.
* url    -- an HTTP endpoint answering 2xx (Flower's ``/healthcheck``, the
  metrics endpoint, a simulator).
"""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime

import httpx
import redis
from redbeat.schedulers import RedBeatSchedulerEntry

from smsq.scheduler.app import get_app
from smsq.worker.config_probe import COMMAND
from smsq.worker.lanes import DEFAULT_NODE

from .common import load

UNHEALTHY = 3


class Unhealthy(Exception):
    """What is wrong, in words an operator can act on."""


def cmd_health(args) -> int:
    check = {"worker": _worker, "beat": _beat, "url": _urls}[args.what]
    try:
        print(f"healthy: {check(args)}")
        return 0
    except Unhealthy as exc:
        print(f"smsq: unhealthy: {exc}", file=sys.stderr)
        return UNHEALTHY


def node_name(given: str | None) -> str:
    """The worker's node name, ``%h`` expanded as Celery does. Default: the name of a
    worker started without --hostname, ``smsq@<this host>``."""
    return (given or DEFAULT_NODE).replace("%h", socket.gethostname())


def _worker(args) -> str:
    conf = load()
    if conf.embedded:
        raise Unhealthy(
            "the embedded SQLite broker carries no broadcast; `smsq health worker` needs a Redis or RabbitMQ broker"
        )
    node = node_name(args.node)
    app = get_app()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=args.timeout)
            replies = app.control.ping(destination=[node], timeout=args.timeout, connection=conn)
        if not any(node in reply for reply in replies):
            raise Unhealthy(f"worker {node} did not answer a ping within {args.timeout:g} s")
        answers = app.control.broadcast(COMMAND, destination=[node], reply=True, timeout=args.timeout, connection=conn)
    except Unhealthy:
        raise
    except Exception as exc:  # kombu/redis raise many kinds; all mean "cannot reach the broker"
        raise Unhealthy(f"broker unreachable: {type(exc).__name__}") from None
    theirs = next((a[node] for a in answers if isinstance(a.get(node), dict) and "digest" in a[node]), None)
    if theirs is None:  # a worker of a version that does not say
        return f"worker {node} answered"
    ours = conf.config_version
    if theirs["digest"] != (ours.digest if ours else ""):
        raise Unhealthy(config_difference(node, theirs, conf))
    return f"worker {node} answered (accounts file version {theirs['version']})"


def config_difference(node: str, theirs: dict, conf) -> str:
    """A worker on another version of the accounts file than this command's, in words."""
    said = (
        f"worker {node} runs {theirs['path']} version {theirs['version']}, not {conf.config_version} "
        f"as {conf.config_path} reads here"
    )
    lacking = sorted(set(conf.accounts) - set(theirs["accounts"]))
    if lacking:
        said += f"; it lacks account(s) {', '.join(lacking)}: their chunks wait"
    if theirs.get("refused"):
        said += f"; its file changed but cannot be used there: {theirs['refused']}"
    return said


def _beat(args) -> str:
    conf = load()
    if conf.embedded or not conf.redis_url:
        raise Unhealthy(
            "beat keeps its schedule in Redis only with a Redis broker (celery-redbeat); "
            "`smsq health beat` has nothing to read here"
        )
    prefix = get_app().conf.get("redbeat_key_prefix") or "redbeat:"
    max_age = args.max_age or max(60.0, 3 * conf.relay_interval)
    try:
        client = redis.Redis.from_url(conf.redis_url, socket_connect_timeout=args.timeout, socket_timeout=args.timeout)
        raw = client.hget(prefix + "smsq.relay", "meta")
    except redis.RedisError as exc:
        raise Unhealthy(f"Redis unreachable: {type(exc).__name__}") from None
    last = RedBeatSchedulerEntry.decode_meta(raw)["last_run_at"]
    if last is None:
        raise Unhealthy("no beat has scheduled anything yet")
    age = (datetime.now(UTC) - last).total_seconds()
    if age > max_age:
        raise Unhealthy(f"beat last sent the outbox relay {age:.0f} s ago (more than {max_age:g} s)")
    return f"beat sent the outbox relay {age:.0f} s ago"


def _urls(args) -> str:
    for url in args.urls:
        try:
            response = httpx.get(url, timeout=args.timeout)
        except httpx.HTTPError as exc:
            raise Unhealthy(f"{url} unreachable: {type(exc).__name__}") from None
        if not response.is_success:
            raise Unhealthy(f"{url} answered {response.status_code}")
    return ", ".join(args.urls) + " answered"

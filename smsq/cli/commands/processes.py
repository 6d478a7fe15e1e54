"""The long-running processes and set-up: worker, beat, flower, simulate, db."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from celery.signals import worker_shutting_down

from smsq.scheduler.app import get_app
from smsq.tasks.schema import ensure_schema
from smsq.worker import lanes, slots
from smsq.worker.app import QUEUES
from smsq.worker.config import ConfigError, env_secret
from smsq.worker.db import ping_only_idle, size_pool_for, upgrade
from smsq.worker.services import DATABASE, Outage, describe, unreachable_kind
from smsq.worker.spool import ensure_writable

from .common import load

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DATABASE_RETRY = 5.0  # seconds between start-up attempts to reach the database

log = logging.getLogger("smsq.start")


def writable(directory: Path, what: str, setting: str) -> None:
    """A directory this process must write is writable now, or start-up stops with one line
    (exit 2), rather than a file write failing later (a worker's spool: during a database
    outage, losing the vendor's answer it was meant to keep)."""
    try:
        ensure_writable(directory)
    except OSError as exc:
        raise ConfigError(
            f"{what} {directory} is not writable ({exc.strerror or exc}): set {setting} "
            f"to a directory this user can write and that outlives the process (a state "
            f"directory, a volume; docs/operator.md: The database down)"
        ) from None


def wait_for_database(conf, who: str) -> None:
    """Start-up: a database that cannot be reached yet is waited for, said once in the
    log, not a traceback and an exit (a host's services start in any order)."""
    outage = Outage(log, describe(DATABASE, conf), f"{who} waits for it (trying every {DATABASE_RETRY:.0f} s)")
    while True:
        try:
            ensure_schema(conf)
        except Exception as exc:
            if unreachable_kind(exc) != DATABASE:
                raise
            outage.down(exc)
            time.sleep(DATABASE_RETRY)
        else:
            outage.up()
            return


# Vendor calls are I/O: a slot spends nearly all of a chunk's time waiting
# for the vendor's answer (50-500 ms), and a few milliseconds of CPU on the
# database work. Threads are cheap slots; 64 keep an account's 100 calls a
# second going at up to 500 ms per call (docs/operator.md: "Sizing a worker").
DEFAULT_THREADS = 64
# ... spread over one bulk process per core, up to this many. 64 threads in one
# process spend a third of their CPU switching between each other when the vendor
# answers at once (measured at zero latency on 2 cores: 2 processes of 32 threads
# drained 0.23-0.27 of a plain httpx loop, 1 of 64 0.14-0.17).
DEFAULT_PROCESSES = 4


def worker_pool(args, conf) -> tuple[str, int]:
    """``(pool, concurrency)`` for `smsq worker`: the concurrency is per process."""
    pool = args.pool or "threads"
    if pool == "prefork" and conf.embedded:
        # Embedded mode's rate limiter lives in the worker process: child
        # processes would each have their own and send at a multiple of the rate.
        raise ConfigError(
            "--pool prefork needs the distributed mode (a Redis rate limiter): the embedded worker runs threads"
        )
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, not {args.concurrency}")
    if args.processes is not None:
        if args.processes < 1:
            raise ConfigError(f"--processes must be at least 1, not {args.processes}")
        if args.queues or conf.embedded:
            raise ConfigError(
                "--processes starts bulk processes beside the priority lane's: it needs the "
                "distributed mode and no --queues"
            )
    if args.concurrency:
        return pool, args.concurrency
    if pool != "threads":
        return pool, os.cpu_count() or 2
    return pool, -(-DEFAULT_THREADS // bulk_processes(args, conf))


def bulk_processes(args, conf) -> int:
    """How many bulk processes `smsq worker` runs here: as asked, or by default (distributed,
    no --queues, no --concurrency, threads) one per core up to DEFAULT_PROCESSES."""
    if args.processes or args.queues or conf.embedded or args.concurrency or (args.pool or "threads") != "threads":
        return args.processes or 1
    return max(1, min(os.cpu_count() or 1, DEFAULT_PROCESSES))


def checked_queues(given: str | None) -> str | None:
    """``--queues`` as given, each name one of smsq's queues: a typo would start a worker
    that consumes nothing, and says nothing about it."""
    if given is None:
        return None
    names = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if unknown or not names:
        what = f"unknown queue {', '.join(map(repr, unknown))}" if unknown else "no queue named"
        raise ConfigError(f"--queues {given!r}: {what}; smsq's queues are {', '.join(QUEUES)}")
    return ",".join(dict.fromkeys(names))


def _queues_and_lanes(args, conf, pool: str, concurrency: int) -> tuple[str, lanes.Supervisor | None]:
    """The queues this process takes, and the supervisor of the lane processes
    started beside it (None when this one process takes every queue asked for)."""
    if args.queues:
        return args.queues, None  # exactly what was asked for, in this one process
    if conf.embedded:
        return ",".join(QUEUES), None  # one process: the embedded rate limiter lives in it
    # The priority lane (and any more bulk processes) in processes of their own: worker/lanes.py
    supervisor = lanes.Supervisor(
        lanes.plan(args, pool, concurrency, bulk_processes(args, conf)), args.loglevel, args.events
    )
    print(
        f"smsq worker: this process takes {lanes.BULK_QUEUES}; also starting {lanes.describe(supervisor.lanes)}",
        file=sys.stderr,
    )
    return lanes.BULK_QUEUES, supervisor


def _celery_worker_argv(args, queues: str, pool: str, concurrency: int) -> list[str]:
    # Without mingle: at start a worker asks the others for revoked task ids and
    # waits a second for answers, and smsq revokes nothing (a cancel is a database
    # state). Without gossip: every worker would consume every other's events, a
    # traffic that grows with the square of the processes (lanes, hosts), and
    # nothing here reads it (health checks ping; Flower reads task events).
    argv = [
        "worker",
        "-Q",
        queues,
        "-l",
        args.loglevel,
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
    ]
    if args.events:
        argv.append("-E")
    # A name of smsq's own, not Celery's default celery@host: that is the application's
    # own worker's (its hooks), and two nodes of one name answer each other's pings.
    argv += ["-n", args.hostname or lanes.DEFAULT_NODE]
    return argv


def cmd_worker(args) -> int:
    args.queues = checked_queues(args.queues)
    conf = load()
    conf.require_credentials()  # every account's chunks may come here
    pool, concurrency = worker_pool(args, conf)
    writable(
        conf.spool_dir,
        "the spool directory",
        "SMSQ_SPOOL_DIR" if os.environ.get("SMSQ_SPOOL_DIR") else "SMSQ_STATE_DIR",
    )
    # A thread pool's slots share this process's database pool; a prefork
    # child has one slot.
    size_pool_for(concurrency if pool == "threads" else 1)
    ping_only_idle()  # the send path rides out a connection broken since its last use
    slots.configure(concurrency if pool == "threads" else None)
    print(
        f"smsq worker: {conf.describe_storage()}; accounts from {conf.config_path}; "
        f"{concurrency} {'threads' if pool == 'threads' else 'processes'}",
        file=sys.stderr,
    )
    wait_for_database(conf, "smsq worker")
    queues, supervisor = _queues_and_lanes(args, conf, pool, concurrency)
    argv = _celery_worker_argv(args, queues, pool, concurrency)
    app = get_app()
    # A worker outlives any broker outage: Celery logs each reconnection attempt
    # ("consumer: Cannot connect to ...: Trying again in N seconds") and never gives up.
    app.conf.broker_connection_max_retries = None
    if supervisor is None:
        app.worker_main(argv)
        return 0

    worker_shutting_down.connect(lambda **_: supervisor.shutting_down(), weak=False)
    supervisor.start()
    lanes.yield_cpu_to_lanes()
    try:
        app.worker_main(argv)
    finally:
        supervisor.stop()
    return 0


def cmd_beat(args) -> int:
    conf = load()
    conf.require_credentials()  # it schedules polls of every account: a missing password is said now, not by each poll
    scheduler = args.scheduler or ("local" if conf.embedded or not conf.redis_url else "redbeat")
    argv = ["beat", "-l", args.loglevel]
    if scheduler == "local":
        schedule_file = (
            Path(args.schedule_file).resolve() if args.schedule_file else conf.state_dir / "celerybeat-schedule"
        )
        writable(
            schedule_file.parent,
            "the directory of beat's schedule file",
            "--schedule-file" if args.schedule_file else "SMSQ_STATE_DIR",
        )
        argv += ["-s", str(schedule_file)]
    else:
        # The schedule and a lock live in Redis: a second beat waits for the lock.
        argv += ["-S", "smsq.scheduler.locked:LockedScheduler"]
    print(f"smsq beat: {conf.describe_storage()}; accounts from {conf.config_path}", file=sys.stderr)
    wait_for_database(conf, "smsq beat")
    get_app().start(argv)
    return 0


# kombu's SQLAlchemy transport (the embedded broker) has no fanout exchange:
# the workers' task events and Flower's broadcasts to workers never arrive.
EMBEDDED_FLOWER_NOTE = """\
smsq flower: embedded mode (SQLite broker). Flower can show no workers and no tasks here:
  the SQLite broker has no broadcast (fanout), so worker events and Flower's questions to
  workers never arrive. Use `smsq status BATCH_ID [--chunks]` for a batch, `smsq accounts`
  for accounts and polls, and `smsq metrics` for queues, vendor calls and chunk states.
  With a Redis or RabbitMQ broker (SMSQ_BROKER_URL) Flower shows every task and worker."""


def cmd_flower(args) -> int:
    conf = load(need_accounts=False)
    if conf.embedded:
        print(EMBEDDED_FLOWER_NOTE, file=sys.stderr, flush=True)
    auth = env_secret("SMSQ_FLOWER_AUTH")
    address = args.address
    if auth:
        if ":" not in auth:
            raise ConfigError("SMSQ_FLOWER_AUTH must be user:password")
        # Through Flower's own environment variable, so the password is not on
        # the command line for `ps` to show.
        os.environ["FLOWER_BASIC_AUTH"] = auth
    elif address not in LOOPBACK:
        # An address given on purpose is never silently narrowed, nor opened without a password.
        raise ConfigError(
            f"refusing to serve Flower on {address} without a password: set "
            f"SMSQ_FLOWER_AUTH (user:password) or SMSQ_FLOWER_AUTH_FILE, or leave --address "
            f"at 127.0.0.1"
        )
    else:
        print(f"SMSQ_FLOWER_AUTH is not set: Flower listens on {address} only", file=sys.stderr)
    get_app().start(["flower", f"--address={address}", f"--port={args.port}"])
    return 0


SIM_EXTRA_MISSING = "the simulators are not installed: pip install 'smsq[sim]'"


def require_simulators() -> None:
    """The simulators' web server is the optional extra smsq[sim]: without it `smsq simulate`
    and `smsq demo` stop with one line (exit 2), before anything starts or is written."""
    try:
        import starlette  # noqa: F401  (here: is the optional extra smsq[sim] installed?)
        import uvicorn  # noqa: F401  (as above)
    except ImportError:
        raise ConfigError(SIM_EXTRA_MISSING) from None


def cmd_simulate(args) -> int:
    require_simulators()
    from smsq.simulator.catalog import build  # here: the simulators are the optional extra smsq[sim]
    from smsq.simulator.server import serve_forever  # (as above)

    sims = build(args.only.split(",") if args.only else None)
    serve_forever({name: (app, port) for name, (_, app, port) in sims.items()}, host=args.host)
    return 0


def cmd_db(args) -> int:
    conf = load(need_accounts=False)
    upgrade(conf.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0

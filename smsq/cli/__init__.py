"""The ``smsq`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from smsq.providers import ProviderError
from smsq.tasks.schema import SchemaError
from smsq.worker import logs
from smsq.worker.config import ConfigError, UnknownAccountError
from smsq.worker.services import DatabaseUnreachableError, first_line, unreachable_service

from .commands.common import parse_at

EPILOG = """\
environment:
  SMSQ_CONFIG         accounts file (default ./smsq.toml)
  SMSQ_HOME           where embedded mode keeps smsq.db and smsq-broker.db (default: the
                      directory of SMSQ_CONFIG, whatever directory a command runs in)
  SMSQ_STATE_DIR      where processes write what they keep: a worker's spool, beat's local
                      schedule; checked at start (default: $STATE_DIRECTORY under systemd,
                      else SMSQ_HOME)
  SMSQ_DATABASE_URL   default: SQLite in SMSQ_HOME; e.g. postgresql://user@host/db
  SMSQ_BROKER_URL     default: embedded SQLite broker; e.g. redis://127.0.0.1:6379/0
  SMSQ_FLOWER_AUTH    user:password for `smsq flower`
  NAME_FILE           for SMSQ_DATABASE_URL, SMSQ_BROKER_URL, SMSQ_REDIS_URL, SMSQ_FLOWER_AUTH:
                      read the value from this file (a Docker secret) instead

exit status:
  0  done (`send --dry-run`: the send would be taken)
  1  `send --wait` ended with numbers failed, unknown or expired (or a vendor check said no)
  2  bad input or configuration, or not one number can be sent (the reason on stderr)
  3  a service (database, broker) cannot be reached (or `check` could not ask the vendor now)

Times are printed in Beijing time (UTC+8), the vendors' clock, and so are read.
"""


def command(where: str) -> Callable[[argparse.Namespace], int]:
    """The command ``"module:function"`` of smsq/cli/commands/, imported when it runs: each
    command loads only what it needs (Celery's worker, redbeat, the exporter), none of them for
    ``--help`` or a mistyped option."""
    module, name = where.split(":")

    def run(args: argparse.Namespace) -> int:
        # Every command module at once is ~150 modules more (Celery's worker, redbeat,
        # prometheus_client), ~0.6 s per `smsq` call by -X importtime.
        commands = importlib.import_module(f"smsq.cli.commands.{module}")  # start-up: this command's alone
        return getattr(commands, name)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsq",
        description="Queue-backed SMS dispatcher: send through Chinese SMS vendors with "
        "Celery workers; poll their inbound messages and reports with beat.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "send",
        help="queue one content for many numbers, or a text per number from a template and rows",
        description="Validate and queue a batch; prints the batch id. One text (--content) to the "
        "numbers of --to or --to-file, or a text per number: --template filled from each row of "
        "--rows (README, Personal texts).",
    )
    s.add_argument("--account", required=True, help="account name from the config ([accounts.NAME])")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--to", type=lambda v: [n for n in v.split(",") if n.strip()], help="numbers, comma-separated")
    who.add_argument(
        "--to-file", metavar="FILE", help="a file of numbers, one per line (or comma-separated); - for stdin"
    )
    who.add_argument(
        "--rows",
        metavar="FILE",
        help="a .csv (UTF-8 with or without BOM, or GBK), .tsv or .xlsx with a header row: a mobile "
        "column (or 手机号, 手机号码, 手机, 电话, phone) and one column per variable of --template; "
        "each number gets its own text. A bad row is rejected with its row number, the good ones go",
    )
    s.add_argument("--content", help="the text, signature 【…】 included or taken from the account")
    s.add_argument(
        "--template",
        metavar="TEXT",
        help="with --rows: the text with {variables}, e.g. '【某某商城】{name}您好，您的订单{order}已发货'",
    )
    s.add_argument(
        "--rejects",
        metavar="FILE",
        help="write every rejected number (or row) to FILE as CSV (mobile,reason); the output lists the first 20",
    )
    s.add_argument(
        "--at",
        type=parse_at,
        metavar="'YYYY-MM-DD HH:MM:SS'",
        help="send later; Beijing time (more than 5 minutes past is refused). smsq holds the "
        "batch until then, at every vendor: `smsq status` says scheduled, `smsq cancel` stops it",
    )
    s.add_argument("--idempotency-key", help="the same key twice sends once")
    s.add_argument("--priority", action="store_true", help="force the priority lane")
    s.add_argument(
        "--kind",
        default="notice",
        metavar="KIND",
        help="the message kind, whose rules the send is held to ([kinds.KIND] of the config; "
        "README, Message kinds): otp (a code: always the priority lane), notice (the default) "
        "or marketing (waits, stored, for its send window: 08:00-21:00 Beijing time by default); "
        "another is refused, exit 2",
    )
    s.add_argument(
        "--valid-for",
        metavar="DURATION",
        help="how long the send is worth making, e.g. 90s, 5m, 2h, 1d (0: no limit), from now or "
        "from --at; numbers not sent by then are never sent (expired). Default: the kind's "
        "valid_for (otp: 5m; none for the others). A bad value is refused, exit 2",
    )
    s.add_argument(
        "--wait",
        action="store_true",
        help="show progress until every chunk has an outcome, and why it waits when "
        "nothing moves; exit 1 if any number failed, is unknown or expired",
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="store and send nothing: show the numbers that would be accepted, the rejected "
        "ones by reason, characters and segments, the billable messages and the account's last "
        "known balance against them. Exit 0 when the send would be taken, 2 when not one "
        "number could be sent (as the send itself)",
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=command("batches:cmd_send"))

    s = sub.add_parser(
        "status",
        help="a batch's counts by state, or every send to one number",
        description="With BATCH_ID: counts of the batch's recipients and chunks by state. "
        "With --number: every send to that number across batches, newest first, with the "
        "vendor's status code and message.",
    )
    s.add_argument("batch_id", type=int, nargs="?")
    s.add_argument("--number", metavar="N", help="a mobile number, written any way (+86, spaces, dashes)")
    s.add_argument("--limit", type=int, help="with --number: at most this many sends")
    s.add_argument("--chunks", action="store_true", help="also list the unknown and failed chunks, with why")
    s.add_argument("--json", action="store_true", help="machine-readable (--number: one object per line)")
    s.set_defaults(func=command("operators:cmd_status"))

    s = sub.add_parser(
        "settle",
        help="decide unknown or failed chunks: accepted, failed or resend",
        description="smsq never resends a chunk whose outcome is unknown (the vendor may have "
        "sent it). Once you know, say so: accepted (the vendor took it; unknown chunks only), "
        "failed (it did not, leave it), resend (it did not, send it again). One chunk by its "
        "id, or every chunk of a batch in one state with --batch and --state.",
    )
    s.add_argument("chunk_id", type=int, nargs="?", help="one chunk (see smsq status BATCH_ID --chunks)")
    s.add_argument("action", choices=["accepted", "failed", "resend"])
    s.add_argument("--batch", type=int, metavar="B", help="every chunk of batch B in --state")
    s.add_argument(
        "--state",
        choices=["unknown", "failed"],
        default="unknown",
        help="with --batch: the chunks to settle (default unknown)",
    )
    s.add_argument("--note", help="why, kept on the chunks")
    s.add_argument("--json", action="store_true", help="with --batch: machine-readable output")
    s.set_defaults(func=command("operators:cmd_settle"))

    s = sub.add_parser(
        "export",
        help="a batch's numbers as CSV on stdout",
        description="Columns: mobile, state, code, detail, vendor_id, updated_at (ISO 8601, "
        "Beijing time). Streams: a million-number batch is fine. "
        "Example: smsq export 6 --state failed,unknown > retry.csv",
    )
    s.add_argument("batch_id", type=int)
    s.add_argument(
        "--state",
        metavar="S1,S2",
        help="only these recipient states (queued, sent, delivered, failed, unknown, rejected, cancelled, expired)",
    )
    s.set_defaults(func=command("operators:cmd_export"))

    s = sub.add_parser(
        "batches",
        help="recent batches with counts by state",
        description="Newest first: id, account, creation time (Beijing time), numbers, "
        "whether every chunk has an outcome, and recipients by state.",
    )
    s.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    s.add_argument("--account", help="only this account's")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=command("operators:cmd_batches"))

    s = sub.add_parser(
        "cancel",
        help="stop a batch: its pending chunks are never sent",
        description="Chunks still waiting (queued, retrying, scheduled: smsq holds a scheduled "
        "chunk until its time, at every vendor) become cancelled and are never sent. "
        "Chunks the vendor is being called for cannot be called back: they are reported, "
        "and a retry of one is cancelled too. Chunks already sent are reported.",
    )
    s.add_argument("batch_id", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=command("operators:cmd_cancel"))

    s = sub.add_parser(
        "purge",
        help="delete old batches, journal rows and reports",
        description="Deletes, older than AGE: batches whose every chunk has an outcome (with "
        "their chunks and recipients), poll journal rows that were parsed, delivery reports; "
        "with --inbound also inbound messages. Never a batch still in flight, never a journal "
        "row that was not parsed, never blocked numbers. Works in steps of 10,000 rows, each "
        "its own transaction; an interrupted purge finishes when run again.",
    )
    s.add_argument("--older-than", required=True, metavar="AGE", help="90d (days) or 36h (hours)")
    s.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    s.add_argument("--inbound", action="store_true", help="also delete old inbound messages")
    s.add_argument("--force", action="store_true", help="allow an AGE under one day")
    s.set_defaults(func=command("operators:cmd_purge"))

    s = sub.add_parser(
        "blocked",
        help="list, add or remove an account's blocked numbers",
        description="Sends skip blocked numbers, with the reason. Numbers get here from the "
        "vendor's blacklist, from replies that opt out (TD, 退订, ...: the account's "
        "optout_keywords), and from --add.",
    )
    s.add_argument("--account", help="the account (required with --add / --remove)")
    change = s.add_mutually_exclusive_group()
    change.add_argument("--add", metavar="N", help="block a number")
    change.add_argument("--remove", metavar="N", help="unblock a number")
    s.add_argument("--reason", help="with --add: why (default: blocked by an operator)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=command("operators:cmd_blocked"))

    s = sub.add_parser(
        "poll",
        help="poll an account's vendor now (respects the 30 s window)",
        description="Fetch inbound messages, status reports, blocked numbers or the balance "
        "of one account now. The vendor's window is respected: inside it nothing is called.",
    )
    s.add_argument("account", nargs="?")
    s.add_argument("kind", nargs="?", choices=["inbound", "reports", "blocked", "balance"])
    s.add_argument(
        "--reparse",
        action="store_true",
        help="parse again journal rows that failed to parse (or were never parsed); with ACCOUNT, only that account's",
    )
    s.set_defaults(func=command("accounts:cmd_poll"))

    s = sub.add_parser("inbound", help="list stored inbound messages")
    s.add_argument("--account")
    s.add_argument(
        "--since", type=parse_at, metavar="'YYYY-MM-DD HH:MM:SS'", help="received at or after (Beijing time)"
    )
    s.add_argument("--limit", type=int, default=1000)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=command("accounts:cmd_inbound"))

    s = sub.add_parser("accounts", help="accounts with balance, last poll per kind, health")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=command("accounts:cmd_accounts"))

    s = sub.add_parser(
        "check",
        help="check an account's credentials with its vendor",
        description="Asks the vendor with the credentials this shell reads (password_env, "
        "password_file) and prints the answer; stores nothing, so a wrong password here "
        "changes no account state, circuit or metric. orgws: UserLogin. Vendors without a "
        "login call: a balance call, which the vendor allows once per 30 s window shared "
        "with beat's polls (on linkws with Get and NotSend too).",
        epilog="exit status: 0 credentials accepted; 1 the vendor refused them (auth, ...); "
        "2 bad input (unknown account, a vendor with no check); 3 not checked: the window is "
        "closed (without --wait, or past --timeout), the vendor gave no verdict (busy, "
        "unreachable), or the database cannot be reached.",
    )
    s.add_argument("account")
    s.add_argument(
        "--wait",
        action="store_true",
        help="when the window is closed, book the next one (beat's polls let it go first), wait "
        "for it showing the seconds left, then check",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --wait: give up after this long, exit 3 (default 120)",
    )
    s.set_defaults(func=command("accounts:cmd_check"))

    s = sub.add_parser(
        "password",
        help="change an account's password at the vendor (orgws UpdatePsw)",
        description="Prompts for the new password (or reads one line from stdin with --stdin). "
        "The config is not changed: update the secret it points to afterwards.",
    )
    s.add_argument("account")
    s.add_argument("--stdin", action="store_true", help="read the new password from stdin")
    s.set_defaults(func=command("accounts:cmd_password"))

    s = sub.add_parser("keywords", help="ask the vendor which forbidden words a text holds (qxs checkkeyword)")
    s.add_argument("account")
    s.add_argument("--content", required=True)
    s.set_defaults(func=command("accounts:cmd_keywords"))

    s = sub.add_parser(
        "worker",
        help="run a Celery worker (sends and polls)",
        description="Run a Celery worker: sends and polls. Vendor answers the database cannot "
        "take during an outage wait in its spool (SMSQ_SPOOL_DIR, default spool/ in "
        "SMSQ_STATE_DIR) until it is back; a worker that cannot write there refuses to start "
        "(exit 2).",
    )
    s.add_argument(
        "--queues",
        help="comma-separated, all in this one process, of smsq.priority, smsq.bulk, "
        "smsq.poll (another name is refused, exit 2). Default: smsq.bulk,smsq.poll here and "
        "smsq.priority in a second process (embedded mode: all three in one)",
    )
    s.add_argument(
        "--pool",
        choices=["threads", "prefork"],
        help="threads (default): slots are threads of one process, cheap enough to keep many "
        "vendor calls in flight; prefork: a process per slot (distributed mode only)",
    )
    s.add_argument(
        "--concurrency",
        type=int,
        help="slots: vendor calls in flight at once (default 64 threads; prefork: one per CPU)",
    )
    s.add_argument(
        "--processes",
        type=int,
        help="bulk worker processes on this host (default 1; distributed mode). Without "
        "--queues, `smsq worker` also starts a process of its own for the priority lane",
    )
    s.add_argument(
        "--hostname",
        help="worker node name, e.g. bulk1@%%h (default smsq@%%h, never Celery's "
        "celery@%%h: that is left to the application's own worker)",
    )
    s.add_argument(
        "--events",
        action="store_true",
        help="send task events from the start (for monitors other than Flower; a running "
        "Flower turns them on by itself). They cost about a fifth of a busy worker's CPU",
    )
    s.add_argument("--loglevel", default="info")
    s.set_defaults(func=command("processes:cmd_worker"))

    s = sub.add_parser("beat", help="run the scheduler (relay, polls); run exactly one")
    s.add_argument(
        "--scheduler",
        choices=["redbeat", "local"],
        help="redbeat (schedule and lock in Redis; default with a Redis broker) or local "
        "(a schedule file; default embedded)",
    )
    s.add_argument(
        "--schedule-file", help="the local scheduler's file (default: celerybeat-schedule in SMSQ_STATE_DIR)"
    )
    s.add_argument("--loglevel", default="info")
    s.set_defaults(func=command("processes:cmd_beat"))

    s = sub.add_parser(
        "flower",
        help="run Flower on the smsq app (auth from SMSQ_FLOWER_AUTH)",
        description="Flower listens on 127.0.0.1 unless --address says otherwise; any other "
        "address needs SMSQ_FLOWER_AUTH (or SMSQ_FLOWER_AUTH_FILE), user:password.",
    )
    s.add_argument("--port", type=int, default=5555)
    s.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.set_defaults(func=command("processes:cmd_flower"))

    s = sub.add_parser(
        "health",
        help="is a worker, beat or an HTTP endpoint alive? (for healthchecks)",
        description="Exit 0 when healthy, 3 when not (the reason on stderr). worker: the "
        "worker answers a ping over the broker; beat: it sent the outbox relay recently "
        "(its record in Redis); url: every URL answers 2xx.",
    )
    checks = s.add_subparsers(dest="what", required=True, metavar="CHECK")
    c = checks.add_parser("worker", help="the worker node answers a ping")
    c.add_argument(
        "--node",
        help="its node name (default smsq@%%h, the name `smsq worker` takes without --hostname; %%h is this host)",
    )
    c = checks.add_parser("beat", help="beat sent the outbox relay recently")
    c.add_argument(
        "--max-age", type=float, help="seconds since the relay was last sent (default 3 relay intervals, at least 60)"
    )
    c = checks.add_parser("url", help="every URL answers 2xx (Flower's /healthcheck, metrics, simulators)")
    c.add_argument("urls", nargs="+", metavar="URL")
    for c in checks.choices.values():
        c.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    s.set_defaults(func=command("health:cmd_health"))

    s = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics (/metrics) read from the database and broker",
        description="Serve /metrics in the Prometheus text format: recipients and chunks by "
        "state, vendor calls by outcome and their duration, queue lengths, balances, poll ages, "
        "account health. Counted from the database and the broker, so one exporter is right for "
        "every worker on every host. See docs/operator.md, Metrics.",
    )
    s.add_argument("--port", type=int, default=9464, help="TCP port (default 9464)")
    s.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)"
    )
    s.set_defaults(func=command("metrics:cmd_metrics"))

    s = sub.add_parser(
        "simulate",
        help="run the vendor simulators on their fixed ports",
        description="linkws 8800, dxt 8801, jinxin 8802, orgws 8803, qxs 8804; account demo / demo-secret",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--only", help="comma-separated simulator names")
    s.set_defaults(func=command("processes:cmd_simulate"))

    s = sub.add_parser("demo", help="simulators + worker + beat + a sample send, embedded")
    s.add_argument("--dir", default="demo-run", help="where the demo keeps its database and config")
    s.add_argument("--count", type=int, default=250, help="numbers in the sample batch")
    s.add_argument("--keep-running", action="store_true", help="leave everything running until Ctrl-C")
    s.add_argument(
        "--any-port",
        action="store_true",
        help="run the simulators on free ports instead of 8800-8804 (beside `smsq simulate`)",
    )
    s.set_defaults(func=command("demo:cmd_demo"))

    s = sub.add_parser("db", help="database schema")
    dbs = s.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    u = dbs.add_parser("upgrade", help="apply Alembic migrations")
    u.add_argument("revision", nargs="?", default="head")
    u.set_defaults(func=command("processes:cmd_db"))
    return p


EXIT_OK, EXIT_OUTCOME, EXIT_INPUT, EXIT_SERVICE = 0, 1, 2, 3
LONG_RUNNING = ("worker", "beat", "flower", "simulate", "demo", "metrics", "poll", "db")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 1 a --wait (or a vendor check) ended with numbers failed, unknown or expired;
    2 bad input or configuration; 3 a service (database, broker) unreachable. Expected failures
    print one line, never a traceback."""
    args = build_parser().parse_args(argv)
    # The long-running processes log their work; a one-shot command prints its answer and
    # keeps stderr for warnings and errors.
    logs.setup("INFO" if args.command in LONG_RUNNING else "WARNING")
    try:
        code = args.func(args) or EXIT_OK
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # `smsq accounts | head -5`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ProviderError as exc:
        print(f"smsq: vendor error: {exc.outcome.value} {exc.code or ''} {exc}", file=sys.stderr)
        return EXIT_OUTCOME
    except (ConfigError, UnknownAccountError, SchemaError, ValueError, LookupError) as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except DatabaseUnreachableError as exc:  # says which database already
        print(f"smsq: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except Exception as exc:
        service = unreachable_service(exc)
        if service is None:
            raise
        print(f"smsq: cannot reach {service}: {first_line(exc)}", file=sys.stderr)
        return EXIT_SERVICE


if __name__ == "__main__":
    sys.exit(main())

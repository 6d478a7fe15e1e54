"""The ``smsq`` command line."""
from __future__ import annotations

import argparse
import sys

from .commands.accounts import cmd_accounts, cmd_check, cmd_inbound, cmd_keywords, cmd_password, cmd_poll
from .commands.batches import cmd_send, cmd_settle, cmd_status, parse_at
from .commands.metrics import cmd_metrics
from .commands.processes import cmd_beat, cmd_db, cmd_demo, cmd_flower, cmd_simulate, cmd_worker
from .config import ConfigError

EPILOG = """\
environment:
  SMSQ_CONFIG         accounts file (default ./smsq.toml)
  SMSQ_DATABASE_URL   default sqlite:///smsq.db; e.g. postgresql://user@host/db
  SMSQ_BROKER_URL     default: embedded SQLite broker; e.g. redis://127.0.0.1:6379/0
  SMSQ_FLOWER_AUTH    user:password for `smsq flower`
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsq", description="Queue-backed SMS dispatcher: send through Chinese SMS vendors with "
        "Celery workers; poll their inbound messages and reports with beat.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("send", help="queue one content for many numbers",
                       description="Validate and queue a batch; prints the batch id.")
    s.add_argument("--account", required=True, help="account name from the config ([accounts.NAME])")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--to", type=lambda v: [n for n in v.split(",") if n.strip()],
                     help="numbers, comma-separated")
    who.add_argument("--to-file", metavar="FILE", help="a file of numbers, one per line (or comma-separated); - for stdin")
    s.add_argument("--content", required=True, help="the text, signature 【…】 included or taken from the account")
    s.add_argument("--at", type=parse_at, metavar="'YYYY-MM-DD HH:MM:SS'",
                   help="send later; Beijing time")
    s.add_argument("--idempotency-key", help="the same key twice sends once")
    s.add_argument("--priority", action="store_true", help="force the priority lane")
    s.add_argument("--wait", action="store_true", help="show progress until every chunk has an outcome")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_send)

    s = sub.add_parser("status", help="counts of a batch's recipients and chunks by state")
    s.add_argument("batch_id", type=int)
    s.add_argument("--chunks", action="store_true", help="also list the unknown and failed chunks, with why")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("settle", help="decide an unknown or failed chunk: accepted, failed or resend",
                       description="smsq never resends a chunk whose outcome is unknown (the vendor may have "
                       "sent it). Once you know, say so: accepted (the vendor took it), failed (it did not, "
                       "leave it), resend (it did not, send it again).")
    s.add_argument("chunk_id", type=int)
    s.add_argument("action", choices=["accepted", "failed", "resend"])
    s.add_argument("--note", help="why, kept on the chunk")
    s.set_defaults(func=cmd_settle)

    s = sub.add_parser("poll", help="poll an account's vendor now (respects the 30 s window)",
                       description="Fetch inbound messages, status reports, blocked numbers or the balance "
                       "of one account now. The vendor's window is respected: inside it nothing is called.")
    s.add_argument("account", nargs="?")
    s.add_argument("kind", nargs="?", choices=["inbound", "reports", "blocked", "balance"])
    s.add_argument("--reparse", action="store_true",
                   help="parse again journal rows that failed to parse (or were never parsed); "
                   "with ACCOUNT, only that account's")
    s.set_defaults(func=cmd_poll)

    s = sub.add_parser("inbound", help="list stored inbound messages")
    s.add_argument("--account")
    s.add_argument("--since", type=parse_at, metavar="'YYYY-MM-DD HH:MM:SS'", help="stored at or after (UTC)")
    s.add_argument("--limit", type=int, default=1000)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=cmd_inbound)

    s = sub.add_parser("accounts", help="accounts with balance, last poll per kind, health")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_accounts)

    s = sub.add_parser("check", help="check an account's credentials with its vendor",
                       description="orgws: UserLogin. Vendors without a login check: a balance poll "
                       "(respecting the 30 s window).")
    s.add_argument("account")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("password", help="change an account's password at the vendor (orgws UpdatePsw)",
                       description="Prompts for the new password (or reads one line from stdin with --stdin). "
                       "The config is not changed: update the secret it points to afterwards.")
    s.add_argument("account")
    s.add_argument("--stdin", action="store_true", help="read the new password from stdin")
    s.set_defaults(func=cmd_password)

    s = sub.add_parser("keywords", help="ask the vendor which forbidden words a text holds (qxs checkkeyword)")
    s.add_argument("account")
    s.add_argument("--content", required=True)
    s.set_defaults(func=cmd_keywords)

    s = sub.add_parser("worker", help="run a Celery worker (sends and polls)")
    s.add_argument("--queues", help="comma-separated (default smsq.priority,smsq.bulk,smsq.poll)")
    s.add_argument("--concurrency", type=int, help="processes (threads in embedded mode, default 4)")
    s.add_argument("--hostname", help="worker node name, e.g. bulk1@%%h")
    s.add_argument("--loglevel", default="info")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("beat", help="run the scheduler (relay, polls); run exactly one")
    s.add_argument("--scheduler", choices=["redbeat", "local"],
                   help="redbeat (schedule and lock in Redis; default with a Redis broker) or local "
                   "(a schedule file; default embedded)")
    s.add_argument("--schedule-file", help="the local scheduler's file (default beside the SQLite database)")
    s.add_argument("--loglevel", default="info")
    s.set_defaults(func=cmd_beat)

    s = sub.add_parser("flower", help="run Flower on the smsq app (auth from SMSQ_FLOWER_AUTH)")
    s.add_argument("--port", type=int, default=5555)
    s.add_argument("--address", default="0.0.0.0")
    s.set_defaults(func=cmd_flower)

    s = sub.add_parser("metrics", help="serve Prometheus metrics (/metrics) read from the database and broker",
                       description="Serve /metrics in the Prometheus text format: recipients and chunks by "
                       "state, vendor calls by outcome and their duration, queue lengths, balances, poll ages, "
                       "account health. Counted from the database and the broker, so one exporter is right for "
                       "every worker on every host. See the README's Metrics section.")
    s.add_argument("--port", type=int, default=9464, help="TCP port (default 9464)")
    s.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("simulate", help="run the vendor simulators on their fixed ports",
                       description="linkws 8800, dxt 8801, jinxin 8802, orgws 8803, qxs 8804; "
                       "account demo / demo-secret")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--only", help="comma-separated simulator names")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("demo", help="simulators + worker + beat + a sample send, embedded")
    s.add_argument("--dir", default="demo-run", help="where the demo keeps its database and config")
    s.add_argument("--count", type=int, default=250, help="numbers in the sample batch")
    s.add_argument("--keep-running", action="store_true", help="leave everything running until Ctrl-C")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("db", help="database schema")
    dbs = s.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    u = dbs.add_parser("upgrade", help="apply Alembic migrations")
    u.add_argument("revision", nargs="?", default="head")
    u.set_defaults(func=cmd_db)
    return p


def main(argv: list[str] | None = None) -> int:
    from smsq.providers import ProviderError
    from smsq.tasks.schema import SchemaError

    from . import logs
    from .config import UnknownAccountError

    args = build_parser().parse_args(argv)
    logs.setup("WARNING" if args.command in ("send", "status") else "INFO")
    try:
        return args.func(args) or 0
    except ProviderError as exc:
        print(f"smsq: vendor error: {exc.outcome.value} {exc.code or ''} {exc}", file=sys.stderr)
        return 1
    except (ConfigError, UnknownAccountError, SchemaError, ValueError, LookupError) as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

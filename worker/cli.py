"""The ``smsq`` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from .config import ConfigError

EPILOG = """\
environment:
  SMSQ_CONFIG         accounts file (default ./smsq.toml)
  SMSQ_DATABASE_URL   default sqlite:///smsq.db; e.g. postgresql://user@host/db
  SMSQ_BROKER_URL     default: embedded SQLite broker; e.g. redis://127.0.0.1:6379/0
  SMSQ_FLOWER_AUTH    user:password for `smsq flower`
"""


def _load():
    from . import logs
    from .config import settings

    conf = settings()
    logs.mask_secrets(conf.secrets())
    return conf


# -- send / status ----------------------------------------------------------
def _read_numbers(path: str):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8-sig")
    with stream:
        for line in stream:
            for item in line.replace(";", ",").split(","):
                if item.strip():
                    yield item.strip()


def _parse_at(value: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"--at wants \"YYYY-MM-DD HH:MM:SS\" (Beijing time), not {value!r}")


def _bar(status, width: int = 30) -> str:
    total = sum(status.chunks.values()) or 1
    final = sum(n for s, n in status.chunks.items() if s in ("accepted", "failed", "unknown"))
    filled = int(width * final / total)
    r = status.recipients
    return (f"[{'#' * filled}{'.' * (width - filled)}] {final}/{total} chunks final  "
            f"sent {r.get('sent', 0) + r.get('delivered', 0)}  failed {r.get('failed', 0)}  "
            f"unknown {r.get('unknown', 0)}  waiting {r.get('queued', 0)}")


def wait_for(batch_id: int, *, show: bool = True, timeout: float | None = None, interval: float = 0.5):
    from tasks import batch_status

    start = time.monotonic()
    tty = sys.stderr.isatty()
    last = None
    while True:
        status = batch_status(batch_id)
        line = _bar(status)
        if show and line != last:
            # A terminal gets one redrawn line; a log file gets a line per change.
            print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        if status.final or (timeout is not None and time.monotonic() - start > timeout):
            if show and tty:
                print(file=sys.stderr)
            return status
        time.sleep(interval)


def _print_status(status, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.as_dict(), ensure_ascii=False))
        return
    print(f"batch {status.batch_id}  account {status.account}  accepted {status.accepted}  "
          f"rejected {status.rejected}  {'final' if status.final else 'in progress'}")
    print("  recipients: " + ", ".join(f"{k} {v}" for k, v in sorted(status.recipients.items())))
    print("  chunks:     " + ", ".join(f"{k} {v}" for k, v in sorted(status.chunks.items())))


def cmd_send(args) -> int:
    from tasks import send_sms

    _load()
    numbers = args.to if args.to else _read_numbers(args.to_file)
    receipt = send_sms(args.account, numbers, args.content, send_at=args.at,
                       idempotency_key=args.idempotency_key,
                       priority=True if args.priority else None)
    if args.json and not args.wait:
        print(json.dumps({"batch_id": receipt.batch_id, "accepted": receipt.accepted,
                          "rejected": receipt.rejected, "segments": receipt.segments,
                          "lane": receipt.lane, "replayed": receipt.replayed}, ensure_ascii=False))
    elif not args.json:
        print(receipt.batch_id)
        print(f"accepted {receipt.accepted}, rejected {len(receipt.rejected)}, {receipt.segments} "
              f"segment(s) each, lane {receipt.lane}" + (" (replayed: same idempotency key)"
                                                          if receipt.replayed else ""), file=sys.stderr)
        for number, reason in receipt.rejected[:20]:
            print(f"  rejected {number!r}: {reason}", file=sys.stderr)
        if len(receipt.rejected) > 20:
            print(f"  ... and {len(receipt.rejected) - 20} more", file=sys.stderr)
    if args.wait:
        status = wait_for(receipt.batch_id, show=not args.json)
        _print_status(status, args.json)
    return 0


def cmd_status(args) -> int:
    from tasks import batch_status

    _load()
    status = batch_status(args.batch_id)
    if not args.chunks:
        _print_status(status, args.json)
        return 0
    from tasks.settle import problem_chunks

    problems = problem_chunks(args.batch_id)
    if args.json:
        print(json.dumps({**status.as_dict(), "problem_chunks": problems}, ensure_ascii=False))
        return 0
    _print_status(status, False)
    for c in problems:
        print(f"  chunk {c['chunk_id']} (#{c['seq']}, {c['size']} numbers, {c['attempts']} attempt(s)): "
              f"{c['state']} {c['outcome'] or ''} {c['code'] or ''} {c['detail'] or ''}".rstrip())
    if problems:
        print("  settle one with: smsq settle CHUNK_ID accepted|failed|resend")
    return 0


def cmd_settle(args) -> int:
    from tasks.settle import settle

    _load()
    print(f"chunk {args.chunk_id}: {settle(args.chunk_id, args.action, args.note or '')}")
    return 0


# -- polls ------------------------------------------------------------------
def cmd_poll(args) -> int:
    from tasks.polls import poll, reparse

    conf = _load()
    if args.reparse:
        results = reparse(conf, account=args.account)
        for r in results:
            print(f"journal {r.journal_id} ({r.account} {r.kind}): {r.outcome}, {r.items} item(s) {r.detail}")
        print(f"{len(results)} journal row(s) parsed again")
        return 0 if all(r.outcome != "failed" for r in results) else 1
    if not args.account or not args.kind:
        raise ValueError("give ACCOUNT and KIND (inbound, reports, blocked, balance), or --reparse")
    result = poll(args.account, args.kind, conf=conf)
    if result.outcome == "leased":
        print(f"{args.account} {args.kind}: not polled: {result.detail} (the vendor's 30 s rule)")
        return 0
    print(f"{args.account} {args.kind}: {result.outcome}, {result.items} item(s)"
          + (f", journal {result.journal_id}" if result.journal_id else "") + (f" {result.detail}" if result.detail else ""))
    return 0 if result.outcome in ("ok", "rate_limited") else 1


def cmd_inbound(args) -> int:
    from sqlalchemy import select

    from store.models import InboundMessage
    from tasks.schema import ensure_schema

    from .db import session_scope

    conf = _load()
    ensure_schema(conf)
    q = select(InboundMessage).order_by(InboundMessage.id)
    if args.account:
        conf.account(args.account)
        q = q.where(InboundMessage.account == args.account)
    if args.since:
        q = q.where(InboundMessage.created_at >= args.since)
    with session_scope(conf.database_url, readonly=True) as session:
        rows = session.execute(q.limit(args.limit)).scalars().all()
        for m in rows:
            record = {"id": m.id, "account": m.account, "mobile": m.mobile, "content": m.content,
                      "received_at": m.received_at.isoformat(sep=" ", timespec="seconds") if m.received_at else None,
                      "stored_at": m.created_at.isoformat(sep=" ", timespec="seconds") + "Z", "vendor_id": m.vendor_id}
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                print(f"{m.id:>6}  {m.account:<12} {m.mobile:<13} {record['received_at'] or record['stored_at']:<20} "
                      f"{m.content}")
    if not args.json:
        sys.stdout.flush()
        print(f"{len(rows)} message(s)", file=sys.stderr)
    return 0


def cmd_accounts(args) -> int:
    from sqlalchemy import select

    from sqlalchemy import func

    from providers import provider_class
    from store.models import AccountBalance, PollJournal, PollStatus
    from tasks.schema import ensure_schema

    from .db import session_scope

    conf = _load()
    ensure_schema(conf)
    out = []
    with session_scope(conf.database_url, readonly=True) as session:
        for name, account in sorted(conf.accounts.items()):
            cls = provider_class(account.provider)
            bal = session.get(AccountBalance, name)
            polls = {p.kind: p for p in session.execute(
                select(PollStatus).where(PollStatus.account == name)).scalars()}
            alert = account.options.get("balance_alert")
            unparsed = session.scalar(select(func.count()).select_from(PollJournal).where(
                PollJournal.account == name, PollJournal.state.in_(("failed", "fetched"))))
            problems = [f"{k}: {p.outcome}" for k, p in sorted(polls.items())
                        if p.outcome not in ("ok", "rate_limited")]
            if unparsed:
                problems.append(f"{unparsed} fetched poll(s) not parsed: smsq poll --reparse {name}")
            if bal is not None and alert is not None and bal.balance < alert:
                problems.append(f"balance under {alert:g}")
            out.append({
                "account": name, "provider": account.provider,
                "balance": bal.balance if bal else None,
                "balance_checked_at": bal.checked_at.isoformat(sep=" ", timespec="seconds") + "Z" if bal else None,
                "polls": {k: {"at": (p.polled_at.isoformat(sep=" ", timespec="seconds") + "Z") if p.polled_at else None,
                              "outcome": p.outcome, "items": p.items, "detail": p.detail}
                          for k, p in sorted(polls.items())},
                "poll_kinds": sorted(cls.poll_kinds),
                "unparsed_journal": unparsed,
                "health": "ok" if not problems else "; ".join(problems),
            })
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    for a in out:
        balance = "unknown" if a["balance"] is None else f"{a['balance']:g} (at {a['balance_checked_at']})"
        print(f"{a['account']}  [{a['provider']}]  balance {balance}  health: {a['health']}")
        for kind in a["poll_kinds"] + (["send"] if "send" in a["polls"] else []):
            p = a["polls"].get(kind)
            print(f"    {kind:<8} " + (f"last poll {p['at']}: {p['outcome']}, {p['items']} item(s)"
                                       + (f" — {p['detail']}" if p["detail"] else "") if p else "never polled"))
    if not out:
        print(f"no accounts configured in {conf.config_path}")
    return 0


# -- vendor operations outside sending and polling --------------------------
def _provider(name: str):
    from .clients import provider_for

    conf = _load()
    return conf, provider_for(conf.account(name))


def cmd_check(args) -> int:
    """Are the credentials good? The vendor's login check where it has one, else a balance poll."""
    from providers import ProviderError

    conf, provider = _provider(args.account)
    if hasattr(provider, "login"):
        try:
            vendor_id = provider.login()
        except ProviderError as exc:
            print(f"{args.account}: refused: {exc.code or ''} {exc}".rstrip())
            return 1
        print(f"{args.account}: credentials accepted (vendor account id {vendor_id})")
        return 0
    if "balance" in provider.poll_kinds:
        from tasks.polls import poll

        result = poll(args.account, "balance", conf=conf)
        if result.outcome == "leased":
            print(f"{args.account}: not checked now: {result.detail} (the vendor's 30 s rule)")
            return 0
        print(f"{args.account}: balance check {result.outcome}" + (f": {result.detail}" if result.detail else ""))
        return 0 if result.outcome == "ok" else 1
    raise ValueError(f"{provider.name} has no way to check credentials without sending; "
                     f"`smsq send --wait` one message to a test number")


def cmd_password(args) -> int:
    """Change the account's password at the vendor (orgws UpdatePsw)."""
    import getpass

    conf, provider = _provider(args.account)
    if not hasattr(provider, "update_password"):
        raise ValueError(f"{provider.name} has no password change operation")
    if args.stdin:
        new = sys.stdin.readline().rstrip("\n")
    else:
        new = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != new:
            raise ValueError("the two passwords differ; nothing changed")
    provider.update_password(new)
    print(f"{args.account}: password changed at the vendor. Put the new one where the account's "
          f"password_env / password_file points before the next send, or every call will fail with auth.")
    return 0


def cmd_keywords(args) -> int:
    """Ask the vendor which forbidden words a content holds (qxs checkkeyword)."""
    _, provider = _provider(args.account)
    if not hasattr(provider, "check_keywords"):
        raise ValueError(f"{provider.name} has no keyword check operation")
    words = provider.check_keywords(args.content)
    print("clean: no forbidden word" if not words else "forbidden: " + ", ".join(words))
    return 0 if not words else 1


# -- processes --------------------------------------------------------------
def cmd_worker(args) -> int:
    from .app import QUEUES, get_app

    conf = _load()
    from tasks.schema import ensure_schema

    ensure_schema(conf)
    queues = args.queues or ",".join(QUEUES)
    argv = ["worker", "-Q", queues, "-l", args.loglevel, "-E"]
    if conf.embedded:
        # One process, threads: the SQLite database and the in-process rate
        # limiter are shared by every thread.
        argv += ["--pool", "threads", "-c", str(args.concurrency or 4)]
    elif args.concurrency:
        argv += ["-c", str(args.concurrency)]
    if args.hostname:
        argv += ["-n", args.hostname]
    get_app().worker_main(argv)
    return 0


def cmd_beat(args) -> int:
    from .app import get_app

    conf = _load()
    argv = ["beat", "-l", args.loglevel]
    scheduler = args.scheduler or ("local" if conf.embedded or not conf.redis_url else "redbeat")
    if scheduler == "local":
        if args.schedule_file:
            schedule_file = Path(args.schedule_file)
        elif conf.database_url.startswith("sqlite:///"):
            schedule_file = Path(conf.database_url.removeprefix("sqlite:///")).resolve().parent / "celerybeat-schedule"
        else:
            schedule_file = Path("celerybeat-schedule")
        argv += ["-s", str(schedule_file)]
    else:
        # The schedule and a lock live in Redis: a second beat waits for the lock.
        argv += ["-S", "redbeat.RedBeatScheduler"]
    get_app().start(argv)
    return 0


def cmd_flower(args) -> int:
    from .app import get_app

    _load()
    auth = os.environ.get("SMSQ_FLOWER_AUTH")
    address = args.address
    if auth:
        if ":" not in auth:
            raise ConfigError("SMSQ_FLOWER_AUTH must be user:password")
        # Through Flower's own environment variable, so the password is not on
        # the command line for `ps` to show.
        os.environ["FLOWER_BASIC_AUTH"] = auth
    else:
        if address not in ("127.0.0.1", "localhost", "::1"):
            print(f"SMSQ_FLOWER_AUTH is not set: refusing to expose Flower on {address} without a "
                  f"password; binding 127.0.0.1 only", file=sys.stderr)
        else:
            print("SMSQ_FLOWER_AUTH is not set: Flower listens on 127.0.0.1 only", file=sys.stderr)
        address = "127.0.0.1"
    get_app().start(["flower", f"--address={address}", f"--port={args.port}"])
    return 0


def cmd_simulate(args) -> int:
    from simulator.catalog import build
    from simulator.server import serve_forever

    sims = build(args.only.split(",") if args.only else None)
    serve_forever({name: (app, port) for name, (_, app, port) in sims.items()}, host=args.host)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.dir), count=args.count, keep=args.keep_running)


def cmd_db(args) -> int:
    from .db import upgrade

    conf = _load()
    upgrade(conf.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


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
    s.add_argument("--at", type=_parse_at, metavar="'YYYY-MM-DD HH:MM:SS'",
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
    s.add_argument("--since", type=_parse_at, metavar="'YYYY-MM-DD HH:MM:SS'", help="stored at or after (UTC)")
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
    from providers import ProviderError
    from tasks.schema import SchemaError

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

"""Operators' commands: status --number, settle --batch, export, batches, cancel, purge, blocked."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict

from smsq.tasks.blocklist import block_number, blocked_numbers, unblock_number
from smsq.tasks.cancel import cancel_batch
from smsq.tasks.lookup import EXPORT_COLUMNS, export_batch, number_history, recent_batches
from smsq.tasks.purge import parse_age, purge
from smsq.tasks.settle import settle_batch

from .batches import cmd_settle as settle_one
from .batches import cmd_status as batch_status
from .common import TIME_ZONE_NAME, load, show_time


def _json(record) -> None:
    print(json.dumps(record, ensure_ascii=False, default=lambda v: show_time(v, iso=True)))


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _one_of(first, second, names: str) -> None:
    if (first is None) == (second is None):
        raise ValueError(f"give one of {names}, not both")


def cmd_status(args) -> int:
    """``smsq status BATCH_ID`` or ``smsq status --number N``."""
    _one_of(args.batch_id, args.number, "BATCH_ID or --number N")
    if args.number is None:
        return batch_status(args)

    load(need_accounts=False)
    sends = number_history(args.number, limit=args.limit)
    if args.json:
        for s in sends:
            _json(asdict(s))
        return 0
    if not sends:
        print(f"no send to {args.number} on record")
        return 0
    print(
        f"{'batch':>7}  {'account':<14} {'sent (' + TIME_ZONE_NAME + ')':<26} {'state':<10} {'code':<8} "
        f"{'vendor id':<24} detail"
    )
    for s in sends:
        detail = s.detail if s.resent_at is None else f"sent again {show_time(s.resent_at)}; {s.detail or ''}"
        print(
            f"{s.batch_id:>7}  {s.account:<14} {show_time(s.batch_created_at):<26} {s.state:<10} "
            f"{s.code or '':<8} {s.vendor_id or '-':<24} {_short(detail, 60)}"
        )
    return 0


def cmd_settle(args) -> int:
    """``smsq settle CHUNK_ID ACTION`` or ``smsq settle --batch B [--state S] ACTION``."""
    _one_of(args.chunk_id, args.batch, "CHUNK_ID or --batch B")
    if args.batch is None:
        return settle_one(args)

    load(need_accounts=False)
    done = settle_batch(args.batch, args.state, args.action, args.note or "")
    if args.json:
        _json(done.as_dict())
    elif not done.chunks:
        print(f"batch {done.batch_id}: no {done.state} chunk; nothing settled")
    else:
        print(f"batch {done.batch_id}: {done.chunks} {done.state} chunk(s), {done.numbers} number(s): {done.detail}")
    return 0


def cmd_export(args) -> int:
    load(need_accounts=False)
    rows = export_batch(args.batch_id, args.state)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(EXPORT_COLUMNS)
    n = 0
    for row in rows:
        out.writerow([*row[:5], show_time(row[5], iso=True), row[6]])  # EXPORT_COLUMNS
        n += 1
    sys.stdout.flush()
    print(f"{n} number(s) exported", file=sys.stderr)
    return 0


def cmd_batches(args) -> int:
    load(need_accounts=False)
    batches = recent_batches(args.limit, account=args.account)
    if args.json:
        for b in batches:
            _json({**asdict(b), "final": b.final})
        return 0
    if not batches:
        print("no batch yet")
        return 0
    print(
        f"{'batch':>7}  {'account':<14} {'kind':<9} {'created (' + TIME_ZONE_NAME + ')':<26} {'numbers':>8}  "
        f"{'progress':<12} recipients"
    )
    for b in batches:
        progress = _progress(b)
        counts = ", ".join(f"{state} {n}" for state, n in sorted(b.recipients.items()))
        if b.refused.numbers:  # by the vendor in its answers (smsq status BATCH says more)
            counts += f"; refused {b.refused.numbers}" + (f" ({b.refused.open} not named)" if b.refused.open else "")
        print(
            f"{b.batch_id:>7}  {b.account:<14} {b.kind:<9} {show_time(b.created_at):<26} {b.numbers:>8}  "
            f"{progress:<12} {counts}"
        )
    return 0


def _progress(b) -> str:
    """A batch's progress in a word or two; ``for window``: it waits for its send window."""
    if b.cancelled or b.final:
        return "cancelled" if b.cancelled else "final"
    if b.scheduled:
        return "scheduled"
    return "for window" if b.waiting_for_window_until is not None else "in progress"


def cmd_cancel(args) -> int:
    load(need_accounts=False)
    result = cancel_batch(args.batch_id)
    if args.json:
        _json(result.as_dict())
        return 0
    print(
        f"batch {result.batch_id}: cancelled {result.cancelled_chunks} pending chunk(s), "
        f"{result.cancelled_numbers} number(s): they will not be sent"
    )
    if result.sending_chunks:
        print(
            f"  {result.sending_chunks} chunk(s), {result.sending_numbers} number(s), were being sent: "
            f"they may still go out (a retry of them will not)"
        )
    if result.done:
        print(
            "  already had an outcome: " + ", ".join(f"{state} {n}" for state, n in result.done.items()) + " chunk(s)"
        )
    return 0


def cmd_purge(args) -> int:
    load(need_accounts=False)
    age = parse_age(args.older_than)

    def progress(table: str, rows: int) -> None:
        print(f"  {table}: {rows:,} removed so far", file=sys.stderr, flush=True)

    report = purge(
        age, dry_run=args.dry_run, inbound=args.inbound, force=args.force, progress=None if args.dry_run else progress
    )
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"older than {show_time(report.cutoff)} ({TIME_ZONE_NAME}): {verb} "
        + ", ".join(f"{n:,} {table}" for table, n in report.removed.items())
    )
    if report.kept_in_flight:
        print(f"  kept {report.kept_in_flight} old batch(es) still in flight (a chunk pending or sending)")
    if report.kept_unparsed:
        print(f"  kept {report.kept_unparsed} old journal row(s) never parsed: smsq poll --reparse")
    if not args.inbound:
        print("  inbound messages kept (--inbound removes them too)")
    return 0


def cmd_blocked(args) -> int:
    load()
    if args.add or args.remove:
        if not args.account:
            raise ValueError("--add and --remove need --account (whose list)")
        if args.add:
            number = block_number(args.account, args.add, args.reason or "blocked by an operator")
            print(f"{number}: blocked for {args.account} ({args.reason or 'blocked by an operator'})")
        else:
            number = unblock_number(args.account, args.remove)
            print(f"{number}: no longer blocked for {args.account}")
        return 0
    if args.reason:
        raise ValueError("--reason goes with --add")
    n = 0
    for b in blocked_numbers(args.account):
        n += 1
        if args.json:
            _json(asdict(b))
        else:
            print(f"{b.account:<14} {b.mobile:<13} {show_time(b.created_at):<26} {b.source:<7} {b.reason}")
    if not args.json:
        sys.stdout.flush()
        print(f"{n} blocked number(s)", file=sys.stderr)
    return 0

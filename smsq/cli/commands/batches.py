"""Sending and following batches: send, status, settle."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from smsq.store.models import utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks.policy import opening_words
from smsq.tasks.producer import FINAL_CHUNK_STATES, NoValidNumbersError, Receipt
from smsq.tasks.progress import why_waiting
from smsq.tasks.settle import problem_chunks, settle

from .common import load, send_options, show_time
from .texts import check_text_options, numbered_rows, send_rows, write_rejects


def open_numbers(path: str):
    """The file is opened here, before anything is stored, so a wrong path is a clear error."""
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read numbers from {path}: {exc.strerror}") from None


def _read_numbers(stream):
    with stream:
        try:
            for line in stream:
                for item in line.replace(";", ",").split(","):
                    if item.strip():
                        yield item.strip()
        except UnicodeDecodeError:
            raise ValueError(f"{getattr(stream, 'name', 'the numbers file')} is not UTF-8 text") from None


def _bar(status, width: int = 30) -> str:
    total = sum(status.chunks.values()) + status.to_split or 1
    final = sum(n for s, n in status.chunks.items() if s in FINAL_CHUNK_STATES)
    filled = int(width * final / total)
    r = status.recipients
    splitting = f" ({status.to_split} still to cut)" if status.to_split else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {final}/{total} chunks final{splitting}  "
        f"sent {r.get('sent', 0) + r.get('delivered', 0)}  failed {r.get('failed', 0)}  "
        f"unknown {r.get('unknown', 0)}  "
        + (f"expired {r['expired']}  " if r.get("expired") else "")
        + f"waiting {r.get('queued', 0)}"
    )


STALL_EXPLAIN_AFTER = 3.0  # seconds without a change before --wait says why


def wait_for(batch_id: int, *, show: bool = True, timeout: float | None = None, interval: float = 0.5):
    """Follow a batch until every chunk has an outcome. When nothing has changed for a few
    seconds, say why (scheduled, account held, retry wait, no worker on the lane)."""
    start = changed = time.monotonic()
    tty = sys.stderr.isatty()
    last = None
    said: list[str] = []
    while True:
        status = batch_status(batch_id)
        line = _bar(status)
        now = time.monotonic()
        if line != last:
            changed = now
            if show:
                # A terminal gets one redrawn line; a log file gets a line per change.
                print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        elif show and not status.final and now - changed >= STALL_EXPLAIN_AFTER:
            reasons = why_waiting(batch_id, stalled_for=now - changed)
            if reasons and reasons != said:
                print(("\n" if tty else "") + "\n".join(f"waiting: {r}" for r in reasons), file=sys.stderr, flush=True)
                said = reasons
                last = None  # draw the bar again under the explanation
        if status.final or (timeout is not None and now - start > timeout):
            if show and tty:
                print(file=sys.stderr)
            return status
        time.sleep(interval)


def outcome_code(status) -> int:
    """The exit status of a --wait: 1 when any number failed, is unknown or expired, or a vendor
    refused numbers it did not name and it is not known yet which (the batch is not clean)."""
    return 0 if status.clean else 1


def refused_line(refused, batch_id: int) -> str | None:
    """What vendors refused of the batch in answers that took the rest; None: nothing."""
    if not refused.numbers:
        return None
    words = [f"{refused.numbers} number(s) by the vendor in its answers"]
    if refused.awaiting:
        words.append(
            f"{refused.awaiting} of them not named: delivery reports tell which, and the numbers none "
            f"placed by {show_time(refused.due_at)} fail"
        )
    if refused.untold:
        words.append(
            f"{refused.untold} of them not named by a vendor that sends no delivery reports: "
            f"which of the sent ones cannot be told"
        )
    if not refused.open:
        words.append(f"each one failed (smsq export {batch_id} --state failed lists them)")
    return "; ".join(words)


def progress(status, now: datetime | None = None) -> str:
    """``final``, ``in progress``, or ``scheduled at 2026-12-03 18:30:00+08:00`` while the
    batch waits for its time (smsq holds it until then, whatever the vendor); and
    ``waiting for the send window, opens 08:00 +08:00`` while it waits for its kind's window."""
    window = status.waiting_for_window_until
    waits = None if window is None else f"waiting for the send window, opens {opening_words(window, now or utcnow())}"
    if status.scheduled:
        return f"scheduled at {show_time(status.send_at)}" + (f", then {waits}" if waits else "")
    return "final" if status.final else waits or "in progress"


def print_status(status, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.as_dict(), ensure_ascii=False))
        return
    print(
        f"batch {status.batch_id}  account {status.account}"
        f"{f'  route {status.route}' if status.route else ''}  kind {status.kind}  accepted {status.accepted}  "
        f"rejected {status.rejected}  {progress(status)}"
        + (f"  valid until {show_time(status.valid_until)}" if status.valid_until else "")
    )
    print("  recipients: " + ", ".join(f"{k} {v}" for k, v in sorted(status.recipients.items())))
    print(
        "  chunks:     "
        + ", ".join(f"{k} {v}" for k, v in sorted(status.chunks.items()))
        + (f"; {status.to_split} still to cut from the stored numbers" if status.to_split else "")
    )
    refused = refused_line(status.refused, status.batch_id)
    if refused:
        print(f"  refused:    {refused}")
    if status.route or len(status.by_account) > 1:  # which account holds which numbers
        for account, counts in sorted(status.by_account.items()):
            print(f"  {account + ':':<11} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def cmd_send(args) -> int:
    conf = load()
    check_text_options(args)
    if args.dry_run:  # stores nothing: a host without the passwords may ask what a send would do
        from .preview import run_preview

        if args.rows is not None:
            with numbered_rows(args.rows) as rows:
                return run_preview(args, template=args.template, rows=rows)
        numbers = args.to if args.to is not None else _read_numbers(open_numbers(args.to_file))
        return run_preview(args, to=numbers, content=args.content)
    # Nothing calls the vendor here, but a batch queued for accounts whose passwords this
    # host cannot read is most likely a deployment mistake: say so before storing it.
    route = conf.routes.get(args.account)
    conf.require_credentials(route.accounts if route else [args.account])  # (an unknown account: said here)
    try:
        receipt = _send(args)
    except NoValidNumbersError as refused:
        if args.rejects:
            write_rejects(args.rejects, refused.rejected)
        raise
    if args.rejects:
        write_rejects(args.rejects, receipt.rejected)
    print_receipt(receipt, args)
    if not receipt.queued:
        # The batch is committed; only its hand-over to the broker failed. Not an error (exit 0).
        print(
            f"warning: the broker did not answer; batch {receipt.batch_id} is stored and the relay "
            f"(smsq beat) will publish it when the broker is back",
            file=sys.stderr,
        )
    if args.wait:
        status = wait_for(receipt.batch_id, show=not args.json)
        print_status(status, args.json)
        return outcome_code(status)
    return 0


def _send(args) -> Receipt:
    if args.rows is not None:
        return send_rows(args)
    numbers = args.to if args.to is not None else _read_numbers(open_numbers(args.to_file))
    return send_sms(args.account, numbers, args.content, **send_options(args))


def print_receipt(receipt, args) -> None:
    """The receipt of ``smsq send``: one JSON object (``--json`` without ``--wait``), or the
    batch id on stdout and the counts and rejected numbers on stderr."""
    if args.json and not args.wait:
        print(
            json.dumps(
                {
                    "batch_id": receipt.batch_id,
                    "accepted": receipt.accepted,
                    "rejected": receipt.rejected,
                    "segments": receipt.segments,
                    "billable": receipt.billable,
                    "lane": receipt.lane,
                    "kind": receipt.kind,
                    "valid_until": None if receipt.valid_until is None else show_time(receipt.valid_until, iso=True),
                    "replayed": receipt.replayed,
                    "queued": receipt.queued,
                },
                ensure_ascii=False,
            )
        )
    elif not args.json:
        print(receipt.batch_id, flush=True)  # a script reading it need not wait for --wait's end
        print(
            f"accepted {receipt.accepted}, rejected {len(receipt.rejected)}, "
            + (
                f"{receipt.billable} billable message(s) (up to {receipt.segments} segment(s) a text)"
                if receipt.segments * receipt.accepted != receipt.billable
                else f"{receipt.segments} segment(s) each"
            )
            + f", kind {receipt.kind}, lane {receipt.lane}"
            + (f", valid until {show_time(receipt.valid_until)}" if receipt.valid_until else "")
            + (" (replayed: same idempotency key)" if receipt.replayed else ""),
            file=sys.stderr,
        )
        for number, reason in receipt.rejected[:20]:
            print(f"  rejected {number!r}: {reason}", file=sys.stderr)
        if len(receipt.rejected) > 20:
            print(f"  ... and {len(receipt.rejected) - 20} more", file=sys.stderr)


def print_waiting(status, as_json: bool) -> None:
    """Why a batch in progress waits, as far as the database tells (no broadcast to the
    workers: `smsq status` answers at once)."""
    if as_json or status.final:
        return
    for reason in why_waiting(status.batch_id, ask_workers=False):
        print(f"  waiting:    {reason}")


def cmd_status(args) -> int:
    load(need_accounts=False)
    status = batch_status(args.batch_id)
    if not args.chunks:
        print_status(status, args.json)
        print_waiting(status, args.json)
        return 0

    problems = problem_chunks(args.batch_id)
    if args.json:
        print(json.dumps({**status.as_dict(), "problem_chunks": problems}, ensure_ascii=False))
        return 0
    print_status(status, False)
    print_waiting(status, False)
    for c in problems:
        print(
            f"  chunk {c['chunk_id']} (#{c['seq']}, {c['size']} numbers, {c['attempts']} attempt(s)): "
            f"{c['state']} {c['outcome'] or ''} {c['code'] or ''} {c['detail'] or ''}".rstrip()
        )
    if problems:
        print("  settle one with: smsq settle CHUNK_ID accepted|failed|resend")
    return 0


def cmd_settle(args) -> int:
    load(need_accounts=False)
    print(f"chunk {args.chunk_id}: {settle(args.chunk_id, args.action, args.note or '')}")
    return 0

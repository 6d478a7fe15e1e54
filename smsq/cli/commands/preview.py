"""`smsq send --dry-run`: what a send would do, with nothing stored or sent."""

from __future__ import annotations

import json
import sys

from smsq.tasks.preview import Preview, preview_send

from .common import format_balance, send_options, show_time

EXIT_OK, EXIT_REFUSED = 0, 2  # 2: not one number could be sent, as `smsq send` itself exits


def run_preview(args, **texts) -> int:
    """Print the preview of the send ``args`` describe, with ``texts`` (``to`` and
    ``content``, or ``template`` and ``rows``); its exit status."""
    if args.wait:
        raise ValueError("--wait has nothing to follow in a --dry-run: nothing is sent")
    preview = preview_send(args.account, **texts, **send_options(args))
    if args.json:
        print(json.dumps(preview.as_dict(), ensure_ascii=False))
    else:
        print("\n".join(describe(preview)))
    refusal = preview.refusal()
    if refusal is not None:
        print(f"smsq: error: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def describe(p: Preview) -> list[str]:
    """The preview as lines for a person."""
    route = f"  route {p.route}" if p.route else ""
    lines = [
        "dry run: nothing was stored or sent",
        f"account {p.account}{route}  kind {p.kind}  lane {p.lane}",
    ]
    if p.replay_of is not None:
        lines.append(f"replay:    the idempotency key names batch {p.replay_of}: nothing new would be sent")
    lines.append(f"accepted:  {p.accepted:,} number(s)")
    by = ", ".join(f"{kind} {count:,}" for kind, count in sorted(p.rejected_by.items()))
    lines.append(f"rejected:  {len(p.rejected):,}" + (f" ({by})" if by else ""))
    lines += [f"  rejected {number!r}: {reason}" for number, reason in p.rejected[:20]]
    if len(p.rejected) > 20:
        lines.append(f"  ... and {len(p.rejected) - 20:,} more")
    lines += _message_lines(p) + [f"balance:   {_balance(p)}"]
    if p.daily_quota is not None:
        left = max(0, p.daily_quota - (p.quota_used or 0))
        lines.append(
            f"quota:     {p.daily_quota:,} number(s) a day; {p.quota_used or 0:,} used today "
            f"(Beijing time), {left:,} left"
        )
    if p.personal_billable is None:
        lines.append(f"content:   {p.content}")
    elif p.content:  # a template's (messages= have none)
        lines.append(f"template:  {p.content}")
    return lines


def _message_lines(p: Preview) -> list[str]:
    """The message's size and what it bills: one text's, or personal texts' (the longest, the sum)."""
    rule = "(70 characters in one, 67 each above that)"
    if p.personal_billable is None:
        return [
            f"message:   {p.characters} character(s), signature included (the vendor takes at most "
            f"{p.max_chars}): {p.segments} segment(s) {rule}",
            f"billable:  {p.billable:,} message(s) ({p.accepted:,} number(s) x {p.segments} segment(s))",
        ]
    return [
        f"messages:  a text per number; the longest {p.characters} character(s), signature included (the "
        f"vendor takes at most {p.max_chars}): {p.segments} segment(s) {rule}",
        f"billable:  {p.billable:,} message(s) (each of {p.accepted:,} number(s) x its text's segments)",
    ]


def _balance(p: Preview) -> str:
    if p.balance is None:
        return "unknown (never polled, or the vendor has no balance call): cannot tell if it is enough"
    at = f" at {show_time(p.balance_checked_at)}" if p.balance_checked_at else ""
    return f"{format_balance(p.balance)} message(s), last polled{at}: {p.balance_verdict}"

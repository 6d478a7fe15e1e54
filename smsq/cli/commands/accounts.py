"""Accounts and their vendors: poll, inbound, accounts, check, password, keywords."""

from __future__ import annotations

import getpass
import json
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from smsq.providers import provider_class
from smsq.providers.base import BEIJING
from smsq.store.models import AccountBalance, InboundMessage, PollJournal, PollStatus
from smsq.tasks.check import ACCEPTED, CLOSED, REFUSED, check_credentials, give_up
from smsq.tasks.circuit import circuits
from smsq.tasks.polls import HELD, poll, reparse
from smsq.tasks.schema import ensure_schema
from smsq.worker.clients import provider_for
from smsq.worker.db import session_scope

from .common import format_balance, load, show_time


def cmd_poll(args) -> int:
    conf = load()
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
    if result.outcome == HELD:
        print(
            f"{args.account} {args.kind}: not polled: {result.detail}; "
            f"`smsq check {args.account}` tries the credentials this shell reads"
        )
        return 1
    print(
        f"{args.account} {args.kind}: {result.outcome}, {result.items} item(s)"
        + (f", journal {result.journal_id}" if result.journal_id else "")
        + (f" {result.detail}" if result.detail else "")
    )
    return 0 if result.outcome in ("ok", "rate_limited") else 1


def cmd_inbound(args) -> int:
    conf = load(need_accounts=False)
    ensure_schema(conf)
    q = select(InboundMessage).order_by(InboundMessage.id)
    if args.account:
        conf.account(args.account)
        q = q.where(InboundMessage.account == args.account)
    if args.since:
        # --since is Beijing time; the stored time is UTC (the vendor's own may be missing)
        q = q.where(InboundMessage.created_at >= _utc(args.since))
    with session_scope(conf.database_url, readonly=True) as session:
        rows = session.execute(q.limit(args.limit)).scalars().all()
        for m in rows:
            # The vendor's time is Beijing time already; smsq's own is UTC. Both are shown as Beijing time.
            received = m.received_at.replace(tzinfo=BEIJING) if m.received_at else m.created_at
            record = {
                "id": m.id,
                "account": m.account,
                "mobile": m.mobile,
                "content": m.content,
                "received_at": show_time(received, iso=True),
                "stored_at": show_time(m.created_at, iso=True),
                "vendor_id": m.vendor_id,
            }
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                print(f"{m.id:>6}  {m.account:<12} {m.mobile:<13} {show_time(received)}  {m.content}")
    if not args.json:
        sys.stdout.flush()
        print(f"{len(rows)} message(s)", file=sys.stderr)
    return 0


def cmd_accounts(args) -> int:
    conf = load()
    ensure_schema(conf)
    with session_scope(conf.database_url, readonly=True) as session:
        breakers = circuits(session, conf.accounts)
        out = [account_report(session, conf, name, breakers.get(name)) for name in sorted(conf.accounts)]
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print_accounts(out, conf)
    return 0


def account_report(session, conf, name: str, breaker) -> dict:
    """One account for `smsq accounts`: balance, polls, circuit, and what needs an operator."""
    account = conf.accounts[name]
    bal = session.get(AccountBalance, name)
    polls = {p.kind: p for p in session.execute(select(PollStatus).where(PollStatus.account == name)).scalars()}
    alert = account.options.get("balance_alert")
    unparsed = session.scalar(
        select(func.count())
        .select_from(PollJournal)
        .where(PollJournal.account == name, PollJournal.state.in_(("failed", "fetched")))
    )
    problems = [f"{k}: {p.outcome}" for k, p in sorted(polls.items()) if p.outcome not in ("ok", "rate_limited")]
    if unparsed:
        problems.append(f"{unparsed} fetched poll(s) not parsed: smsq poll --reparse {name}")
    if bal is not None and alert is not None and bal.balance < alert:
        problems.append(f"balance under {alert:g}")
    circuit = circuit_view(breaker)
    if circuit["state"] != "closed":
        problems.append(f"circuit {circuit['state']}")
    return {
        "account": name,
        "provider": account.provider,
        "balance": bal.balance if bal else None,
        "balance_checked_at": show_time(bal.checked_at) if bal else None,
        "polls": {
            k: {"at": show_time(p.polled_at) or None, "outcome": p.outcome, "items": p.items, "detail": p.detail}
            for k, p in sorted(polls.items())
        },
        "poll_kinds": sorted(provider_class(account.provider).poll_kinds),
        "unparsed_journal": unparsed,
        "health": "ok" if not problems else "; ".join(problems),
        "circuit": circuit,
        "routes": [r.name for r in conf.routes.values() if name in r.accounts],
    }


def print_accounts(out: list[dict], conf) -> None:
    for a in out:
        balance = (
            "— (the vendor has no balance call)"
            if "balance" not in a["poll_kinds"]
            else "unknown"
            if a["balance"] is None
            else f"{format_balance(a['balance'])} (at {a['balance_checked_at']})"
        )
        print(f"{a['account']}  [{a['provider']}]  balance {balance}  health: {a['health']}")
        for kind in a["poll_kinds"] + (["send"] if "send" in a["polls"] else []):
            p = a["polls"].get(kind)
            print(
                f"    {kind:<8} "
                + (
                    f"last poll {p['at']}: {p['outcome']}, {p['items']} item(s)"
                    + (f" — {p['detail']}" if p["detail"] else "")
                    if p
                    else "never polled"
                )
            )
        if a["circuit"]["state"] != "closed" or a["routes"]:
            print(f"    circuit  {describe_circuit(a['circuit'])}")
    by_name = {a["account"]: a for a in out}
    for route in conf.routes.values():
        print(
            f"route {route.name}: "
            + " -> ".join(f"{name} ({by_name[name]['circuit']['state']})" for name in route.accounts)
        )
    print("(times in Beijing time, UTC+8)")


def circuit_view(row) -> dict:
    """An account's circuit for `smsq accounts`: state, why, until when, how often in a row."""
    if row is None:
        return {"state": "closed", "reason": None, "reopen_at": None, "cooloff": None, "trips": 0}
    return {
        "state": row.state,
        "reason": row.reason,
        "reopen_at": show_time(row.reopen_at) if row.state == "open" else None,
        "cooloff": row.cooloff,
        "trips": row.trips,
    }


def describe_circuit(c: dict) -> str:
    if c["state"] == "open":
        return f"open until {c['reopen_at']} (cool-off {c['cooloff']:g}s, trip {c['trips']}): {c['reason']}"
    if c["state"] == "half_open":
        return f"half-open: one call (a chunk or a poll) is trying the account ({c['reason']})"
    return "closed" + (f" ({c['reason']})" if c["reason"] else "")


def _utc(beijing: datetime) -> datetime:
    return beijing.replace(tzinfo=BEIJING).astimezone(UTC).replace(tzinfo=None)


def _provider(name: str):
    conf = load()
    return conf, provider_for(conf.account(name))


NOT_CHECKED = 3  # exit status: the vendor was not asked (window closed) or gave no verdict
PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


def cmd_check(args) -> int:
    """Are the credentials good? The vendor's login call where it has one, else a balance call.
    Prints the answer and stores nothing: the password is this shell's (tasks/check.py)."""
    conf = load()
    name = args.account
    deadline = time.monotonic() + args.timeout
    shown = booked = None
    try:
        while (result := check_credentials(conf, name, book=args.wait)).verdict == CLOSED:
            booked = args.wait
            left = deadline - time.monotonic()
            if not args.wait or left <= 0:
                end_progress(shown)
                hint = (
                    f"`smsq check {name} --wait` waits for it"
                    if not args.wait
                    else f"gave up after --timeout {args.timeout:g} s"
                )
                print(f"smsq: not checked: {name}: {result.detail}; {hint}", file=sys.stderr)
                return NOT_CHECKED
            shown = show_progress(f"{name}: waiting for the vendor's window, {result.wait:.0f} s", shown)
            time.sleep(min(max(result.wait, 0.05), 1.0, left))
    finally:
        if booked:
            give_up(conf, name)  # a booking left behind (timeout, Ctrl-C) would hold the polls back
    end_progress(shown)
    if result.verdict == ACCEPTED:
        what = (  # a login call gives the one, a balance call the other
            f"balance {format_balance(result.balance)}"
            if result.balance is not None
            else f"vendor account id {result.vendor_id}"
        )
        print(f"{name}: credentials accepted ({what}); checked with this shell's credentials, nothing stored")
        return 0
    if result.verdict == REFUSED:
        print(
            f"{name}: refused: {result.detail}; checked with this shell's credentials, the account's state is unchanged"
        )
        return 1
    print(f"smsq: not checked: {name}: the vendor gave no verdict: {result.detail}", file=sys.stderr)
    return NOT_CHECKED


def show_progress(line: str, shown: tuple[str, float] | None) -> tuple[str, float]:
    """A terminal gets one redrawn line; a log gets a line every PROGRESS_EVERY seconds."""
    now = time.monotonic()
    if sys.stderr.isatty():
        if shown is None or shown[0] != line:
            print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
        return line, now
    if shown is None or now - shown[1] >= PROGRESS_EVERY:
        print(line, file=sys.stderr, flush=True)
        return line, now
    return shown


def end_progress(shown) -> None:
    if shown is not None and sys.stderr.isatty():
        print(file=sys.stderr)


def cmd_password(args) -> int:
    """Change the account's password at the vendor (orgws UpdatePsw)."""
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
    print(
        f"{args.account}: password changed at the vendor. Put the new one where the account's "
        f"password_env / password_file points before the next send, or every call will fail with auth."
    )
    return 0


def cmd_keywords(args) -> int:
    """Ask the vendor which forbidden words a content holds (qxs checkkeyword)."""
    _, provider = _provider(args.account)
    if not hasattr(provider, "check_keywords"):
        raise ValueError(f"{provider.name} has no keyword check operation")
    words = provider.check_keywords(args.content)
    print("clean: no forbidden word" if not words else "forbidden: " + ", ".join(words))
    return 0 if not words else 1

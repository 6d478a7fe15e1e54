"""``smsq.poll(account, kind)``: fetch once, journal first, parse second.

Vendors hand each inbound message and status report out once. So a poll:

1. asks the account's circuit (tasks/circuit.py), the one its sends use: while it
   is open for a refused password (an auth answer to a send or to a poll of any
   endpoint) the poll is skipped, ``held``, and beat's next turn polls again; after
   the cool-off one call, a poll or a chunk, is the probe. An auth or balance answer
   to a poll opens the circuit (tasks/decisions.py ``decide_poll``, ``holds_polls``);
2. takes the account's lease for the endpoint family (the 30 s rule), and calls
   the vendor;
3. commits the raw body to ``poll_journal`` before anything else can fail;
4. parses it into rows with unique keys (a re-parse or a repeated item inserts
   nothing), applies reports to recipients, stores blocked numbers and balance,
   and marks the journal row ``parsed`` — or ``failed`` with the error, where it
   stays for ``smsq poll --reparse``;
5. tells the application (``SMSQ_ON_INBOUND`` / ``SMSQ_ON_STATUS`` task names)
   the ids of new inbound messages and of recipients whose status changed;
6. polls again after the interval when it got a full page.

Delivery reports: a repeated one inserts nothing, a new one is never dropped.
A vendor may hand the same report out twice (a repeated page), and a
restarted vendor may reuse message ids, so a report for a later send can look
like an old one. What tells them apart:

* A report that carries its own time (``reported_at``, e.g. qxs): the key is
  vendor id + mobile + code + time. A repeat has the same time, a later
  report for a reused id another one.
* A report without a time (dxt): the key is vendor id + mobile + code, and a
  report whose key is already stored is taken as a *new* one only when all of
  these hold: it came in another journal row than the stored one (a re-parse
  of the same body adds nothing); the stored one is not still waiting to be
  matched (then the stored one settles the number itself); a recipient with
  that vendor id and mobile is still awaiting its report (``sent`` or
  ``unknown``), was sent after the stored report arrived, and is not the
  recipient a stored copy already settled. It is then stored under the key
  plus ``#r<recipient id>``, so a repeat of it in turn inserts nothing.
  The vendor gives nothing more to go on: a repeated page of an old report
  that arrives after a later send under the same id, before that send's own
  report, settles the later send with the old status.
* A report is matched to the newest recipient with its vendor id and mobile
  that still awaits a report, else to the newest one with them (a late
  report changing a settled status), else to the earlier send (one an
  operator sent again, ``earlier_sends``) with them, else to the newest
  recipient of the mobile without a vendor id that awaits one (an answer
  lost to a timeout), else to such an earlier send that was left unknown.
  A report for an earlier send is kept on it; its recipient row follows the
  send that replaced it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from smsq.providers import Provider, ProviderError
from smsq.providers.base import Inbound, Report
from smsq.store import leases, ledger
from smsq.store.lifecycle import RecipientState
from smsq.store.models import (
    AccountBalance,
    Batch,
    BlockedNumber,
    EarlierSend,
    InboundMessage,
    PollJournal,
    PollStatus,
    Recipient,
    StatusReport,
    utcnow,
)
from smsq.store.sql import fit, insert_or_ignore
from smsq.worker.app import get_app, smsq_task
from smsq.worker.clients import provider_for
from smsq.worker.config import Settings, UnknownAccountError, knowing, settings
from smsq.worker.db import session_scope
from smsq.worker.services import describe, first_line, unreachable_kind

from . import circuit
from .blocklist import record_optouts
from .decisions import decide_poll
from .publish import MAX_COUNTDOWN
from .schema import ensure_schema
from .unknown_account import why_unknown

log = logging.getLogger("smsq.poll")

KINDS = ("inbound", "reports", "blocked", "balance")
MAX_WAITS = 3  # a poll that finds the lease held waits for it this many times, then gives up


@dataclass
class PollResult:
    account: str
    kind: str
    outcome: str  # ok | held | leased | rate_limited | auth | transient | ambiguous | failed | ...
    journal_id: int | None = None
    items: int = 0
    new_inbound: list[int] = field(default_factory=list)
    changed_recipients: list[int] = field(default_factory=list)
    full_page: bool = False
    detail: str = ""
    retry_in: float | None = None


def _hash(*parts: object) -> str:
    return hashlib.sha1("\x1f".join("" if p is None else str(p) for p in parts).encode("utf-8")).hexdigest()


def inbound_key(msg: Inbound) -> str:
    # The vendor's id when it has one; otherwise what identifies a message.
    return f"id:{msg.vendor_id}" if msg.vendor_id else f"h:{_hash(msg.mobile, msg.received_at, msg.content)}"


def report_key(rep: Report) -> str:
    return fit(StatusReport.dedupe_key, f"{rep.vendor_id or ''}:{rep.mobile}:{rep.code}:{rep.reported_at or ''}")


def _set_status(session: Session, account: str, kind: str, outcome: str, detail: str = "", items: int = 0):
    row = session.get(PollStatus, (account, kind))
    if row is None:
        row = PollStatus(account=account, kind=kind)
        session.add(row)
    row.polled_at, row.outcome, row.detail, row.items = utcnow(), outcome, fit(PollStatus.detail, detail), items


# -- storing what a body holds -------------------------------------------------
def _store_inbound(
    session: Session, account: str, journal_id: int, items: list[Inbound], options: Mapping[str, Any]
) -> list[int]:
    rows = [
        {
            "account": account,
            "mobile": fit(InboundMessage.mobile, m.mobile),
            "content": m.content,
            "vendor_id": m.vendor_id,
            "received_at": m.received_at,
            "extra": m.extra,
            "dedupe_key": inbound_key(m),
            "journal_id": journal_id,
            "created_at": utcnow(),
        }
        for m in items
    ]
    new_ids = insert_or_ignore(session, InboundMessage, rows, ["account", "dedupe_key"], returning=InboundMessage.id)
    if new_ids:
        # Only messages stored for the first time: a re-parse must not block again
        # a number an operator took off the list meanwhile.
        replies = session.execute(
            select(InboundMessage.mobile, InboundMessage.content).where(InboundMessage.id.in_(new_ids))
        ).all()
        opted_out = record_optouts(session, account, options, replies)
        if opted_out:
            log.info("%s: %s number(s) opted out by reply: %s", account, len(opted_out), ", ".join(opted_out))
    return new_ids


AWAITING = (RecipientState.SENT, RecipientState.UNKNOWN)  # recipient states still waiting for a delivery report


def _sent_under(account: str, rep: Report):
    """The account's recipients with the report's vendor id and mobile."""
    return (
        select(Recipient)
        .join(Batch, Batch.id == Recipient.batch_id)
        .where(Recipient.vendor_id == rep.vendor_id, Recipient.mobile == rep.mobile, Batch.account == account)
    )


def _earlier_sends_of(account: str, rep: Report):
    """The account's earlier sends (sent again by an operator) to the report's mobile."""
    return (
        select(EarlierSend)
        .join(Batch, Batch.id == EarlierSend.batch_id)
        .where(EarlierSend.mobile == rep.mobile, Batch.account == account)
    )


def _match_send(session: Session, account: str, rep: Report) -> Recipient | EarlierSend | None:
    if rep.vendor_id:
        # A reused vendor id: the send still waiting for its report is the one meant.
        found = session.execute(
            _sent_under(account, rep)
            .order_by(case((Recipient.state.in_(AWAITING), 0), else_=1), Recipient.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if found is None:  # the vendor id of a send an operator sent again
            found = session.execute(
                _earlier_sends_of(account, rep)
                .where(EarlierSend.vendor_id == rep.vendor_id)
                .order_by(EarlierSend.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        if found is not None:
            return found
    # Recipients without a vendor id of their own: a chunk whose answer was lost
    # ('unknown': a report shows the vendor did accept it), or a vendor answer
    # whose ids could not be paired with numbers. The latest such send wins.
    found = session.execute(
        select(Recipient)
        .join(Batch, Batch.id == Recipient.batch_id)
        .where(
            Recipient.mobile == rep.mobile,
            Recipient.state.in_(AWAITING),
            Recipient.vendor_id.is_(None),
            Batch.account == account,
        )
        .order_by(Recipient.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if found is None:
        # An 'unknown' send an operator sent again: the vendor had taken it after all.
        found = session.execute(
            _earlier_sends_of(account, rep)
            .where(EarlierSend.state.in_(AWAITING), EarlierSend.vendor_id.is_(None))
            .order_by(EarlierSend.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    return found


REMATCH_WINDOW = timedelta(minutes=10)  # how long an unmatched report is tried again


def _report_row(account: str, journal_id: int, rep: Report, key: str) -> dict:
    return {
        "account": account,
        "vendor_id": rep.vendor_id,
        "mobile": fit(StatusReport.mobile, rep.mobile),
        "delivered": rep.delivered,
        "code": fit(StatusReport.code, rep.code),
        "message": fit(StatusReport.message, rep.message or ""),
        "reported_at": rep.reported_at,
        "dedupe_key": key,
        "journal_id": journal_id,
        "created_at": utcnow(),
    }


def _store_reports(session: Session, account: str, journal_id: int, items: list[Report]) -> tuple[int, list[int]]:
    rows = [_report_row(account, journal_id, r, report_key(r)) for r in items]
    new_ids = insert_or_ignore(session, StatusReport, rows, ["account", "dedupe_key"], returning=StatusReport.id)
    now = utcnow()
    stored = (
        set(session.execute(select(StatusReport.dedupe_key).where(StatusReport.id.in_(new_ids))).scalars())
        if new_ids
        else set()
    )
    for rep in items:  # keys already taken: a repeat, or a later send under a reused id?
        if rep.reported_at is None and rep.vendor_id and report_key(rep) not in stored:
            new_ids += _later_report(session, account, journal_id, rep, now)
    # A vendor can report faster than a worker records the send: the report reaches us
    # while its recipient is still 'queued' with no vendor id. Such reports are kept
    # unmatched and tried again at the next polls for a while, so none is lost to the race.
    recent_unmatched = (
        session.execute(
            select(StatusReport.id)
            .where(
                StatusReport.account == account,
                StatusReport.recipient_id.is_(None),
                StatusReport.delivered.is_not(None),
                StatusReport.created_at >= now - REMATCH_WINDOW,
                StatusReport.id.not_in(new_ids or [0]),
            )
            .order_by(StatusReport.id)
        )
        .scalars()
        .all()
    )
    changed = [
        rid
        for report_id in [*recent_unmatched, *new_ids]
        if (rid := _apply_report(session, account, session.get_one(StatusReport, report_id), now))
    ]
    return len(new_ids), changed


def _later_report(session: Session, account: str, journal_id: int, rep: Report, now) -> list[int]:
    """Store a timeless report whose key is taken if it is about a later send (module docstring)."""
    base = report_key(rep)
    again = f"{base[:140]}#r"  # + the recipient id it settles
    prior = (
        session.execute(
            select(StatusReport)
            .where(
                StatusReport.account == account,
                or_(StatusReport.dedupe_key == base, StatusReport.dedupe_key.startswith(again, autoescape=True)),
            )
            .order_by(StatusReport.id.desc())
        )
        .scalars()
        .all()
    )
    if not prior or any(p.journal_id == journal_id for p in prior):
        return []  # a re-parse, or twice in one body
    latest = prior[0]
    if latest.recipient_id is None and latest.created_at >= now - REMATCH_WINDOW:
        return []  # the stored one is still to be matched: it will settle the number
    waiting = session.execute(
        _sent_under(account, rep).where(Recipient.state.in_(AWAITING)).order_by(Recipient.id.desc()).limit(1)
    ).scalar_one_or_none()
    if (
        waiting is None
        or waiting.updated_at is None
        or waiting.updated_at <= latest.created_at
        or any(p.recipient_id == waiting.id for p in prior)
    ):
        return []  # a repeated page
    row = _report_row(account, journal_id, rep, f"{again}{waiting.id}")
    return insert_or_ignore(session, StatusReport, [row], ["account", "dedupe_key"], returning=StatusReport.id)


def _apply_report(session: Session, account: str, rep: StatusReport, now) -> int | None:
    """Settle the report's recipient; its id, or None when no recipient matches (yet)."""
    if rep.delivered is None:
        return None  # "no report yet": nothing to settle
    recipient = _match_send(session, account, Report(rep.vendor_id or "", rep.mobile, rep.delivered, rep.code))
    if recipient is None:
        return None  # kept in status_reports, unmatched
    if isinstance(recipient, EarlierSend):
        # The report is the earlier send's: kept there; the recipient row follows the resend.
        rep.recipient_id = recipient.recipient_id
        ledger.settle_by_report(session, recipient, rep, now)
        return None
    rep.recipient_id = recipient.id
    ledger.settle_by_report(session, recipient, rep, now)
    return recipient.id


def _store_blocked(session: Session, account: str, numbers: list[str]) -> int:
    if not numbers:
        return 0
    rows = [
        {
            "account": account,
            "mobile": fit(BlockedNumber.mobile, n),
            "reason": "reported blocked by the vendor",
            "source": "vendor",
            "created_at": utcnow(),
        }
        for n in dict.fromkeys(numbers)
    ]
    insert_or_ignore(session, BlockedNumber, rows, ["account", "mobile"])
    return len(rows)


def _store_balance(session: Session, account: str, balance: float, conf: Settings) -> None:
    row = session.get(AccountBalance, account)
    if row is None:
        session.add(AccountBalance(account=account, balance=balance, checked_at=utcnow()))
    else:
        row.balance, row.checked_at = balance, utcnow()
    threshold = conf.account(account).options.get("balance_alert")
    if threshold is not None and balance < threshold:
        log.warning("account %s: balance %s is under the alert threshold %s", account, balance, threshold)


def parse_journal(conf: Settings, journal_id: int) -> PollResult:
    """Parse one journal row into its tables (idempotent: unique keys)."""
    with session_scope(conf.database_url) as session:
        entry = session.get_one(PollJournal, journal_id)
        account, kind, body = entry.account, entry.kind, entry.body
    provider = provider_for(conf.account(account))
    result = PollResult(account, kind, "ok", journal_id)
    try:
        with session_scope(conf.database_url) as session:
            if kind == "inbound":
                messages = provider.parse_inbound(body)
                result.items = len(messages)
                result.new_inbound = _store_inbound(
                    session, account, journal_id, messages, conf.account(account).options
                )
            elif kind == "reports":
                reports = provider.parse_reports(body)
                result.items = len(reports)
                _, result.changed_recipients = _store_reports(session, account, journal_id, reports)
            elif kind == "blocked":
                numbers = provider.parse_blocked(body)
                result.items = _store_blocked(session, account, numbers)
            elif kind == "balance":
                _store_balance(session, account, provider.parse_balance(body), conf)
                result.items = 1
            page = provider.page_sizes.get(kind)
            result.full_page = bool(page and result.items >= page)
            session.execute(
                update(PollJournal)
                .where(PollJournal.id == journal_id)
                .values(state="parsed", items=result.items, error=None, parsed_at=utcnow())
            )
            _set_status(session, account, kind, "ok", items=result.items)
    except ProviderError as exc:  # the body is a vendor error code, not data
        result.outcome, result.detail = exc.outcome.value, f"{exc.code}: {exc}"
        with session_scope(conf.database_url) as session:
            session.execute(
                update(PollJournal)
                .where(PollJournal.id == journal_id)
                .values(state="vendor_error", error=result.detail, parsed_at=utcnow())
            )
            _set_status(session, account, kind, result.outcome, result.detail)
    except Exception as exc:  # a body we could not read: kept for --reparse
        result.outcome, result.detail = "failed", f"{type(exc).__name__}: {exc}"
        log.error(
            "journal %s (%s %s): could not parse, kept for `smsq poll --reparse`: %s",
            journal_id,
            account,
            kind,
            result.detail,
        )
        with session_scope(conf.database_url) as session:
            session.execute(
                update(PollJournal)
                .where(PollJournal.id == journal_id)
                .values(state="failed", error=fit(PollJournal.error, result.detail))
            )
            _set_status(session, account, kind, "failed", result.detail)
    return result


def _notify(result: PollResult) -> None:
    """The application's hooks, called with record ids only, after commit."""
    hooks = (
        ("SMSQ_ON_INBOUND", "inbound", result.new_inbound),
        ("SMSQ_ON_STATUS", "status", result.changed_recipients),
    )
    for env, what, ids in hooks:
        task = os.environ.get(env)
        if task and ids:
            get_app().send_task(task, args=[ids], queue=os.environ.get("SMSQ_HOOK_QUEUE", "smsq.hooks"))
            log.info("%s: %s new %s record(s) -> %s", result.account, len(ids), what, task)


def poll(account: str, kind: str, *, conf: Settings | None = None) -> PollResult:
    """One poll of ``account``'s ``kind`` endpoint, if its circuit and its lease allow it now."""
    conf = conf or knowing(account)  # beat may schedule an account added to the file since
    ensure_schema(conf)
    acct = conf.account(account)
    provider = provider_for(acct)
    if kind not in provider.poll_kinds:
        raise ValueError(
            f"account {account!r} ({acct.provider}) has no {kind!r} poll; "
            f"it has: {', '.join(sorted(provider.poll_kinds)) or 'none'}"
        )
    # The account's circuit first (tasks/circuit.py): a password the vendor refused is not
    # tried again on any endpoint until the cool-off is over, and then by one call only.
    admitted = circuit.admit_poll(conf, account, kind)
    if isinstance(admitted, circuit.Blocked):
        return PollResult(account, kind, HELD, detail=held_detail(admitted))
    family = provider.poll_family(kind)
    interval = max(provider.min_poll_interval, 1.0)
    with session_scope(conf.database_url) as session:
        if not leases.take(session, account, family, interval):
            wait = leases.free_in(session, account, family, interval)
            if admitted.probe:  # no call made: the next call probes
                circuit.give_back(conf, account, admitted)
            return PollResult(
                account, kind, "leased", retry_in=wait, detail=f"{family} window closed for {wait:.0f} s more"
            )
    try:
        result = _call(conf, provider, account, kind, family, interval)
    except BaseException:
        if admitted.probe:  # the probe ended without an answer (the database, a killed worker)
            with suppress(Exception):
                circuit.give_back(conf, account, admitted)
        raise
    decision = decide_poll(result.outcome, result.detail, kind, probe=admitted.probe)
    circuit.after_poll(conf, account, decision, admitted)
    return result


HELD = "held"  # a poll's outcome when the account's circuit is open: no call was made


def held_detail(blocked: circuit.Blocked) -> str:
    if blocked.state == "open":
        left = max(0.0, (blocked.until - utcnow()).total_seconds())
        return f"the account's circuit is open for {left:.0f} s more ({blocked.why})"
    return f"the account's circuit is half-open: another call is probing it ({blocked.why})"


def _call(conf: Settings, provider: Provider, account: str, kind: str, family: str, interval: float) -> PollResult:
    """Call the vendor under the lease just taken, journal the body, parse it, tell the hooks."""
    try:
        body = provider.fetch(kind)
    except ProviderError as exc:
        outcome = exc.outcome.value
        detail = f"{exc.code or ''} {exc}".strip()
        body = None
    with session_scope(conf.database_url) as session:
        leases.extend(session, account, family, interval)
        if body is None:
            _set_status(session, account, kind, outcome, detail)
            log.warning("poll %s %s: %s %s", account, kind, outcome, detail)
            return PollResult(account, kind, outcome, detail=detail)
        entry = PollJournal(account=account, kind=kind, body=body, fetched_at=utcnow(), state="fetched")
        session.add(entry)
        session.flush()
        journal_id = entry.id
    # The body is committed: from here on nothing that was fetched can be lost.
    result = parse_journal(conf, journal_id)
    _notify(result)
    if result.full_page:
        result.retry_in = interval + leases.MARGIN
    return result


def reparse(conf: Settings | None = None, *, account: str | None = None) -> list[PollResult]:
    """Parse again every journal row left 'failed' or 'fetched' (a crash before parsing)."""
    conf = conf or settings()
    ensure_schema(conf)
    with session_scope(conf.database_url) as session:
        q = select(PollJournal.id).where(PollJournal.state.in_(("failed", "fetched")))
        if account:
            q = q.where(PollJournal.account == account)
        ids = session.execute(q.order_by(PollJournal.id)).scalars().all()
    results = []
    for journal_id in ids:
        result = parse_journal(conf, journal_id)
        _notify(result)
        results.append(result)
    return results


def task_name(kind: str) -> str:
    """One readable task name per kind (Flower shows what is polled): smsq.poll_inbound, ..."""
    return f"smsq.poll_{kind}"


def publish_poll(account: str, kind: str, countdown: float | None = None, waits: int = 0) -> None:
    """Queue a poll, now or when its window opens. A broker countdown only ever covers a
    poll window's few seconds, at most MAX_COUNTDOWN: a later one is beat's next turn."""
    countdown = None if countdown is None else min(MAX_COUNTDOWN, countdown)
    get_app().send_task(
        task_name(kind),
        args=[account, waits],
        queue="smsq.poll",
        countdown=countdown,
        expires=(countdown or 0) + 300,
    )


UNREACHABLE = "unreachable"  # a poll task's outcome when the database or broker could not be reached


def run_poll_task(account: str, kind: str, waits: int = 0) -> str:
    try:
        result = poll(account, kind)
    except UnknownAccountError:  # beat's accounts file names it, this worker's does not (yet)
        log.warning("poll %s %s: not polled: %s", account, kind, why_unknown(settings(), account))
        return "unknown_account"
    except Exception as exc:
        service = unreachable_kind(exc)
        if service is None:
            raise
        # One line per poll, not a driver's traceback: beat polls again at the next turn.
        log.warning(
            "poll %s %s: cannot reach %s: %s; polled again at its next turn",
            account,
            kind,
            describe(service),
            first_line(exc),
        )
        return UNREACHABLE
    if result.outcome == HELD:
        # One line per skipped poll, saying why; beat's next turn polls again (the vendor
        # keeps what it has not handed out).
        log.info("poll %s %s: not polled: %s", account, kind, result.detail)
        return result.outcome
    if result.outcome == "leased" and waits < MAX_WAITS and result.retry_in is not None:
        # Another kind of the same family holds the window: come back when it opens.
        publish_poll(account, kind, countdown=result.retry_in + 0.5, waits=waits + 1)
    elif result.full_page:
        publish_poll(account, kind, countdown=result.retry_in or 31.0)
    log.info("poll %s %s: %s (%s items)", account, kind, result.outcome, result.items)
    return result.outcome


@smsq_task(name=task_name("inbound"), ignore_result=True)
def poll_inbound(account: str, waits: int = 0) -> str:
    return run_poll_task(account, "inbound", waits)


@smsq_task(name=task_name("reports"), ignore_result=True)
def poll_reports(account: str, waits: int = 0) -> str:
    return run_poll_task(account, "reports", waits)


@smsq_task(name=task_name("blocked"), ignore_result=True)
def poll_blocked(account: str, waits: int = 0) -> str:
    return run_poll_task(account, "blocked", waits)


@smsq_task(name=task_name("balance"), ignore_result=True)
def poll_balance(account: str, waits: int = 0) -> str:
    return run_poll_task(account, "balance", waits)


@smsq_task(name="smsq.reparse", ignore_result=True)
def reparse_task() -> int:
    return len(reparse())


__all__ = ["poll", "reparse", "parse_journal", "PollResult", "KINDS"]

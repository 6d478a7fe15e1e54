"""``preview_send``: what a send would do, with nothing written and nothing sent.

It takes send_sms's arguments and runs send_sms's own code up to the point of writing
(tasks/producer.py ``plan_send``, then the intake of tasks/intake.py with its rows
counted instead of written, the send policy's ``admission`` in its dry run), in a
read-only transaction: no batch row, no staged number, no broker message, no counter
of a cap or of the daily quota touched. A list streams through it as through send_sms,
a block at a time; what it holds besides is what send_sms holds (the set of unique
numbers seen, the rejected entries).

It reports the numbers that would be accepted, the rejected ones by reason, the
content as the vendor gets it with its characters and segments (70 characters in one
message, 67 each above that, signature included: providers/base.py ``segments``), the
vendor's maximum, the billable messages (numbers x segments), and the account's last
known balance (beat's balance poll, tasks/polls.py) against them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from smsq.providers.base import BEIJING, segments
from smsq.store.models import AccountBalance, Batch, utcnow
from smsq.worker.db import session_scope
from smsq.worker.kinds import DEFAULT_KIND
from smsq.worker.services import DatabaseUnreachableError

from . import quota
from .blocklist import OPTED_OUT
from .intake import count_rows, stage_chunks
from .personal import stage_personal
from .policy import admission, text_admission
from .producer import (
    NoValidNumbersError,
    SendPlan,
    _blocked,
    _fill,
    _keyed,
    _new_batch,
    _replay,
    nothing_to_send,
    personal_ask,
    plan_send,
)

# The kinds of refusal a preview counts (README, Preview before sending).
INVALID, BLOCKED, OPTED_OUT_REASON, CAPPED, DUPLICATE, OVER_QUOTA = (
    "invalid",
    "blocked",
    "opted out",
    "capped",
    "duplicate",
    "over quota",
)
BLOCKED_PREFIX = "blocked for this account: "


def reason_kind(reason: str) -> str:
    """Which kind of refusal a rejected number's reason is."""
    if reason.startswith(BLOCKED_PREFIX):
        return OPTED_OUT_REASON if reason[len(BLOCKED_PREFIX) :] == OPTED_OUT else BLOCKED
    if quota.is_quota_reason(reason):
        return OVER_QUOTA
    if reason.startswith("frequency cap"):
        return CAPPED
    if "duplicate" in reason or "same content" in reason or "same text" in reason:
        return DUPLICATE
    return INVALID  # the number itself: not a mobile number, a landline the vendor cannot take, ...


def billable(numbers: int, per_message: int) -> int:
    """Messages billed: each number gets every segment of the content."""
    return numbers * per_message


def balance_verdict(balance: float | None, needed: int) -> str:
    """``enough``, ``not enough`` or ``unknown`` (never polled, or a vendor with no balance
    call). Balances are in messages at every vendor that has one (docs/vendors)."""
    if balance is None:
        return "unknown"
    return "enough" if balance >= needed else "not enough"


@dataclass(frozen=True)
class Preview:
    account: str  # the account it would go to (a route's: the one it would choose now)
    kind: str
    lane: str
    accepted: int  # unique numbers that would be sent
    rejected: list[tuple[str, str]]  # (number as given, reason), as Receipt.rejected would hold them
    content: str  # as the vendor would get it: signature placed
    characters: int
    segments: int  # billed messages per number
    max_chars: int  # the vendor's maximum, signature included
    balance: float | None  # the last known balance in messages; None: unknown
    balance_checked_at: datetime | None  # naive UTC
    daily_quota: int | None
    quota_used: int | None  # numbers the account's sends took in today (Beijing day), before this one
    route: str | None = None
    replay_of: int | None = None  # the idempotency key names this batch: nothing new would be sent
    rejected_by: dict[str, int] = field(default_factory=dict)  # invalid, blocked, opted out, capped, ... -> count
    # Personal texts (tasks/personal.py): the messages billed, each number's text's segments
    # summed; then ``content`` is the template, and ``characters`` and ``segments`` the
    # longest text's. None: one text, accepted x segments.
    personal_billable: int | None = None

    @property
    def billable(self) -> int:
        if self.replay_of is not None:
            return 0
        if self.personal_billable is not None:
            return self.personal_billable
        return billable(self.accepted, self.segments)

    @property
    def balance_verdict(self) -> str:
        return balance_verdict(self.balance, self.billable)

    @property
    def sendable(self) -> bool:
        """send_sms would take it (False: it would raise NoValidNumbersError)."""
        return self.accepted > 0 or self.replay_of is not None

    def refusal(self) -> NoValidNumbersError | None:
        """The error send_sms would raise for this send; None: it would take it."""
        return None if self.sendable else nothing_to_send(self.rejected, self.account, self.daily_quota)

    def as_dict(self) -> dict[str, Any]:
        checked = self.balance_checked_at
        return {
            "dry_run": True,
            "account": self.account,
            "route": self.route,
            "kind": self.kind,
            "lane": self.lane,
            "accepted": self.accepted,
            "rejected_by": self.rejected_by,
            "rejected": self.rejected,
            "content": self.content,
            "characters": self.characters,
            "segments": self.segments,
            "max_chars": self.max_chars,
            "billable": self.billable,
            "balance": None if self.balance is None or self.balance == float("inf") else self.balance,
            "postpaid": self.balance == float("inf"),
            "balance_checked_at": None
            if checked is None
            else checked.replace(tzinfo=UTC).astimezone(BEIJING).isoformat(timespec="seconds"),
            "balance_verdict": self.balance_verdict,
            "daily_quota": self.daily_quota,
            "quota_used": self.quota_used,
            "replay_of": self.replay_of,
            "sendable": self.sendable,
            "personal": self.personal_billable is not None,
        }


def count_by_kind(rejected: Iterable[tuple[str, str]]) -> dict[str, int]:
    return dict(Counter(reason_kind(reason) for _, reason in rejected))


def preview_send(
    account: str,
    to: Iterable[str] | str | None = None,
    content: str | None = None,
    *,
    messages: Iterable[tuple[str, str]] | None = None,
    template: str | None = None,
    rows: Iterable[Mapping[str, object]] | None = None,
    send_at: datetime | None = None,
    idempotency_key: str | None = None,
    priority: bool | None = None,
    kind: str = DEFAULT_KIND,
    valid_for: timedelta | float | str | None = None,
) -> Preview:
    """What ``send_sms`` with these arguments would do, with nothing stored or sent. Raises
    what send_sms raises before it stores anything (unknown account, content the vendor
    cannot take, a bad kind or time, an idempotency key reused for another send); a list
    none of whose numbers can be sent is a Preview with ``sendable`` False (its
    ``refusal()`` is the error send_sms would raise). Personal texts (``messages``, or
    ``template`` with ``rows``) are checked row by row as send_sms checks them."""
    plan = plan_send(
        account,
        to,
        content,
        send_at=send_at,
        idempotency_key=idempotency_key,
        priority=priority,
        kind=kind,
        valid_for=valid_for,
        personal=personal_ask(to, content, messages, template, rows),
    )
    try:
        with session_scope(plan.conf.database_url, readonly=True) as session:
            return _dry_run(session, plan)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnreachableError(plan.conf.database_url, exc) from exc


def _dry_run(session: Session, plan: SendPlan) -> Preview:
    """send_sms's intake with its rows counted, not written; the policy's checks only look."""
    key, now = plan.idempotency_key, utcnow()
    if key is not None and (existing := _keyed(session, plan.target, key)):
        receipt = _replay(session, existing, plan.digest.finish(plan.numbers), key)
        return _preview(session, plan, receipt.accepted, receipt.rejected, receipt.lane, replay_of=existing.id)
    batch = _new_batch(plan.target, plan.account, plan.content, plan.prepared, plan.when, key, now, plan.kind)
    rejected: list[tuple[str, str]] = []
    if plan.texts is not None:
        return _dry_run_texts(session, plan, batch, rejected)
    admit = admission(session, plan.policy, batch, rejected, dry_run=True)
    cls = plan.provider_cls
    accepted, blocked = stage_chunks(
        session, None, plan.account, plan.numbers, cls.accepts_landline, cls.max_numbers, rejected, admit, count_rows
    )
    rejected.extend(_blocked(session, plan.account, blocked))
    _fill(batch, plan.conf, accepted, rejected, plan.priority)
    return _preview(session, plan, accepted, rejected, batch.lane)


def _dry_run_texts(session: Session, plan: SendPlan, batch: Batch, rejected: list[tuple[str, str]]) -> Preview:
    """``_dry_run`` for personal texts: their rows checked and grouped as send_sms would."""
    cls, policy = plan.provider_cls, plan.policy
    assert plan.texts is not None
    staged = stage_personal(
        session,
        None,
        plan.account,
        plan.numbers,
        plan.texts,
        cls.accepts_landline,
        cls.max_numbers,
        rejected,
        lambda refused: text_admission(session, policy, batch, refused, dry_run=True),
        write=count_rows,
    )
    rejected.extend(_blocked(session, plan.account, staged.blocked or set()))
    _fill(batch, plan.conf, staged.accepted, rejected, plan.priority)
    preview = _preview(session, plan, staged.accepted, rejected, batch.lane)
    return dataclasses.replace(
        preview,
        characters=staged.most_characters,
        segments=staged.most_segments,
        personal_billable=staged.billable,
    )


def _preview(
    session: Session, plan: SendPlan, accepted: int, rejected: list, lane: str, replay_of: int | None = None
) -> Preview:
    balance = session.get(AccountBalance, plan.account)
    daily_quota = plan.policy.daily_quota
    used = None
    if daily_quota is not None:
        counter = quota.counter_for(session, plan.policy.redis_url)
        used = counter.used(plan.account, quota.beijing_day(utcnow()))
    return Preview(
        account=plan.account,
        kind=plan.kind,
        lane=lane,
        accepted=accepted,
        rejected=rejected,
        content=plan.prepared,
        characters=len(plan.prepared),
        segments=segments(plan.prepared),
        max_chars=plan.provider_cls.max_chars,
        balance=None if balance is None else balance.balance,
        balance_checked_at=None if balance is None else balance.checked_at,
        daily_quota=daily_quota,
        quota_used=used,
        route=plan.target.route,
        replay_of=replay_of,
        rejected_by=count_by_kind(rejected),
    )


__all__ = ["preview_send", "Preview"]

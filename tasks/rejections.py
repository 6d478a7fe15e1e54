"""Numbers refused at intake, counted by reason for the ``smsq_rejected_total`` metric.

A refused number's reason is a sentence for people (``frequency cap 5/1h``, ``duplicate of
batch 123 within 30s``, ``blocked for this account: opted out``, an invalid number's
why); the metric counts it under one of REASONS, never the number or the sentence:

    invalid    not a number the vendor takes (format, length, landline, ...)
    blocked    the account blocked it (vendor blacklist, an operator)
    opted_out  its owner replied an unsubscribe keyword
    capped     over a per-number frequency cap (tasks/caps.py)
    duplicate  the same content within the duplicate window (tasks/duplicates.py)
    quota      over the account's daily quota

The counts are kept in ``rejection_counts`` (account, kind, reason), added to in a short
transaction of their own once the send is settled: stored, or refused whole (nothing of
it stored). A replayed idempotency key counts nothing again. A process that dies between
its send's commit and that transaction loses the send's count (never the send).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy.orm import Session

from smsq.store.models import RejectionCount
from smsq.store.sql import upsert_where

from .blocklist import OPTED_OUT

REASONS = ("invalid", "blocked", "opted_out", "capped", "duplicate", "quota")
BLOCKED_PREFIX = "blocked for this account: "
CAP_PREFIX = "frequency cap "
DUPLICATE_PREFIX = "duplicate of batch "
QUOTA_PREFIX = "daily quota "


def reason_class(reason: str) -> str:
    """Which of REASONS a refusal's reason falls under."""
    if reason.startswith(BLOCKED_PREFIX):
        return "opted_out" if reason[len(BLOCKED_PREFIX) :].startswith(OPTED_OUT) else "blocked"
    if reason.startswith(CAP_PREFIX):
        return "capped"
    if reason.startswith(DUPLICATE_PREFIX):
        return "duplicate"
    if reason.startswith(QUOTA_PREFIX):
        return "quota"
    return "invalid"


def tally(rejected: Iterable[tuple[str, str]]) -> Counter[str]:
    """Refused numbers per reason class."""
    return Counter(reason_class(reason) for _, reason in rejected)


def add_counts(session: Session, account: str, kind: str, counts: Counter[str]) -> None:
    """Add ``counts`` (reason class -> numbers) to the account's and kind's counters."""
    table = RejectionCount.__table__.c
    for reason, n in sorted(counts.items()):  # one order: two sends cannot deadlock
        upsert_where(
            session,
            RejectionCount,
            {"account": account, "kind": kind, "reason": reason, "numbers": n},
            keys=("account", "kind", "reason"),
            set_={"numbers": table.numbers + n},
            returning=table.reason,
        )

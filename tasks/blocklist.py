"""Each account's blocked numbers, which sends skip with the reason: what the
vendor reports (its blocked-number poll, and the numbers found to be why it refused a
whole call: tasks/narrowing.py), what operators add, and the numbers whose owner
replied with an unsubscribe keyword (opt-out).

An inbound reply opts out when the whole reply, trimmed, is one of the
account's ``optout_keywords`` (default DEFAULT_OPTOUT_KEYWORDS). Both sides are
compared after NFKC (full-width ``ＴＤ`` is ``TD``) and case folding (``td``
is ``TD``); "TD" inside a longer reply is not an opt-out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from smsq.providers.numbers import normalise
from smsq.store.models import BlockedNumber, utcnow
from smsq.store.sql import fit, insert_or_ignore, insert_or_update, rows_changed
from smsq.worker.config import Settings, settings
from smsq.worker.db import session_scope

from .schema import ensure_schema

# The replies Chinese carriers and vendors treat as unsubscribe (退订 = unsubscribe,
# 取消 = cancel, 退 = the one-character form; TD/T = the pinyin initials of 退订).
DEFAULT_OPTOUT_KEYWORDS = ("TD", "T", "退订", "取消", "退")
OPTED_OUT = "opted out"


def reply_key(text: str) -> str:
    """A reply as keywords are compared: NFKC, trimmed (full-width spaces too), case-folded."""
    return unicodedata.normalize("NFKC", text or "").strip().casefold()


def optout_keywords(options: Mapping[str, Any]) -> frozenset[str]:
    """The account's keywords, compared forms; an empty list in the config disables opt-out."""
    return frozenset(reply_key(k) for k in options.get("optout_keywords", DEFAULT_OPTOUT_KEYWORDS))


def _number(raw: str) -> str:
    number, _ = normalise(raw, landline=True)
    return number or fit(BlockedNumber.mobile, (raw or "").strip())  # a vendor's spelling we cannot read stays as given


def _upsert(session: Session, account: str, mobiles: Iterable[str], reason: str, source: str) -> int:
    rows = [
        {
            "account": account,
            "mobile": m,
            "reason": fit(BlockedNumber.reason, reason),
            "source": source,
            "created_at": utcnow(),
        }
        for m in dict.fromkeys(mobiles)
    ]
    if not rows:
        return 0
    insert_or_update(session, BlockedNumber, rows, ["account", "mobile"], update=["reason", "source", "created_at"])
    return len(rows)


def record_optouts(
    session: Session, account: str, options: Mapping[str, Any], replies: Iterable[tuple[str, str]]
) -> list[str]:
    """Block the numbers of the (mobile, content) replies that are an unsubscribe
    keyword; return them. Called with newly stored inbound messages only, so a
    re-parse never blocks again a number an operator has unblocked."""
    keywords = optout_keywords(options)
    if not keywords:
        return []
    numbers = [_number(mobile) for mobile, content in replies if reply_key(content) in keywords]
    _upsert(session, account, numbers, OPTED_OUT, "optout")
    return numbers


def block_refused(session: Session, account: str, mobiles: Iterable[str], reason: str) -> None:
    """Block the numbers the vendor refused a whole call over (tasks/narrowing.py), with why,
    as the vendor's (source ``vendor``); a number already on the list keeps its entry (an
    operator's reason, or the vendor's poll that named it first)."""
    rows = [
        {
            "account": account,
            "mobile": _number(m),
            "reason": fit(BlockedNumber.reason, reason),
            "source": "vendor",
            "created_at": utcnow(),
        }
        for m in dict.fromkeys(mobiles)
    ]
    insert_or_ignore(session, BlockedNumber, rows, ["account", "mobile"])


@dataclass(frozen=True)
class Blocked:
    account: str
    mobile: str
    reason: str
    source: str  # vendor | manual | optout
    created_at: datetime  # naive UTC


def blocked_numbers(account: str | None = None) -> Iterator[Blocked]:
    """The blocked numbers (of ``account``), by account and number, streamed."""
    conf = settings()
    if account is not None:
        conf.account(account)
    ensure_schema(conf)
    q = select(BlockedNumber).order_by(BlockedNumber.account, BlockedNumber.mobile)
    if account is not None:
        q = q.where(BlockedNumber.account == account)
    with session_scope(conf.database_url, readonly=True) as session:
        for b in session.execute(q.execution_options(yield_per=5000)).scalars():
            yield Blocked(b.account, b.mobile, b.reason, b.source, b.created_at)


def _checked(account: str, mobile: str) -> tuple[Settings, str]:
    conf = settings()
    conf.account(account)
    number, reason = normalise(mobile, landline=True)
    if number is None:
        raise ValueError(f"{mobile!r} is {reason}")
    ensure_schema(conf)
    return conf, number


def block_number(account: str, mobile: str, reason: str = "blocked by an operator") -> str:
    """Put a number on the account's blocked list (replacing an earlier reason); return it normalised."""
    conf, number = _checked(account, mobile)
    with session_scope(conf.database_url) as session:
        _upsert(session, account, [number], reason or "blocked by an operator", "manual")
    return number


def unblock_number(account: str, mobile: str) -> str:
    """Take a number off the account's blocked list; LookupError when it is not on it."""
    conf, number = _checked(account, mobile)
    with session_scope(conf.database_url) as session:
        removed = rows_changed(
            session.execute(
                delete(BlockedNumber).where(BlockedNumber.account == account, BlockedNumber.mobile == number)
            )
        )
    if not removed:
        raise LookupError(f"{number} is not blocked for account {account!r}")
    return number


__all__ = ["blocked_numbers", "block_number", "unblock_number", "Blocked", "DEFAULT_OPTOUT_KEYWORDS"]

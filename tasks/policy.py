"""The send policy: which rules a send is held to, and the places they apply.

A send is of one kind (``otp``, ``notice``, ``marketing``); its rules are the kind's
``[kinds.NAME]`` with its account's ``[accounts.NAME.kinds.KIND]`` applied, and the
account's ``daily_quota`` (worker/kinds.py parses them, ``Settings.kind_rules``
resolves them). Three places apply them:

* intake (``send_sms``, tasks/producer.py): ``admission`` gives the check each block of
  the list's valid, unique, unblocked numbers goes through before it is staged: per
  number caps, the duplicate guard, the daily quota. A number it refuses joins the
  receipt's ``rejected`` with the reason and is never sent;
* the worker's send path (tasks/send.py, before the vendor call): ``chunk_rules`` gives
  the rules of a claimed chunk (its batch's kind, the chunk's account): a send outside
  ``send_window`` (``window_hold``). ``valid_for`` is resolved once, at intake, into the
  batch's ``valid_until``, which every chunk of the batch is held to (tasks/validity.py);
* a preview (a dry run of a send): ``policy_for`` says what a send would be held to.

Send windows. A send due outside its kind's window waits, stored, for the next opening,
and no Celery ETA holds it: its chunks stay ``pending`` with ``next_attempt_at`` at the
opening, the way a scheduled send waits, and the relay releases them then. Intake gives
a batch due outside its window (now, or at its ``send_at``) that due time
(``window_opening``: no vendor call, nothing claimed); the worker checks again at the
claim, for a chunk whose window closed while it waited its turn (a campaign running at
the window's end, a retry due at night): it goes back to ``pending`` until the next
opening, its attempt not counted, its rate-limit slot given back, with the rest of its
message's group. The window is read from the configuration at each check: a window
narrowed since a batch was stored holds its chunks at their claim; one widened releases
chunks already waiting only at the opening they were given. ``window_wait`` says, for
``batch_status``, until when a batch waits for its window.

``admission`` composes one small check per rule, each in its own module: the frequency
caps count first (tasks/caps.py), then the duplicate guard (tasks/duplicates.py) guards
the numbers the caps admitted, then the daily quota (tasks/quota.py) counts what is left,
so a number refused for one reason is never counted by the next. With ``dry_run`` (a
preview) each check only looks: it counts nothing, reserves nothing, and still refuses
what it would refuse.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from smsq.providers.base import BEIJING
from smsq.store.ledger import ClaimedChunk
from smsq.store.ledger.claims import DUE_SLACK
from smsq.store.models import Batch
from smsq.worker.config import Settings, UnknownAccountError
from smsq.worker.kinds import KindRules, SendWindow, check_kind

# Admit: a block of numbers in, the ones admitted out (in the same order); a refused one
# is appended to the send's ``rejected`` as (number, reason) by the check itself.
from .caps import cap_check
from .duplicates import duplicate_check
from .intake import Admit
from .quota import quota_check


@dataclass(frozen=True)
class SendPolicy:
    """What a send of ``kind`` through ``account`` is held to."""

    account: str  # the account the batch goes to (a route's: the one it chose)
    kind: str
    rules: KindRules
    daily_quota: int | None  # numbers the account may send to per Beijing day; None: no quota
    redis_url: str | None = None  # where the counters shared by every host live; None: the database

    def describe(self) -> dict[str, Any]:
        return {"account": self.account, **self.rules.describe(), "daily_quota": self.daily_quota}


def policy_for(conf: Settings, account: str, kind: str) -> SendPolicy:
    """The policy of a send of ``kind`` through ``account`` (an account's name, not a
    route's). ValueError for an unknown kind, UnknownAccountError for an unknown account."""
    kind = check_kind(kind)
    return SendPolicy(
        account, kind, conf.kind_rules(account, kind), conf.daily_quota(account), redis_url=conf.redis_url
    )


def admission(
    session: Session, policy: SendPolicy, batch: Batch, rejected: list[tuple[str, str]], *, dry_run: bool = False
) -> Admit | None:
    """The check intake applies to each block of the batch's valid, unique numbers the
    account has not blocked (at most tasks/intake.py BLOCK at a time, in list order),
    inside the send's transaction: ``batch`` is the row being stored (its id may not be
    assigned yet on a short list, and is never assigned in a dry run). None: nothing to
    check, every number is admitted. The checks run in turn, each on what the one before
    admitted: the caps, the duplicate guard, the quota last, so that a number refused for
    another reason never counts. ``dry_run``: every check only looks (a preview): nothing
    is counted or guarded, and what would be refused is still reported."""
    rules = policy.rules
    written = inspect(batch).has_identity  # a short list's batch is not written yet (tasks/producer.py)
    checks = [
        cap_check(session, rules.per_number, policy.redis_url, rejected, dry_run=dry_run, long_list=written),
        duplicate_check(
            session,
            batch.content,
            lambda: batch.id or 0,
            rules.duplicate_window,
            policy.redis_url,
            rejected,
            dry_run=dry_run,
        ),
        quota_check(session, policy.account, policy.daily_quota, policy.redis_url, rejected, dry_run=dry_run),
    ]
    if not written and not dry_run and any(checks):
        # A short list's batch is written now, not after its numbers: a guarded number names
        # its id, and an idempotency race fails here, before anything is counted.
        session.add(batch)
        session.flush()
    return compose([check for check in checks if check is not None])


def text_admission(
    session: Session, policy: SendPolicy, batch: Batch, refused: list[tuple[str, str]], *, dry_run: bool = False
) -> Callable[[str, list[str]], list[str]] | None:
    """``admission`` for a send of personal texts (tasks/personal.py), whose written batch
    has a text per group of numbers: the check of one text's numbers. The caps and the
    quota count per number, whatever the text; the duplicate guard guards each text (the
    last ``GUARDED_TEXTS`` texts' checks kept). None: nothing to check."""
    rules = policy.rules
    caps = cap_check(session, rules.per_number, policy.redis_url, refused, dry_run=dry_run, long_list=True)
    quota = quota_check(session, policy.account, policy.daily_quota, policy.redis_url, refused, dry_run=dry_run)
    if caps is None and quota is None and not rules.duplicate_window:
        return None
    guards: OrderedDict[str, Admit | None] = OrderedDict()  # the oldest goes in O(1)

    def guard(text: str) -> Admit | None:
        if text not in guards:
            if len(guards) >= GUARDED_TEXTS:
                guards.popitem(last=False)
            guards[text] = duplicate_check(
                session, text, lambda: batch.id or 0, rules.duplicate_window, policy.redis_url, refused, dry_run=dry_run
            )
        return guards[text]

    def admit(text: str, mobiles: list[str]) -> list[str]:
        check = compose([c for c in (caps, guard(text), quota) if c is not None])
        return check(mobiles) if check is not None else mobiles

    return admit


GUARDED_TEXTS = 1024  # personal texts whose duplicate check is kept between blocks


def compose(checks: list[Admit]) -> Admit | None:
    """One check of ``checks`` in turn: a number goes on to the next only if admitted."""
    if not checks:
        return None

    def admit(mobiles: list[str]) -> list[str]:
        for check in checks:
            if not mobiles:
                break
            mobiles = check(mobiles)
        return mobiles

    return admit


def chunk_rules(conf: Settings, claimed: ClaimedChunk) -> KindRules:
    """The rules a claimed chunk is sent under: its batch's kind at the chunk's account
    (a chunk a route moved is held to the account that sends it)."""
    return conf.kind_rules(claimed.account, claimed.kind)


# -- send windows ---------------------------------------------------------------


def window_opening(rules: KindRules, due: datetime) -> datetime | None:
    """When a send due at ``due`` (naive UTC) waits for its window: the window's next
    opening (naive UTC); None when the kind has no window or the window holds ``due``."""
    window = rules.send_window
    if window is None or window.contains(due):
        return None
    return window.opens_after(due)


def window_hold(conf: Settings, claimed: ClaimedChunk, now: datetime) -> datetime | None:
    """The next opening of the claimed chunk's window when it was claimed outside it; None:
    it may be sent now. (A chunk is claimed up to ``DUE_SLACK`` before its due time, its
    countdown having run a little short: the caller waits that out, see ``SLACK``.)"""
    return window_opening(chunk_rules(conf, claimed), now)


SLACK = DUE_SLACK  # a chunk claimed this close to its window's opening waits for it in the worker


def batch_window(conf: Settings, batch: Batch) -> SendWindow | None:
    """The send window of the batch's kind at its account. A process that does not know
    the account (`smsq status` on a host without it) reads the kind's own window."""
    try:
        return conf.kind_rules(batch.account, batch.kind).send_window
    except UnknownAccountError:
        return conf.kinds[batch.kind].send_window


def window_wait(conf: Settings, batch: Batch, waiting: bool, now: datetime) -> datetime | None:
    """Until when the batch waits for its send window (naive UTC): the next opening, when
    some of it is still ``waiting`` to be sent (a chunk pending, numbers still to cut) and
    the window is closed at its due time (now, or its ``send_at`` ahead). None otherwise."""
    window = batch_window(conf, batch) if waiting else None
    if window is None:
        return None
    due = batch.send_at if batch.send_at is not None and batch.send_at > now else now
    return None if window.contains(due) else window.opens_after(due)


def opening_words(opening: datetime, now: datetime) -> str:
    """``08:00 +08:00`` (Beijing time), with the Beijing date when that is not today's:
    ``2026-12-04 08:00 +08:00``. Both naive UTC."""
    local = opening.replace(tzinfo=UTC).astimezone(BEIJING)
    today = now.replace(tzinfo=UTC).astimezone(BEIJING).date()
    clock = f"{local:%H:%M}" + (f":{local:%S}" if local.second else "") + " +08:00"
    return clock if local.date() == today else f"{local:%Y-%m-%d} {clock}"


def window_detail(window: SendWindow | None, opening: datetime, now: datetime) -> str:
    """What a chunk waiting for its window says (its detail, ``smsq send --wait``)."""
    named = f" {window} (Beijing time)" if window is not None else ""
    return f"waiting for the send window{named}, opens {opening_words(opening, now)}"

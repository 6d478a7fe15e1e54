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
  the rules of a claimed chunk (its batch's kind, the chunk's account): a code past
  ``valid_for``, a send outside ``send_window``;
* a preview (a dry run of a send): ``policy_for`` says what a send would be held to.

``admission`` composes one small check per rule, each in its own module (the daily
quota: tasks/quota.py). With ``dry_run`` (a preview) each check only looks: it counts
nothing, reserves nothing, and still refuses what it would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from smsq.store.ledger import ClaimedChunk
from smsq.store.models import Batch
from smsq.worker.config import Settings
from smsq.worker.kinds import KindRules, check_kind

# Admit: a block of numbers in, the ones admitted out (in the same order); a refused one
# is appended to the send's ``rejected`` as (number, reason) by the check itself.
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
    admitted; the quota last, so that a number refused for another reason never counts.
    ``dry_run``: every check only looks (a preview)."""
    quota = quota_check(session, policy.account, policy.daily_quota, policy.redis_url, rejected, dry_run=dry_run)
    return _compose([check for check in (quota,) if check is not None])


def _compose(checks: list[Admit]) -> Admit | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def admit(block: list[str]) -> list[str]:
        for check in checks:
            block = check(block) if block else block
        return block

    return admit


def chunk_rules(conf: Settings, claimed: ClaimedChunk) -> KindRules:
    """The rules a claimed chunk is sent under: its batch's kind at the chunk's account
    (a chunk a route moved is held to the account that sends it)."""
    return conf.kind_rules(claimed.account, claimed.kind)

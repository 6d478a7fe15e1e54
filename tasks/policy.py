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

At intake, the frequency caps count first (tasks/caps.py), then the duplicate guard
(tasks/duplicates.py) guards the numbers the caps admitted: a number a cap refused is
neither counted nor guarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from smsq.store.ledger import ClaimedChunk
from smsq.store.models import Batch
from smsq.worker.config import Settings
from smsq.worker.kinds import KindRules, check_kind

# Admit: a block of numbers in, the ones admitted out (in the same order); a refused one
# is appended to the send's ``rejected`` as (number, reason) by the check itself.
from .caps import cap_check
from .duplicates import duplicate_check
from .intake import Admit


@dataclass(frozen=True)
class SendPolicy:
    """What a send of ``kind`` through ``account`` is held to."""

    account: str  # the account the batch goes to (a route's: the one it chose)
    kind: str
    rules: KindRules
    daily_quota: int | None  # numbers the account may send to per Beijing day; None: no quota
    redis_url: str | None = None  # where caps and the duplicate guard count; None: the database

    def describe(self) -> dict[str, Any]:
        return {"account": self.account, **self.rules.describe(), "daily_quota": self.daily_quota}


def policy_for(conf: Settings, account: str, kind: str) -> SendPolicy:
    """The policy of a send of ``kind`` through ``account`` (an account's name, not a
    route's). ValueError for an unknown kind, UnknownAccountError for an unknown account."""
    kind = check_kind(kind)
    return SendPolicy(account, kind, conf.kind_rules(account, kind), conf.daily_quota(account), conf.redis_url)


def admission(
    session: Session, policy: SendPolicy, batch: Batch, rejected: list[tuple[str, str]], *, dry_run: bool = False
) -> Admit | None:
    """The check intake applies to each block of the batch's valid, unique numbers the
    account has not blocked (at most tasks/intake.py BLOCK at a time, in list order),
    inside the send's transaction: ``batch`` is the row being stored. None: nothing to
    check, every number is admitted. With ``dry_run`` each check only looks: nothing is
    counted or guarded, and what would be refused is still reported."""
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
    ]
    if not written and not dry_run and any(checks):
        # A short list's batch is written now, not after its numbers: a guarded number names
        # its id, and an idempotency race fails here, before anything is counted.
        session.add(batch)
        session.flush()
    return compose([check for check in checks if check is not None])


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

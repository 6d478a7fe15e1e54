"""The producer API: ``send_sms`` and ``batch_status``.

``send_sms`` validates everything it can before any vendor is involved and, in
one transaction, writes the batch, its rejected entries and its numbers, staged
in vendor-sized chunks by the bulk path of the database (tasks/intake.py). A
batch of an account whose vendor groups a batch's calls by a stamp of its own
(orgws Timestamp) takes its stamp last in that transaction (store/stamps.py).
After that transaction commits it publishes (a transactional outbox: nothing is
published that the database does not hold, and a crash in between leaves work
the relay publishes):

* a small batch (up to ``SMSQ_PRIORITY_MAX`` numbers: an OTP) gets its chunk
  and recipient rows in the same transaction, written directly rather than
  staged, and its ``send_chunk`` tasks are published directly, which saves the
  hop through a split job;
* a batch of kind ``otp`` takes the priority lane, whatever its size;
* a larger batch gets one ``smsq.split_batch(batch_id)`` job: a worker cuts the
  chunk and recipient rows and publishes the chunk tasks (tasks/split.py).

A broker that refuses or never answers costs a few seconds, not a hang: the
batch is safe, the receipt says ``queued=False`` and the relay publishes it.

A route name (``[routes.NAME]``) is accepted wherever an account name is: the
batch goes to the route's first account that can send (tasks/routes.py).

Every batch is of one message kind (``otp``, ``notice``, ``marketing``; worker/kinds.py),
kept on the batch; the send policy of its kind and account (tasks/policy.py) checks the
numbers as they are taken in.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from smsq.providers import Provider, provider_class
from smsq.providers.base import BEIJING, segments
from smsq.store import stamps
from smsq.store.ledger import cut, write_rejected, write_short
from smsq.store.lifecycle import ChunkState, RecipientState
from smsq.store.models import Batch, Chunk, Recipient, SplitJob, utcnow
from smsq.worker.config import Settings, knowing, settings
from smsq.worker.db import session_scope
from smsq.worker.kinds import DEFAULT_KIND, check_kind
from smsq.worker.services import DatabaseUnreachableError, database_reached

from . import quota, routes, validity
from .idempotency import BodyDigest, check_replay
from .intake import Admit, blocked_reasons, chunk_short_list, stage_chunks
from .personal import Entry, Texts, from_messages, from_rows, stage_personal, stored_rejections
from .policy import SendPolicy, admission, policy_for, text_admission, window_opening, window_wait
from .publish import publish_chunk_rows, publish_split
from .refusals import NONE as NO_REFUSALS
from .refusals import Refused, refused_of
from .rejections import add_counts, tally
from .schema import ensure_schema
from .split import staged_counts
from .templates import Template

log = logging.getLogger("smsq.producer")

FINAL_CHUNK_STATES = (
    ChunkState.ACCEPTED,
    ChunkState.FAILED,
    ChunkState.UNKNOWN,
    ChunkState.CANCELLED,
    ChunkState.MOVED,
    ChunkState.NARROWED,
    ChunkState.EXPIRED,
)
PAST_GRACE = timedelta(minutes=5)  # a send_at further back than this is a mistake, not "now"


class NoValidNumbersError(ValueError):
    """Not one number of the list can be sent: nothing was stored."""

    def __init__(self, rejected: list[tuple[str, str]], message: str | None = None):
        self.rejected = rejected
        super().__init__(message or self.describe(rejected))

    @staticmethod
    def describe(rejected: list[tuple[str, str]]) -> str:
        if not rejected:
            return "no number to send: the list is empty"
        shown = "; ".join(f"{number!r}: {reason}" for number, reason in rejected[:3])
        more = f" (and {len(rejected) - 3} more)" if len(rejected) > 3 else ""
        return f"no valid number to send; {len(rejected)} rejected: {shown}{more}"


def nothing_to_send(rejected: list[tuple[str, str]], account: str, daily_quota: int | None) -> NoValidNumbersError:
    """The error of a send none of whose numbers can be sent. When the daily quota refused
    some, it says so first: the other numbers of a list are seldom the point then."""
    over = sum(1 for _, why in rejected if quota.is_quota_reason(why))
    if not over:
        return NoValidNumbersError(rejected)
    others = len(rejected) - over
    return NoValidNumbersError(
        rejected,
        f"account {account} has reached its daily quota of {daily_quota} numbers for "
        f"today (Beijing time; it starts again at 00:00 +08:00): nothing was stored; {over} number(s) "
        f"over the quota" + (f", {others} rejected for other reasons" if others else ""),
    )


@dataclass(frozen=True)
class Receipt:
    batch_id: int
    accepted: int  # unique valid numbers that will be sent
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (number as given, reason)
    segments: int = 1  # billed messages per recipient
    lane: str = "bulk"
    replayed: bool = False  # True: the idempotency key named an existing batch; nothing new was sent
    queued: bool = True  # False: the broker did not take the batch's task(s); it is stored and the relay
    # publishes it when the broker answers again
    kind: str = DEFAULT_KIND  # the message kind: otp, notice, marketing
    valid_until: datetime | None = None  # naive UTC: numbers not sent by then are not sent (expired); None: no limit
    # Messages billed for the accepted numbers: accepted x segments for one text; for personal
    # texts the sum of each number's (``segments`` is then the longest text's)
    billable: int = 0


@dataclass(frozen=True)
class BatchStatus:
    batch_id: int
    account: str
    accepted: int
    rejected: int
    recipients: dict[str, int]  # recipient state -> count (numbers still to be split count as queued)
    chunks: dict[str, int]  # chunk state -> count
    to_split: int = 0  # chunks a worker has still to cut from the staged numbers
    route: str | None = None  # the failover route it was sent through
    by_account: dict[str, dict[str, int]] = field(default_factory=dict)  # account -> recipient state -> count
    send_at: datetime | None = None  # the batch's schedule (naive UTC), None: sent at once
    scheduled: bool = False  # its time has not come: nothing of it has gone to the vendor
    refused: Refused = NO_REFUSALS  # numbers vendors refused in answers that took the rest (tasks/refusals.py)
    kind: str = DEFAULT_KIND  # the message kind: otp, notice, marketing
    # The next opening of its kind's send window (naive UTC) while some of it waits for the
    # window to open (tasks/policy.py window_wait); None: it does not wait for one.
    waiting_for_window_until: datetime | None = None
    valid_until: datetime | None = None  # naive UTC: its validity (valid_for) ends then; None: no limit

    @property
    def final(self) -> bool:
        """Every chunk is made and has an outcome (accepted, failed, unknown, cancelled, moved
        to another account, narrowed into new chunks, or expired)."""
        return not self.to_split and all(state in FINAL_CHUNK_STATES for state in self.chunks)

    @property
    def clean(self) -> bool:
        """Final with nothing failed, unknown or expired, and no number a vendor refused by
        count only still to be told apart (``refused.open``): one of the ``sent`` is not."""
        r = self.recipients
        return (
            self.final
            and not r.get(RecipientState.FAILED)
            and not r.get(RecipientState.UNKNOWN)
            and not r.get(RecipientState.EXPIRED)
            and not (self.refused.open)
        )

    def as_dict(self) -> dict:
        return {
            "batch_id": self.batch_id,
            "account": self.account,
            "kind": self.kind,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "recipients": self.recipients,
            "chunks": self.chunks,
            "to_split": self.to_split,
            "final": self.final,
            "clean": self.clean,
            "refused": self.refused.as_dict(),
            "route": self.route,
            "by_account": self.by_account,
            "scheduled": self.scheduled,
            # ISO 8601 in Beijing time, as the command line prints every time
            "send_at": _iso(self.send_at),
            "waiting_for_window_until": _iso(self.waiting_for_window_until),
            "valid_until": _iso(self.valid_until),
        }


def _iso(value: datetime | None) -> str | None:
    """A stored time (naive UTC) as ISO 8601 in Beijing time; None stays None."""
    return None if value is None else validity.clock(value)


def _numbers(to: Iterable[str] | str | bytes | None) -> Iterator[str]:
    """The entries of ``to``, read lazily. A ``to`` that holds no numbers at all (None, a
    number instead of a list) raises ValueError here, before anything is read or stored."""
    if isinstance(to, (str, bytes)):
        # One string of numbers: "138…,139…" — never iterate it character by character.
        to = to.decode() if isinstance(to, bytes) else to
        return (n for n in re.split(r"[,;\s]+", to) if n)
    try:
        items = iter(to)  # type: ignore[arg-type]  # None (or a number) is the TypeError below
    except TypeError:
        raise ValueError(
            f"to must be the numbers to send to (a list or any iterable of strings, or one "
            f"comma-separated string), not {to!r:.40}"
        ) from None
    return _entries(items)


def _entries(items: Iterator) -> Iterator[str]:
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if item == "" or item is None:
            continue  # blank lines of a file
        yield item


def _when(send_at: datetime | None) -> datetime | None:
    """Naive datetimes are Beijing time (the vendors' clock); stored as naive UTC.
    A time more than five minutes past is refused: sending it "now" would surprise
    whoever typed last year's date."""
    if send_at is None:
        return None
    if not isinstance(send_at, datetime):
        raise TypeError("send_at must be a datetime")
    if send_at.tzinfo is None:
        send_at = send_at.replace(tzinfo=BEIJING)
    if send_at < datetime.now(UTC) - PAST_GRACE:
        raise ValueError(
            f"send_at {send_at.astimezone(BEIJING):%Y-%m-%d %H:%M:%S} (Beijing time) is in the "
            f"past; leave it out to send now"
        )
    return send_at.astimezone(UTC).replace(tzinfo=None)


def _intake(
    session: Session,
    batch: Batch,
    numbers: Iterator[str],
    landline: bool,
    size: int,
    rejected: list[tuple[str, str]],
    admit: Admit | None,
    admit_queries: bool = True,
) -> int:
    """Stage the numbers in chunks of ``size``; blocked ones join ``rejected``, and so do those
    the send policy's ``admit`` refuses (``admit_queries``: it counts in the database, not in
    Redis). Return how many were accepted."""
    accepted, blocked = stage_chunks(
        session, batch.id, batch.account, numbers, landline, size, rejected, admit, admit_queries=admit_queries
    )
    rejected.extend(_blocked(session, batch.account, blocked))
    return accepted


def _blocked(session: Session, account: str, blocked: set[str]) -> list[tuple[str, str]]:
    """The receipt's entries for the account's blocked numbers found (no query when none)."""
    return [
        (mobile, f"blocked for this account: {reason}") for mobile, reason in blocked_reasons(session, account, blocked)
    ]


def _fill(batch: Batch, conf, accepted: int, rejected: list, priority: bool | None) -> None:
    """The batch's counts and lane, once its numbers are known."""
    batch.accepted, batch.rejected = accepted, len(rejected)
    if priority is None:
        batch.lane = "priority" if accepted <= conf.priority_max else "bulk"
    else:
        batch.lane = "priority" if priority else "bulk"


def _publish(conf, batch_id: int, lane: str, account: str, inline: list | None) -> bool:
    """After commit: the chunk tasks of a batch cut inline, or its split job. False: the broker
    did not take it all (the relay will)."""
    if inline is not None:
        return publish_chunk_rows(conf, batch_id, inline) == len(inline)
    return publish_split(conf, batch_id, lane, account)


def _replay(session: Session, batch: Batch, digest: str, key: str) -> Receipt:
    """The receipt of the batch ``key`` names, if it was asked for the same thing."""
    check_replay(batch.body_digest, digest, key, batch.id)
    rejected = session.execute(
        select(Recipient.mobile, Recipient.detail)
        .where(Recipient.batch_id == batch.id, Recipient.state == RecipientState.REJECTED)
        .order_by(Recipient.id)
    ).all()
    return Receipt(
        batch.id,
        batch.accepted,
        [(m, d or "") for m, d in rejected],
        batch.segments,
        batch.lane,
        replayed=True,
        kind=batch.kind,
        valid_until=batch.valid_until,
        billable=batch.accepted * batch.segments,  # personal texts: at most this
    )


@dataclass
class _Storing:
    """What send_sms's transaction needs to store a batch's numbers."""

    conf: Settings
    provider_cls: type[Provider]
    policy: SendPolicy  # the rules of the batch's kind at its account
    digest: BodyDigest
    numbers: Iterator  # the rest of the list (or of the rows), past the short head already read
    priority: bool | None
    # A scheduled chunk waits in the database until the relay releases it at its time, at
    # every vendor: one with a send-time parameter of its own too, which would take the
    # chunk out of smsq's hands at once, beyond `smsq cancel` and with a status that says
    # "sent" hours early (no vendor can call a scheduled send back). See tasks/relay.py.
    not_before: datetime | None
    now: datetime
    rejected: list[tuple[str, str]]
    texts: Texts | None = None  # a send of personal texts: each text prepared for the account
    billable: int = 0  # set by the store: messages billed for the accepted numbers


def _store_short(session: Session, storing: _Storing, batch: Batch, short: list) -> tuple[int, list]:
    """A short list (an OTP): its chunk and recipient rows are written directly and its
    chunk is published by send_sms; a split job would add a broker round trip and a worker
    pick-up before its send is even published. Five round trips in all, the batch's row
    written once with what it will hold; under the duplicate guard or a cap (the send
    policy's ``admission``) the row is written first, as a guarded number names it, and
    completed at the end (one more), with the guard's own statement without Redis.
    Returns the numbers accepted and the chunks to publish."""
    cls = storing.provider_cls
    admit = admission(session, storing.policy, batch, storing.rejected)
    rows, blocked = chunk_short_list(
        session, batch.account, short, cls.accepts_landline, cls.max_numbers, storing.rejected, admit
    )
    storing.rejected.extend(_blocked(session, batch.account, blocked))
    accepted = sum(size for _, size, _ in rows)
    if not accepted:
        raise nothing_to_send(
            storing.rejected, storing.policy.account, storing.policy.daily_quota
        )  # nothing was written
    _fill(batch, storing.conf, accepted, storing.rejected, storing.priority)
    batch.body_digest = storing.digest.finish(storing.numbers)  # the list was short: read to its end
    session.add(batch)
    session.flush()  # the id; and an idempotency race fails here, early
    return accepted, write_short(session, batch, rows, not_before=storing.not_before, now=storing.now)


def _store_long(session: Session, storing: _Storing, batch: Batch, short: list) -> tuple[int, list | None]:
    """A longer list: staged for a split job, or cut here when few of its numbers are left
    (repeats, invalid entries). Returns the numbers accepted and the chunks to publish
    (None: the split job publishes them)."""
    cls, conf, now = storing.provider_cls, storing.conf, storing.now
    session.add(batch)
    session.flush()  # the id; and an idempotency race fails here, early
    admit = admission(session, storing.policy, batch, storing.rejected)
    numbers = itertools.chain(short, storing.numbers)
    in_db = storing.policy.redis_url is None  # the policy's checks count in the database between blocks
    accepted = _intake(
        session, batch, numbers, cls.accepts_landline, cls.max_numbers, storing.rejected, admit, admit_queries=in_db
    )
    if not accepted:
        raise nothing_to_send(
            storing.rejected, storing.policy.account, storing.policy.daily_quota
        )  # rolls the batch back: an empty batch is no batch
    _fill(batch, conf, accepted, storing.rejected, storing.priority)
    batch.body_digest = storing.digest.finish(storing.numbers)  # the intake read the list to its end
    session.flush()
    if accepted <= conf.priority_max:
        # Few numbers in a long list: cut here as a short one is.
        return accepted, cut(session, batch, limit=None, not_before=storing.not_before, now=now).published
    session.add(SplitJob(batch_id=batch.id, not_before=storing.not_before, queued_at=now, created_at=now))
    return accepted, None


def _store_personal(session: Session, storing: _Storing, batch: Batch, short: list) -> tuple[int, list | None]:
    """A send of personal texts (tasks/personal.py): its rows staged, grouped by text, then
    cut here (few numbers) or by a split job, as a long list is."""
    cls, conf, policy, texts = storing.provider_cls, storing.conf, storing.policy, storing.texts
    assert texts is not None
    session.add(batch)
    session.flush()  # the id; and an idempotency race fails here, early
    staged = stage_personal(
        session,
        batch.id,
        batch.account,
        itertools.chain(short, storing.numbers),
        texts,
        cls.accepts_landline,
        cls.max_numbers,
        storing.rejected,
        lambda refused: text_admission(session, policy, batch, refused),
        admit_queries=policy.redis_url is None,
    )
    storing.rejected.extend(_blocked(session, batch.account, staged.blocked or set()))
    if not staged.accepted:
        raise nothing_to_send(storing.rejected, policy.account, policy.daily_quota)  # rolls the batch back
    _fill(batch, conf, staged.accepted, storing.rejected, storing.priority)
    batch.segments, storing.billable = staged.most_segments, staged.billable
    batch.body_digest = storing.digest.finish(storing.numbers)
    session.flush()
    if staged.accepted <= conf.priority_max:
        return staged.accepted, cut(
            session, batch, limit=None, not_before=storing.not_before, now=storing.now
        ).published
    session.add(
        SplitJob(batch_id=batch.id, not_before=storing.not_before, queued_at=storing.now, created_at=storing.now)
    )
    return staged.accepted, None


def _new_batch(
    target: routes.Target,
    account: str,
    given: str,
    prepared: str,
    when: datetime | None,
    idempotency_key: str | None,
    now: datetime,
    kind: str,
    valid_until: datetime | None = None,
) -> Batch:
    """The batch row of a send, in the bulk lane until its size decides. Sent through a
    route, it keeps the content as given: a failover prepares it again for the next account."""
    return Batch(
        account=account,
        content=prepared,
        send_at=when,
        idempotency_key=idempotency_key,
        lane="bulk",
        segments=segments(prepared),
        created_at=now,
        route=target.route,
        given_content=given if target.route else None,
        kind=kind,
        valid_until=valid_until,
    )


def _log_receipt(receipt: Receipt, account: str, route: str | None) -> None:
    log.info(
        "batch %s: %s %s accepted, %s rejected, lane %s, account %s%s",
        receipt.batch_id,
        receipt.kind,
        receipt.accepted,
        len(receipt.rejected),
        receipt.lane,
        account,
        f" (route {route})" if route else "",
    )


@dataclass
class SendPlan:
    """A send checked as far as it can be before the database is involved: where it goes,
    what the vendor gets, the rules it is held to, and its numbers, still unread. send_sms
    stores it; preview_send (tasks/preview.py) runs it dry."""

    conf: Settings
    target: routes.Target
    account: str  # the account it goes to (a route's: the one it chose)
    provider_cls: type[Provider]
    content: str  # as given
    prepared: str  # as the vendor gets it: signature placed, length and charset checked
    when: datetime | None  # send_at, naive UTC
    idempotency_key: str | None
    priority: bool | None
    kind: str
    policy: SendPolicy
    digest: BodyDigest
    valid_seconds: float | None  # valid_for resolved (the kind's default applied); None: no limit
    texts: Texts | None = None  # a send of personal texts: ``numbers`` are its rows (tasks/personal.py)
    numbers: Iterator = field(init=False)  # read lazily, through the digest (set by plan_send)


@dataclass(frozen=True)
class PersonalAsk:
    """What a send of personal texts asks for: its rows, and what its batch shows as its
    content (the template; empty for ``messages=``), which is never sent."""

    shown: str
    entries: Iterator[Entry]


def personal_ask(to, content, messages, template, rows) -> PersonalAsk | None:
    """The personal texts a send asks for; None: one text to the numbers of ``to``.
    ValueError for arguments that do not go together (TemplateError, a ValueError, for a
    template that is not one)."""
    if messages is None and template is None and rows is None:
        if to is None and content is None:
            raise ValueError(
                "give the numbers and the text (to=, content=), or a text per number "
                "(messages=[(mobile, content), ...], or template= with rows=)"
            )
        return None
    if to is not None or content is not None:
        raise ValueError(
            "to= with content= sends one text; messages= or template= with rows= a text per number: not both"
        )
    if messages is not None:
        if template is not None or rows is not None:
            raise ValueError("give messages= or template= with rows=, not both")
        return PersonalAsk("", from_messages(_items(messages, "messages", "(mobile, content) pairs")))
    if template is None or rows is None:
        raise ValueError("template= and rows= go together: each row fills the template's variables")
    parsed = Template(template)
    return PersonalAsk(template, from_rows(parsed, _items(rows, "rows", "mappings of mobile and variables")))


def _items(given, name: str, what: str) -> Iterator:
    """``given`` read lazily; ValueError when it is no list of rows at all."""
    if isinstance(given, (str, bytes, Mapping)):
        raise ValueError(f"{name} must be {what}, not one {type(given).__name__}")
    try:
        return iter(given)
    except TypeError:
        raise ValueError(f"{name} must be {what} (a list or any iterable), not {given!r:.40}") from None


def plan_send(
    account: str,
    to: Iterable[str] | str | None,
    content: str | None,
    *,
    send_at: datetime | None = None,
    idempotency_key: str | None = None,
    priority: bool | None = None,
    kind: str = DEFAULT_KIND,
    valid_for: timedelta | float | str | None = None,
    personal: PersonalAsk | None = None,
) -> SendPlan:
    """Check everything a send can be checked for before the database (send_sms's arguments
    and errors), then make sure the database has smsq's tables. ``personal``: a send of
    personal texts (``to`` and ``content`` unused), whose rows are checked as they stream."""
    priority = _lane_of(check_kind(kind), priority)
    conf = knowing(account)  # an account added to the file since this process read it is known
    # -- failover routes: a route name takes its first account that can send --
    target = routes.choose_account(conf, account)
    acct = conf.account(target.account)
    provider_cls = provider_class(acct.provider)
    provider = provider_cls(acct, client=None)
    given = "" if content is None else content  # no content: ContentError, "content is empty"
    if personal is None:
        prepared = provider.prepare_content(given)
    elif target.route is not None:
        # A failover moves a chunk's numbers with one text prepared again for the next
        # vendor (tasks/routes.py); a chunk of personal texts has no one text to move.
        raise ValueError(f"{account} is a route: a send of personal texts goes to one account")
    else:
        given = prepared = personal.shown
    when = _when(send_at)
    _check_key(idempotency_key)
    policy = policy_for(conf, acct.name, kind)
    valid_seconds = validity.validity_seconds(valid_for, policy.rules.valid_for)
    # What was asked, hashed as the numbers stream by (tasks/idempotency.py); a validity
    # left to the kind's default adds nothing, so digests stored before it still match.
    asked = given if personal is None else f"personal\0{given}"
    digest = BodyDigest(asked, when, kind, None if valid_for is None else valid_seconds or 0)
    numbers = digest.through(_numbers(to) if personal is None else personal.entries)
    with database_reached(conf.database_url):
        ensure_schema(conf)
    plan = SendPlan(
        conf,
        target,
        acct.name,
        provider_cls,
        given,
        prepared,
        when,
        idempotency_key,
        priority,
        kind,
        policy,
        digest,
        valid_seconds,
        Texts(provider) if personal is not None else None,
    )
    plan.numbers = numbers
    return plan


def send_sms(
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
) -> Receipt:
    """Queue ``content`` for every number in ``to`` through ``account``.

    Raises ``UnknownAccountError`` for an account not in the config,
    ``ContentError`` (a ``ValueError``) for content the account cannot send, and
    ``NoValidNumbersError`` (a ``ValueError``) when not one number can be sent —
    then nothing is stored. Otherwise invalid and blocked numbers do not raise:
    they come back in ``Receipt.rejected`` with the reason. With ``idempotency_key``, a second
    call with the same key returns the first batch's receipt and sends nothing.
    ``priority`` forces the lane; by default batches of up to
    ``SMSQ_PRIORITY_MAX`` numbers (100) take the priority lane.
    ``kind`` is the message kind, ``"otp"``, ``"notice"`` (the default) or ``"marketing"``,
    whose rules (README, Message kinds) the send is held to; an ``otp`` always takes the
    priority lane. Another kind, or an ``otp`` with ``priority=False``, is a ValueError.
    ``valid_for`` is how long the send is worth making (a ``timedelta``, seconds, or a
    duration such as ``"5m"``; ``0``: no limit), counted from now, or from ``send_at`` for a
    scheduled send; by default the kind's (an ``otp``: 5 minutes). Numbers not sent by then
    are never sent: they end ``expired``. A value that is none of these is a ValueError.
    ``preview_send`` (tasks/preview.py) takes the same arguments and stores nothing.

    A text per number, in one batch (tasks/personal.py), instead of ``to`` and ``content``:
    ``messages``, ``(mobile, content)`` pairs; or ``template`` (``{name}`` variables) with
    ``rows``, mappings holding ``mobile`` and the variables. Each row is checked on its own:
    a bad one is in ``Receipt.rejected`` as (number as given, ``"row N: why"``), the good
    ones go; numbers whose texts come out the same share vendor calls. Not through a route.
    """
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
    conf, target, key = plan.conf, plan.target, idempotency_key
    try:
        receipt, inline = _store(plan)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnreachableError(conf.database_url, exc) from exc
    except NoValidNumbersError as exc:
        _count_rejected(conf, plan.account, plan.kind, exc.rejected)
        raise
    except IntegrityError:
        if key is None:
            raise
        # Another caller created the batch for this key between our check and insert.
        with database_reached(conf.database_url), session_scope(conf.database_url) as session:
            if (existing := _keyed(session, target, key)) is None:
                raise  # the key is free: the conflict was another one
            return _replay(session, existing, plan.digest.finish(plan.numbers), key)
    if receipt.replayed:  # nothing new to publish
        return receipt
    return _settle(conf, receipt, plan.account, target.route, inline)


def _settle(conf: Settings, receipt: Receipt, account: str, route: str | None, inline: list | None) -> Receipt:
    """After a batch's commit: publish it, count its refusals, log it."""
    if not _publish(conf, receipt.batch_id, receipt.lane, account, inline):
        receipt = dataclasses.replace(receipt, queued=False)
    _count_rejected(conf, account, receipt.kind, receipt.rejected)
    _log_receipt(receipt, account, route)
    return receipt


def _count_rejected(conf: Settings, account: str, kind: str, rejected: list[tuple[str, str]]) -> None:
    """Add a settled send's refusals to ``smsq_rejected_total`` (tasks/rejections.py), in a
    transaction of their own. A count that cannot be written is logged, never raised: the
    send itself is settled, and a caller told otherwise would send it again."""
    if not rejected:
        return
    try:
        with session_scope(conf.database_url) as session:
            add_counts(session, account, kind, tally(rejected))
    except (OperationalError, InterfaceError) as exc:
        log.warning("refusals of a send to %s not counted: %s", account, type(exc).__name__)


def _not_before(when: datetime | None, now: datetime, policy: SendPolicy) -> datetime | None:
    """When the batch's chunks are due, if not now (see _Storing.not_before): its schedule,
    or the next opening of its kind's send window when that is closed at its due time. A
    campaign stored at night waits, stored, for the morning, without a vendor call."""
    due = when if when is not None and when > now else None
    return window_opening(policy.rules, due or now) or due


def _store(plan: SendPlan) -> tuple[Receipt, list | None]:
    """send_sms's transaction: the batch and its numbers stored, and the chunks to publish
    (None: the split job publishes them); or the receipt of the batch the idempotency key names."""
    conf, key, acct = plan.conf, plan.idempotency_key, plan.account
    now = utcnow()
    not_before = _not_before(plan.when, now, plan.policy)  # see _Storing.not_before
    rejected: list[tuple[str, str]] = []
    with session_scope(conf.database_url) as session:
        if key is not None and (existing := _keyed(session, plan.target, key)):
            return _replay(session, existing, plan.digest.finish(plan.numbers), key), None
        # from the send's time: its send_at, or now (not a send window's opening)
        until = validity.valid_until(plan.valid_seconds, plan.when if plan.when and plan.when > now else now)
        batch = _new_batch(plan.target, acct, plan.content, plan.prepared, plan.when, key, now, plan.kind, until)
        batch.personal = plan.texts is not None
        short = [] if plan.texts else list(itertools.islice(plan.numbers, conf.priority_max + 1))
        storing = _Storing(
            conf, plan.provider_cls, plan.policy, plan.digest, plan.numbers, plan.priority, not_before, now, rejected
        )
        storing.texts = plan.texts
        if plan.texts is not None:
            store = _store_personal
        else:
            store = _store_short if len(short) <= conf.priority_max else _store_long
        accepted, inline = store(session, storing, batch, short)
        billable = storing.billable if plan.texts is not None else accepted * batch.segments
        stored = rejected
        if plan.texts is not None:
            stored = stored_rejections(rejected)
            batch.rejected = len(stored)
        write_rejected(session, batch.id, stored, utcnow())
        if plan.provider_cls.batch_stamp:  # last: on PostgreSQL the claim holds its key until the commit
            batch.stamp = stamps.claim(session, acct, batch.id, not_before or now)
        receipt = Receipt(
            batch.id,
            accepted,
            rejected,
            batch.segments,
            batch.lane,
            kind=plan.kind,
            valid_until=until,
            billable=billable,
        )
        return receipt, inline


def _lane_of(kind: str, priority: bool | None) -> bool | None:
    """``priority`` as send_sms uses it: an OTP is always in the priority lane (a code that
    waits behind a campaign is a code too late)."""
    if kind != "otp":
        return priority
    if priority is False:
        raise ValueError("kind 'otp' always takes the priority lane: leave priority out for an OTP")
    return True


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key or len(idempotency_key) > 128
    ):
        raise ValueError("idempotency_key must be a non-empty string of at most 128 characters")


def _keyed(session: Session, target: routes.Target, idempotency_key: str) -> Batch | None:
    """The batch the sender stored under ``idempotency_key``, if any."""
    return session.execute(
        select(Batch).where(_sender(target), Batch.idempotency_key == idempotency_key)
    ).scalar_one_or_none()


def _sender(target: routes.Target):
    """Whose idempotency keys a send shares: the route's, whichever account took the batch."""
    return Batch.route == target.route if target.route else Batch.account == target.account


def batch_status(batch_id: int) -> BatchStatus:
    """Counts of recipient states and chunk states of a batch. Raises LookupError if unknown."""
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url, readonly=True) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"no batch {batch_id}")
        # Staged numbers first, then chunks, then recipients: a split moves numbers from the stage
        # into chunks, and a chunk's outcome commits with its recipients' states, so read in this
        # order a batch is never taken for final while some of it is still moving.
        to_split, staged = staged_counts(session, [batch_id]).get(batch_id, (0, 0))
        chunks = dict(
            session.execute(
                select(Chunk.state, func.count()).where(Chunk.batch_id == batch_id).group_by(Chunk.state)
            ).all()
        )
        recipients = dict(
            session.execute(
                select(Recipient.state, func.count()).where(Recipient.batch_id == batch_id).group_by(Recipient.state)
            ).all()
        )
        if staged:
            recipients[RecipientState.QUEUED] = recipients.get(RecipientState.QUEUED, 0) + staged
        return BatchStatus(
            batch.id,
            batch.account,
            batch.accepted,
            batch.rejected,
            recipients,
            chunks,
            to_split,
            batch.route,
            routes.recipients_by_account(session, batch, recipients),
            batch.send_at,
            is_scheduled(batch.send_at, chunks),
            refused_of(session, [batch_id]).get(batch_id, NO_REFUSALS),
            batch.kind,
            window_wait(conf, batch, is_waiting(batch, chunks, to_split), utcnow()),
            batch.valid_until,
        )


def is_waiting(batch: Batch, chunks: dict[str, int], to_split: int) -> bool:
    """Some of the batch is still to be sent: a chunk pending or numbers to cut, not cancelled."""
    return batch.cancelled_at is None and bool(to_split or chunks.get(ChunkState.PENDING))


def is_scheduled(send_at: datetime | None, chunks: dict[str, int]) -> bool:
    """The batch waits for its time: ``send_at`` is ahead and every chunk made so far
    is still pending (held by smsq until then, at every vendor; a cancelled batch is not)."""
    return send_at is not None and send_at > utcnow() and set(chunks) <= {ChunkState.PENDING}


__all__ = ["send_sms", "batch_status", "Receipt", "BatchStatus", "NoValidNumbersError"]

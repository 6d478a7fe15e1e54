"""What operators look up: one number's sends, a batch's numbers, recent batches.

Lists that can be large (a batch's million recipients) are iterators that
stream from the database in blocks; nothing here builds a list of everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select

from smsq.providers.numbers import normalise
from smsq.store.lifecycle import RecipientState
from smsq.store.models import RECIPIENT_STATES, Batch, Chunk, EarlierSend, Recipient, utcnow
from smsq.worker.config import settings
from smsq.worker.db import session_scope
from smsq.worker.kinds import DEFAULT_KIND

from .policy import window_wait
from .producer import FINAL_CHUNK_STATES, is_scheduled, is_waiting
from .refusals import NONE as NO_REFUSALS
from .refusals import Refused, refused_of
from .schema import ensure_schema
from .split import staged_counts

STREAM_BLOCK = 5000  # rows fetched per round trip while streaming


@dataclass(frozen=True)
class NumberSend:
    """One send to a number: a recipient row with its batch, or a send of it that an
    operator sent again (``settle ... resend``; then ``resent_at`` says when)."""

    batch_id: int
    account: str
    batch_created_at: datetime  # naive UTC
    state: str
    code: str | None
    detail: str | None
    vendor_id: str | None
    updated_at: datetime | None  # naive UTC
    content: str
    resent_at: datetime | None = None  # naive UTC; None: the send the recipient row follows now


def number_history(mobile: str, *, limit: int | None = None) -> list[NumberSend]:
    """Every send to ``mobile`` (normalised like the producer does), newest first.
    Raises ValueError for something that is not a number."""
    number, reason = normalise(mobile, landline=True)
    if number is None:
        raise ValueError(f"{mobile!r} is {reason}")
    conf = settings()
    ensure_schema(conf)
    sends = (
        select(
            Recipient.id,
            Recipient.batch_id,
            Batch.account,
            Batch.created_at,
            Recipient.state,
            Recipient.code,
            Recipient.detail,
            Recipient.vendor_id,
            Recipient.updated_at,
            func.coalesce(sent_text(), Batch.content),
        )
        .select_from(Recipient)
        .join(Batch, Batch.id == Recipient.batch_id)
        .outerjoin(Chunk, and_(Chunk.batch_id == Recipient.batch_id, Chunk.seq == Recipient.chunk_seq))
        .where(Recipient.mobile == number)
        .order_by(Recipient.id.desc())
    )
    earlier = (
        select(
            EarlierSend.recipient_id,
            EarlierSend.batch_id,
            Batch.account,
            Batch.created_at,
            EarlierSend.state,
            EarlierSend.code,
            EarlierSend.detail,
            EarlierSend.vendor_id,
            EarlierSend.updated_at,
            Batch.content,
            EarlierSend.resent_at,
        )
        .join(Batch, Batch.id == EarlierSend.batch_id)
        .where(EarlierSend.mobile == number)
        .order_by(EarlierSend.recipient_id.desc(), EarlierSend.id.desc())
    )
    if limit is not None:
        sends, earlier = sends.limit(limit), earlier.limit(limit)
    with session_scope(conf.database_url, readonly=True) as session:
        rows = [((row[0], 1, 0), NumberSend(*row[1:])) for row in session.execute(sends)]
        rows += [((row[0], 0, -n), NumberSend(*row[1:])) for n, row in enumerate(session.execute(earlier))]
    # newest first: by recipient (one per batch), then its current send, then the ones it replaced
    rows.sort(key=lambda keyed: keyed[0], reverse=True)
    return [send for _, send in rows[:limit]]


def parse_states(states: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"failed,unknown"`` or a list -> validated recipient states; None -> all."""
    if states is None:
        return ()
    names = [s.strip() for s in (states.split(",") if isinstance(states, str) else states) if s.strip()]
    wrong = [s for s in names if s not in RECIPIENT_STATES]
    if wrong:
        raise ValueError(f"unknown state {', '.join(map(repr, wrong))}; the states are {', '.join(RECIPIENT_STATES)}")
    return tuple(dict.fromkeys(names))


EXPORT_COLUMNS = ("mobile", "state", "code", "detail", "vendor_id", "updated_at", "content")


def sent_text():
    """The text a recipient was (or is to be) sent: its chunk's own (a personal text, or a
    chunk moved to another vendor), else its batch's; NULL for a number rejected at intake
    (no chunk). For a query joined to ``Chunk`` (outer) and ``Batch``."""
    return case((Recipient.chunk_seq.is_(None), None), else_=func.coalesce(Chunk.content, Batch.content))


def _with_texts(query):
    """``query`` of recipients joined to their chunk (if any) and batch, for ``sent_text``."""
    return query.join(Batch, Batch.id == Recipient.batch_id).outerjoin(
        Chunk, and_(Chunk.batch_id == Recipient.batch_id, Chunk.seq == Recipient.chunk_seq)
    )


def export_batch(batch_id: int, states: str | Iterable[str] | None = None) -> Iterator[tuple]:
    """The batch's recipients as rows of EXPORT_COLUMNS (``updated_at`` naive UTC; ``content``
    the text sent, see ``sent_text``), in the order they were queued, streamed. ``states``
    filters ("failed,unknown"). The batch and the states are checked before the first row:
    LookupError / ValueError."""
    wanted = parse_states(states)
    conf = settings()
    ensure_schema(conf)
    with session_scope(conf.database_url, readonly=True) as session:
        if session.get(Batch, batch_id) is None:
            raise LookupError(f"no batch {batch_id}")
    columns = [getattr(Recipient, c) for c in EXPORT_COLUMNS[:-1]]
    q = _with_texts(select(*columns, sent_text())).where(Recipient.batch_id == batch_id)
    if wanted:
        q = q.where(Recipient.state.in_(wanted))
    return _stream(conf.database_url, q.order_by(Recipient.id))


def _stream(url: str, query) -> Iterator[tuple]:
    # yield_per: a server-side cursor on PostgreSQL, blocks of rows on SQLite.
    with session_scope(url, readonly=True) as session:
        for row in session.execute(query.execution_options(yield_per=STREAM_BLOCK)):
            yield tuple(row)


@dataclass(frozen=True)
class BatchSummary:
    batch_id: int
    account: str
    created_at: datetime  # naive UTC
    numbers: int  # accepted for sending
    rejected: int
    recipients: dict[str, int]  # recipient state -> count
    chunks: dict[str, int]  # chunk state -> count
    cancelled: bool
    to_split: int = 0  # chunks a worker has still to cut (numbers still to split are in recipients as queued)
    send_at: datetime | None = None  # the batch's schedule (naive UTC)
    scheduled: bool = False  # waiting for its time: nothing of it has gone to the vendor
    refused: Refused = NO_REFUSALS  # numbers vendors refused in answers that took the rest
    kind: str = DEFAULT_KIND  # the message kind: otp, notice, marketing
    waiting_for_window_until: datetime | None = None  # its send window's next opening, while it waits for it

    @property
    def final(self) -> bool:
        return not self.to_split and all(state in FINAL_CHUNK_STATES for state in self.chunks)


def recent_batches(limit: int = 20, *, account: str | None = None) -> list[BatchSummary]:
    """The newest ``limit`` batches (of ``account``), with counts by state.
    An account not in the config raises UnknownAccountError."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    conf = settings()
    if account is not None:
        conf.account(account)
    ensure_schema(conf)
    q = select(Batch).order_by(Batch.id.desc()).limit(limit)
    if account is not None:
        q = q.where(Batch.account == account)
    now = utcnow()
    with session_scope(conf.database_url, readonly=True) as session:
        batches = session.execute(q).scalars().all()
        ids = [b.id for b in batches]
        recipients = _counts(session, Recipient, ids)
        chunks = _counts(session, Chunk, ids)
        staged = staged_counts(session, ids)
        refused = refused_of(session, ids)
        for batch_id, (_, numbers) in staged.items():
            counts = recipients.setdefault(batch_id, {})
            counts[RecipientState.QUEUED] = counts.get(RecipientState.QUEUED, 0) + numbers
        return [
            BatchSummary(
                b.id,
                b.account,
                b.created_at,
                b.accepted,
                b.rejected,
                recipients.get(b.id, {}),
                chunks.get(b.id, {}),
                b.cancelled_at is not None,
                staged.get(b.id, (0, 0))[0],
                b.send_at,
                is_scheduled(b.send_at, chunks.get(b.id, {})),
                refused.get(b.id, NO_REFUSALS),
                b.kind,
                window_wait(conf, b, is_waiting(b, chunks.get(b.id, {}), staged.get(b.id, (0, 0))[0]), now),
            )
            for b in batches
        ]


def _counts(session, model, batch_ids: list[int]) -> dict[int, dict[str, int]]:
    """{batch id: {state: count}} for the batches, in one GROUP BY."""
    out: dict[int, dict[str, int]] = {}
    if not batch_ids:
        return out
    for batch_id, state, n in session.execute(
        select(model.batch_id, model.state, func.count())
        .where(model.batch_id.in_(batch_ids))
        .group_by(model.batch_id, model.state)
    ).all():
        out.setdefault(batch_id, {})[state] = n
    return out


__all__ = [
    "number_history",
    "export_batch",
    "recent_batches",
    "NumberSend",
    "BatchSummary",
    "RECIPIENT_STATES",
    "EXPORT_COLUMNS",
]

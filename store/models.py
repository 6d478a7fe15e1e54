"""The tables. Times are naive UTC (SQLite has no time zones; PostgreSQL gets the same values).

States:
  chunk      see store/lifecycle.py, with the moves allowed between states; only
  recipient  store/ledger writes them
  split job  exists from intake until a worker has cut every staged chunk into chunk and
             recipient rows (see tasks/split.py)
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from smsq.providers.base import RAW_KEEP

from .lifecycle import ChunkState, RecipientState
from .sql import TEXT_KEEP

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


CHUNK_STATES = tuple(ChunkState)
RECIPIENT_STATES = tuple(RecipientState)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("account", "idempotency_key"),
        UniqueConstraint("route", "idempotency_key"),
        Index("ix_batches_created_at", "created_at"),  # purge by age
        Index("ix_batches_valid_until", "valid_until"),  # the relay's sweep of chunks past their validity
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    send_at: Mapped[datetime | None] = mapped_column(DateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    lane: Mapped[str] = mapped_column(String(16))
    segments: Mapped[int] = mapped_column(Integer, default=1)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Set by `smsq cancel`: a chunk of this batch that comes back to pending
    # (a retry of one that was sending) is cancelled instead of claimed.
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Failover (tasks/routes.py): the route the batch was sent through (None: one account),
    # and the content as the caller gave it, prepared again for each account it moves to.
    route: Mapped[str | None] = mapped_column(String(64))
    given_content: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of what was asked (content, send time, kind, numbers as given): a reused idempotency
    # key replays this batch only for the same request (tasks/producer.py). None: stored before.
    body_digest: Mapped[str | None] = mapped_column(String(64))
    # The batch's Timestamp at its account, for a vendor that groups a batch's calls by one
    # (orgws, ``Provider.batch_stamp``): its send second, or the next one no other batch of
    # the account took (a BatchStamp row is the claim). Every chunk and retry carries it.
    # None: the account's vendor wants none (or the batch was stored before smsq kept one).
    stamp: Mapped[int | None] = mapped_column(BigInteger)
    # The message kind (worker/kinds.py: otp, notice, marketing), whose rules the send is held
    # to; batches stored before kinds existed read as notice.
    kind: Mapped[str] = mapped_column(String(16), default="notice", server_default="notice")
    # When the batch's numbers not sent by then are not sent at all (``valid_for``, by default
    # its kind's, counted from its send time: created_at, or send_at when scheduled); a chunk
    # past it before its vendor call ends ``expired`` (tasks/validity.py). None: no limit.
    valid_until: Mapped[datetime | None] = mapped_column(DateTime)
    # A send of personal texts (tasks/personal.py): each chunk carries its numbers' text, and
    # ``content`` is the template (empty for ``messages=``), kept to be shown, never sent.
    personal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("batch_id", "seq"),
        Index("ix_chunks_state_due", "state", "next_attempt_at"),
        # the relay's sweep of refusals still to place (store/ledger/settling.py place_refusals):
        # a handful of rows, and no other chunk in the index
        Index(
            "ix_chunks_refused_due_at",
            "refused_due_at",
            postgresql_where=text("refused_due_at IS NOT NULL"),
            sqlite_where=text("refused_due_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    account: Mapped[str] = mapped_column(String(64))
    lane: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=ChunkState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)  # not before (retry, schedule)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)  # last publish to the broker
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # the first claim of a chunk that failed transiently: its retry budget counts from here
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text, info={TEXT_KEEP: 1000})  # vendor message, Chinese kept
    vendor_ref: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text, info={TEXT_KEEP: RAW_KEEP})  # vendor body, truncated
    # The content prepared for this chunk's account when it differs from the batch's
    # (a chunk moved to another vendor of the route); None: the batch's content.
    content: Mapped[str | None] = mapped_column(Text)
    # Narrowing (tasks/narrowing.py): a chunk made from a refused one carries the id of the
    # chunk whose refusal started it (its root); the root counts the extra vendor calls its
    # narrowing has made (each new chunk is one), held under SMSQ_NARROW_MAX_CALLS.
    narrowed_from: Mapped[int | None] = mapped_column(BigInteger)
    narrow_calls: Mapped[int | None] = mapped_column(Integer)
    # The batch's Timestamp at this chunk's account when that is not the batch's own (a
    # chunk moved to another account of the route that wants one); None: the batch's.
    stamp: Mapped[int | None] = mapped_column(BigInteger)
    # Numbers the vendor refused in the answer that accepted the rest of the call (named or
    # only counted: dxt b, orgws FailPhone, jinxin failCount, qxs successCounts); None: none.
    refused: Mapped[int | None] = mapped_column(Integer)
    # Of those, how many it only counted and no number has been found for yet ("open").
    refused_open: Mapped[int | None] = mapped_column(Integer)
    # When the chunk's numbers that no delivery report has placed by then end failed as the
    # refused ones (the relay); None with refusals open: the vendor sends no reports to tell.
    refused_due_at: Mapped[datetime | None] = mapped_column(DateTime)


class Recipient(Base):
    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("batch_id", "mobile"),
        Index("ix_recipients_batch_chunk", "batch_id", "chunk_seq"),
        # A number's sends (reports, settling unknown chunks, history). No index names a
        # column the send path updates (state, vendor_id), so on PostgreSQL, with the
        # table's fillfactor of 50, a chunk's record touches no index: migration 0008.
        Index("ix_recipients_mobile", "mobile"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    chunk_seq: Mapped[int | None] = mapped_column(Integer)
    mobile: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    vendor_id: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class BatchStamp(Base):
    """A Timestamp (Unix seconds) an account's batch took, for a vendor that groups a
    batch's calls by it (orgws): two batches of one account must never share one, so the
    primary key is the claim, taken by a conditional insert (store/stamps.py). A batch
    takes one second per account (two workers moving one batch to another account at once
    agree on one). Goes with its batch (ON DELETE CASCADE, which the unique key serves)."""

    __tablename__ = "batch_stamps"
    __table_args__ = (UniqueConstraint("batch_id", "account"),)

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    stamp: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))


class EarlierSend(Base):
    """A send of a recipient that an operator's ``settle ... resend`` sent again: the
    recipient row then follows the new send, and this row keeps the earlier one (its
    vendor id and outcome; a late delivery report for it still lands here), so a
    number's history shows both. Goes with its recipient (ON DELETE CASCADE)."""

    __tablename__ = "earlier_sends"
    __table_args__ = (
        Index("ix_earlier_sends_mobile", "mobile"),
        Index("ix_earlier_sends_recipient_id", "recipient_id"),  # the cascade from a purged recipient
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(BigInteger)
    mobile: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    vendor_id: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    resent_at: Mapped[datetime] = mapped_column(DateTime)


class SplitJob(Base):
    """A batch whose numbers wait in ``split_chunks`` for a worker to cut them into
    chunk and recipient rows. The row is the outbox entry of the ``smsq.split_batch``
    task: the relay publishes it again when ``queued_at`` is empty or stale."""

    __tablename__ = "split_jobs"

    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)  # the chunks' next_attempt_at (a schedule)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)  # last publish, or the splitter's last block
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SplitChunk(Base):
    """One vendor-sized chunk of numbers as the producer stored them: normalised,
    de-duplicated, blocked numbers left out, comma-separated in list order. Deleted
    by the transaction that writes its chunk and recipient rows."""

    __tablename__ = "split_chunks"

    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    mobiles: Mapped[str] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)  # the numbers' own text; None: the batch's


class BlockedNumber(Base):
    """Numbers an account must not send to (vendor blacklist, unsubscribes), with why."""

    __tablename__ = "blocked_numbers"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    mobile: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32), default="manual")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PollLease(Base):
    """The vendor's poll window per account and endpoint family (the 30 s rule).

    A poll may call the vendor only after taking the lease with a conditional
    update (``next_allowed_at <= now``), which holds across any number of beat
    and worker processes."""

    __tablename__ = "poll_leases"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_allowed_at: Mapped[datetime] = mapped_column(DateTime)
    holder: Mapped[str | None] = mapped_column(String(128))


class PollStatus(Base):
    """The last poll of each account and kind, for `smsq accounts`."""

    __tablename__ = "poll_status"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    polled_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))  # ok | rate_limited | auth | transient | ...
    detail: Mapped[str | None] = mapped_column(Text, info={TEXT_KEEP: 1000})
    items: Mapped[int] = mapped_column(Integer, default=0)


class PollJournal(Base):
    """Every vendor poll body, committed before it is parsed: what a vendor hands
    out once is never lost to a crash or a parser bug."""

    __tablename__ = "poll_journal"
    __table_args__ = (Index("ix_poll_journal_state", "state"), Index("ix_poll_journal_fetched_at", "fetched_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    fetched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="fetched")  # fetched | parsed | failed | vendor_error
    items: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, info={TEXT_KEEP: 2000})
    parsed_at: Mapped[datetime | None] = mapped_column(DateTime)


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("account", "dedupe_key"), Index("ix_inbound_created", "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    mobile: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    vendor_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime | None] = mapped_column(DateTime)  # vendor's time, naive Beijing
    extra: Mapped[str | None] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(80))
    journal_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StatusReport(Base):
    """Every delivery report as the vendor gave it, matched to a recipient when we know it."""

    __tablename__ = "status_reports"
    __table_args__ = (
        UniqueConstraint("account", "dedupe_key"),
        Index("ix_status_reports_vendor", "vendor_id"),
        Index("ix_status_reports_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    vendor_id: Mapped[str | None] = mapped_column(String(64))
    mobile: Mapped[str] = mapped_column(String(32))
    delivered: Mapped[bool | None] = mapped_column()
    code: Mapped[str] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(String(255))
    reported_at: Mapped[datetime | None] = mapped_column(DateTime)
    dedupe_key: Mapped[str] = mapped_column(String(160))
    recipient_id: Mapped[int | None] = mapped_column(BigInteger)
    journal_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AccountBalance(Base):
    __tablename__ = "account_balances"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    balance: Mapped[float] = mapped_column()
    checked_at: Mapped[datetime] = mapped_column(DateTime)


class DailyQuota(Base):
    """Numbers an account's sends took in on one Beijing day, counted against its
    ``daily_quota`` when no Redis is configured (tasks/quota.py)."""

    __tablename__ = "daily_quotas"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)  # the Beijing day
    used: Mapped[int] = mapped_column(Integer)


class VendorCall(Base):
    """One row per vendor send call whose answer was recorded, written by the same
    transaction as the chunk's outcome. Append-only: `smsq metrics` counts calls
    and their durations from it, the same for every worker process and host."""

    __tablename__ = "vendor_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # providers.Outcome value
    seconds: Mapped[float] = mapped_column()  # the provider call, connect to answer (or timeout)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AccountCircuit(Base):
    """The circuit breaker of one account, its sends and its polls (tasks/circuit.py).

    closed: sends and polls go out. open: nothing is sent or polled until ``reopen_at``.
    half_open: one call tries the account, a chunk (``probe_chunk_id``) or a poll (a
    negative ``probe_chunk_id``, the poll's token); its success closes the circuit,
    its failure opens it again for a doubled ``cooloff``."""

    __tablename__ = "account_circuits"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")  # closed | open | half_open
    opened_at: Mapped[datetime | None] = mapped_column(DateTime)
    reopen_at: Mapped[datetime | None] = mapped_column(DateTime)  # open: when a probe may go
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    cooloff: Mapped[float] = mapped_column(default=0.0)  # seconds of the current (or last) opening
    trips: Mapped[int] = mapped_column(Integer, default=0)  # openings in a row without a quiet spell
    reason: Mapped[str | None] = mapped_column(Text, info={TEXT_KEEP: 1000})  # "auth -7 ..." (vendor code and message)
    probe_chunk_id: Mapped[int | None] = mapped_column(BigInteger)  # negative: a poll probes
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class NumberSends(Base):
    """Sends to one number in one window of a per-number frequency cap (tasks/caps.py), when
    no Redis is set: ``period`` the cap's length in seconds, ``window_no`` which window of
    that length (fixed windows on the Beijing clock). A send's intake counts a number with a
    conditional upsert, in the send's transaction. Purged once ``expires_at`` (the window's
    end) has passed."""

    __tablename__ = "number_sends"
    __table_args__ = (Index("ix_number_sends_expires_at", "expires_at"),)

    mobile: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    window_no: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sends: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class RecentContent(Base):
    """The duplicate guard (tasks/duplicates.py), when no Redis is set: the last batch that
    took ``mobile`` for the content whose digest is ``digest`` (the text as sent, signature
    placed), guarded until ``expires_at`` (its send's ``duplicate_window`` on)."""

    __tablename__ = "recent_contents"
    __table_args__ = (Index("ix_recent_contents_expires_at", "expires_at"),)

    mobile: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class RejectionCount(Base):
    """Numbers refused at intake, by the account and kind of the send and the reason's class
    (tasks/rejections.py: invalid, blocked, opted_out, capped, duplicate, quota): the
    ``smsq_rejected_total`` counter. Kept apart from the rejected recipients so that a send
    refused whole (nothing stored) counts too, and a purge never makes the counter go back."""

    __tablename__ = "rejection_counts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    numbers: Mapped[int] = mapped_column(BigInteger)

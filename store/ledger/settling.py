"""Chunks settled other than by their own vendor call: expired by the relay,
cancelled by an operator, settled by an operator, or by a delivery report; and the
numbers a vendor refused by count only, placed by the relay once it is known which."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from ..lifecycle import ChunkState as C
from ..lifecycle import RecipientState as R
from ..lifecycle import check_recipient, chunks_from, recipients_from
from ..models import Chunk, EarlierSend, Recipient, StatusReport, utcnow
from ..sql import fit, rows_changed
from .records import REFUSED_CODE

CANCELLED_DETAIL = "cancelled by an operator"
EXPIRED_FROM = chunks_from(C.UNKNOWN, (C.SENDING,))
EXPIRED_WITH_IT = recipients_from(R.UNKNOWN, (R.QUEUED,))


def expire(session: Session, cutoff: datetime, detail: str, limit: int) -> tuple[int, list[tuple[int, int]]]:
    """``sending`` chunks claimed before ``cutoff`` (their worker died or hung after maybe
    calling the vendor) become ``unknown``, with their queued numbers. Returns how many
    were found and the (chunk id, batch id) of those this call changed."""
    now = utcnow()
    stale = session.execute(
        select(Chunk.id, Chunk.batch_id, Chunk.seq)
        .where(Chunk.state.in_(EXPIRED_FROM), Chunk.claimed_at < cutoff)
        .limit(limit)
    ).all()
    expired = []
    for chunk_id, batch_id, seq in stale:
        if rows_changed(
            session.execute(
                update(Chunk)
                .where(Chunk.id == chunk_id, Chunk.state.in_(EXPIRED_FROM))
                .values(state=C.UNKNOWN, outcome="ambiguous", finished_at=now, detail=fit(Chunk.detail, detail))
            )
        ):
            session.execute(
                update(Recipient)
                .where(Recipient.batch_id == batch_id, Recipient.chunk_seq == seq, Recipient.state.in_(EXPIRED_WITH_IT))
                .values(state=R.UNKNOWN, updated_at=now)
            )
            expired.append((chunk_id, batch_id))
    return len(stale), expired


CANCELLED_FROM = chunks_from(C.CANCELLED, (C.PENDING,))
CANCELLED_WITH_IT = recipients_from(R.CANCELLED, (R.QUEUED,))


def cancel_pending(session: Session, batch_ids) -> tuple[int, int]:
    """Cancel the pending chunks of ``batch_ids`` (a list, or a select of ids) and
    their queued recipients: one statement each. Return (chunks, numbers)."""
    now = utcnow()
    chunks = rows_changed(
        session.execute(
            update(Chunk)
            .where(Chunk.batch_id.in_(batch_ids), Chunk.state.in_(CANCELLED_FROM))
            .values(state=C.CANCELLED, outcome="cancelled", finished_at=now, detail=CANCELLED_DETAIL)
            .execution_options(synchronize_session=False)
        )
    )
    if not chunks:
        return 0, 0
    of_cancelled_chunk = exists().where(
        Chunk.batch_id == Recipient.batch_id, Chunk.seq == Recipient.chunk_seq, Chunk.state == C.CANCELLED
    )
    numbers = rows_changed(
        session.execute(
            update(Recipient)
            .where(Recipient.batch_id.in_(batch_ids), Recipient.state.in_(CANCELLED_WITH_IT), of_cancelled_chunk)
            .values(state=R.CANCELLED, detail=CANCELLED_DETAIL, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    return chunks, numbers


# -- an operator's settlement ---------------------------------------------------

SETTLED_TO = {"accepted": (C.ACCEPTED, R.SENT), "failed": (C.FAILED, R.FAILED), "resend": (C.PENDING, R.QUEUED)}
SETTLED_NUMBERS = (R.UNKNOWN, R.FAILED, R.QUEUED)  # the numbers of a settled chunk that follow it
SENT_ONCE = (R.UNKNOWN, R.FAILED)  # recipient states of a send that a resend sends again
STEP = 1000  # chunks per statement: a million-number batch has 10,000


def settle(
    session: Session, batch_id: int, from_state: str, action: str, why: str, chunk_id: int | None = None
) -> tuple[list[int], int]:
    """An operator's ``action`` (accepted, failed, resend) on the batch's chunks in
    ``from_state`` (only chunk ``chunk_id``, if given), whatever their number: one
    UPDATE for the chunks, then one for their numbers per STEP chunks. Returns the
    settled chunk ids and how many numbers changed. IllegalTransition when the
    action cannot apply to ``from_state``."""
    to_chunk, to_number = SETTLED_TO[action]
    which = [Chunk.batch_id == batch_id, Chunk.state.in_(chunks_from(to_chunk, (C(from_state),)))]
    if chunk_id is not None:
        which.append(Chunk.id == chunk_id)
    now = utcnow()
    if action == "resend":
        chunk_values: dict[str, object] = dict(
            state=to_chunk, next_attempt_at=None, queued_at=now, finished_at=None, detail=why
        )
        # The new send gets its own vendor id; the first one's stays in earlier_sends.
        number_values: dict[str, object] = dict(state=to_number, vendor_id=None, code=None, detail=None, updated_at=now)
    else:
        chunk_values = dict(state=to_chunk, finished_at=now, detail=why)
        number_values = dict(state=to_number, detail=fit(Recipient.detail, why), updated_at=now)
    # RETURNING: exactly the chunks this statement moved (a report may settle one meanwhile).
    settled = session.execute(
        update(Chunk)
        .where(*which)
        .values(**chunk_values)
        .returning(Chunk.id, Chunk.seq)
        .execution_options(synchronize_session=False)
    ).all()
    following = recipients_from(to_number, SETTLED_NUMBERS)
    numbers = 0
    for start in range(0, len(settled), STEP):
        seqs = [seq for _, seq in settled[start : start + STEP]]
        if action == "resend":
            _keep_earlier_sends(session, batch_id, seqs, now)
        numbers += rows_changed(
            session.execute(
                update(Recipient)
                .where(Recipient.batch_id == batch_id, Recipient.chunk_seq.in_(seqs), Recipient.state.in_(following))
                .values(**number_values)
                .execution_options(synchronize_session=False)
            )
        )
    return [settled_id for settled_id, _ in settled], numbers


def _keep_earlier_sends(session: Session, batch_id: int, seqs: list[int], now) -> None:
    """Copy the chunks' sends to earlier_sends (one INSERT ... SELECT) before their
    recipient rows are given to the resend: the number's history keeps both."""
    kept = (
        Recipient.id,
        Recipient.batch_id,
        Recipient.mobile,
        Recipient.state,
        Recipient.vendor_id,
        Recipient.code,
        Recipient.detail,
        Recipient.updated_at,
    )
    session.execute(
        insert(EarlierSend).from_select(
            ["recipient_id", "batch_id", "mobile", "state", "vendor_id", "code", "detail", "updated_at", "resent_at"],
            select(*kept, literal(now, DateTime)).where(
                Recipient.batch_id == batch_id, Recipient.chunk_seq.in_(seqs), Recipient.state.in_(SENT_ONCE)
            ),
        )
    )


# -- a delivery report -----------------------------------------------------------

REPORTED_CHUNK = chunks_from(C.ACCEPTED, (C.UNKNOWN,))
SENT_WITH_IT = recipients_from(R.SENT, (R.UNKNOWN,))


def settle_by_report(session: Session, send: Recipient | EarlierSend, report: StatusReport, now) -> None:
    """A delivery report settles its send: delivered or failed, with the vendor's code.
    A recipient ``unknown`` with its chunk shows that the vendor did accept that chunk:
    the chunk becomes ``accepted`` and its other unknown numbers ``sent`` (their own
    reports will follow). An earlier send (``earlier_sends``) keeps its report only."""
    state = R.DELIVERED if report.delivered else R.FAILED
    if isinstance(send, Recipient):
        check_recipient(send.state, state, send.id)
        if send.state == R.UNKNOWN:
            _accepted_after_all(session, send, now)
    send.state = state
    send.code, send.detail, send.updated_at = report.code, fit(Recipient.detail, report.message or ""), now
    if report.vendor_id and not send.vendor_id:
        send.vendor_id = report.vendor_id


def _accepted_after_all(session: Session, recipient: Recipient, now) -> None:
    session.execute(
        update(Chunk)
        .where(Chunk.batch_id == recipient.batch_id, Chunk.seq == recipient.chunk_seq, Chunk.state.in_(REPORTED_CHUNK))
        .values(
            state=C.ACCEPTED,
            outcome="ok",
            finished_at=now,
            detail="settled by a delivery report: the vendor had accepted it",
        )
    )
    session.execute(
        update(Recipient)
        .where(
            Recipient.batch_id == recipient.batch_id,
            Recipient.chunk_seq == recipient.chunk_seq,
            Recipient.state.in_(SENT_WITH_IT),
            Recipient.id != recipient.id,
        )
        .values(state=R.SENT, updated_at=now)
    )


# -- numbers refused by count only ----------------------------------------------

PLACED_REFUSED = recipients_from(R.FAILED, (R.SENT,))


def place_refusals(session: Session, now: datetime, waited: str, limit: int) -> list[tuple[int, int, int]]:
    """Accepted chunks whose vendor refused numbers it only counted (``refused_open``;
    store/ledger/records.py), once it is known which: their numbers still ``sent`` (no
    delivery report placed them) end ``failed``, code ``refused`` — when the chunk's
    ``refused_due_at`` has come, or sooner, when reports have placed all but as many
    numbers as were refused. One UPDATE per chunk; ``waited``: SMSQ_REPORT_WAIT in
    words, for the numbers' detail. Returns (chunk id, batch id, numbers failed) of
    the chunks this call placed."""
    awaiting = (
        select(func.count())
        .where(Recipient.batch_id == Chunk.batch_id, Recipient.chunk_seq == Chunk.seq, Recipient.state == R.SENT)
        .correlate(Chunk)
        .scalar_subquery()
    )
    found = session.execute(
        select(Chunk.id, Chunk.batch_id, Chunk.seq, Chunk.size, Chunk.refused_open, Chunk.refused_due_at)
        .where(
            Chunk.refused_due_at.is_not(None),
            Chunk.state == C.ACCEPTED,
            or_(Chunk.refused_due_at <= now, awaiting <= Chunk.refused_open),
        )
        .order_by(Chunk.refused_due_at)
        .limit(limit)
    ).all()
    placed = []
    for chunk_id, batch_id, seq, size, counted, due_at in found:
        closed = update(Chunk).where(Chunk.id == chunk_id, Chunk.refused_due_at.is_not(None))
        if not rows_changed(session.execute(closed.values(refused_open=None, refused_due_at=None))):
            continue  # another pass placed it
        said = f"refused by the vendor: it counted {counted} of this call's {size} numbers refused without naming them"
        expired = due_at is not None and due_at <= now
        why = f"{said}, and " + (
            f"no delivery report came for this one within {waited}"
            if expired
            else "delivery reports placed all the others"
        )
        failed = session.execute(
            update(Recipient)
            .where(Recipient.batch_id == batch_id, Recipient.chunk_seq == seq, Recipient.state.in_(PLACED_REFUSED))
            .values(state=R.FAILED, code=REFUSED_CODE, detail=fit(Recipient.detail, why), updated_at=now)
        )
        placed.append((chunk_id, batch_id, rows_changed(failed)))
    return placed

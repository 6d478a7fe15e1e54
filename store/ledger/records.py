"""The outcome of a vendor call, written: the chunk's new state, its numbers' states
and vendor ids, and the call itself in ``vendor_calls`` (which `smsq metrics` counts).

The caller decides what the answer means (the state, when to try again, the
detail); this module only writes it, checking the transition. An accepted chunk
whose every number was taken is written on PostgreSQL in one statement
(``RECORD_ACCEPTED_PG``); everything else by the portable path.

An answer may accept the call and refuse some of its numbers (``Refusals``): the
numbers it names end ``failed`` at once; the ones it only counts are kept on the
chunk (``refused_open``) until delivery reports tell which numbers it took, and
the relay fails the rest (settling.py ``place_refusals``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, bindparam, insert, text, update

from smsq.providers import SendResult
from smsq.worker.config import Settings
from smsq.worker.db import autocommit, transaction

from ..lifecycle import ChunkState as C
from ..lifecycle import IllegalTransition, check_chunk, recipients_from
from ..lifecycle import RecipientState as R
from ..models import Chunk, Recipient, VendorCall, utcnow
from ..sql import fit, is_postgres
from .claims import FIRST_ATTEMPT, ClaimedChunk, still_ours

# A late answer (from the spool) also finds the chunk 'unknown', which the relay makes
# of a claim with no answer in time; the real answer wins.
RECORDED_FROM = (C.SENDING, C.UNKNOWN)
ANSWERED = recipients_from(R.SENT, (R.QUEUED, R.UNKNOWN))  # the numbers an answer settles
RECIPIENT_STATE = {C.ACCEPTED: R.SENT, C.FAILED: R.FAILED, C.UNKNOWN: R.UNKNOWN}


REFUSED_CODE = "refused"  # a number the vendor refused in its answer, with no code of its own for it


@dataclass(frozen=True)
class Refusals:
    """What an answer that accepted the call says the vendor refused of the chunk's numbers."""

    named: dict[str, str]  # the chunk's numbers it named (as sent) -> why
    counted: int  # refused numbers it only counted, beyond those it named
    size: int  # the chunk's numbers
    due_at: datetime | None = None  # when numbers no delivery report placed end failed (None: no reports)

    @classmethod
    def of(cls, claimed: ClaimedChunk, result: SendResult, due_at: datetime | None = None) -> Refusals:
        mobiles = {mobile for _, mobile in claimed.recipients}
        named = {mobile: why for mobile, why in result.failed_numbers.items() if mobile in mobiles}
        return cls(named, max(result.rejected or 0, len(named)) - len(named), len(mobiles), due_at)

    @property
    def total(self) -> int:
        return len(self.named) + self.counted

    @property
    def all_others(self) -> bool:
        """The count covers every number it did not name: it took none of them."""
        return 0 < self.size - len(self.named) <= self.counted

    @property
    def open(self) -> int:
        """Refusals counted that no number is known for yet."""
        return 0 if self.all_others else self.counted

    def chunk_values(self) -> dict[str, object]:
        return dict(
            refused=self.total or None,
            refused_open=self.open or None,
            refused_due_at=self.due_at if self.open else None,
        )

    def note(self) -> str:
        """The detail of the numbers it did not name: why they are sent, or failed."""
        said = f"the vendor counted {self.counted} of this call's {self.size} numbers refused without naming them"
        if self.all_others:
            return f"refused by the vendor: {said}, which leaves none it took"
        if self.due_at is None:
            return f"taken, but {said}, and it sends no delivery reports: which ones cannot be told"
        return f"taken, but {said}: a number no delivery report places within SMSQ_REPORT_WAIT ends failed"


def _chunk_values(
    result: SendResult,
    state: C,
    detail: str | None,
    retry_at: datetime | None,
    queued: bool,
    counted: bool,
    now: datetime,
    refusals: Refusals | None = None,
) -> dict:
    values: dict[str, object] = dict(
        state=state,
        outcome=result.outcome.value,
        code=result.code,
        detail=fit(Chunk.detail, result.message or "" if detail is None else detail),
        raw=fit(Chunk.raw, result.raw or ""),
    )
    if state is not C.PENDING:
        values["finished_at"] = now
        if state is C.ACCEPTED:
            values["vendor_ref"] = result.batch_ref
            values.update(refusals.chunk_values() if refusals else {})
        return values
    if counted:  # a transient failure: the attempt counts against the retry budget
        values["first_attempt_at"] = FIRST_ATTEMPT
    else:  # the vendor's rate limit: the call does not count as an attempt
        values["attempts"] = Chunk.attempts - 1
    values.update(next_attempt_at=retry_at, queued_at=now if queued else None)
    return values


def record(
    conf: Settings,
    claimed: ClaimedChunk,
    result: SendResult,
    state: C,
    *,
    detail: str | None = None,
    retry_at: datetime | None = None,
    queued: bool = False,
    counted: bool = True,
    call_seconds: float | None = None,
    now: datetime | None = None,
    refused_due_at: datetime | None = None,
) -> bool:
    """Write what the vendor said about ``claimed`` as the caller decided it: ``state``
    (accepted, failed, unknown, or pending to try again at ``retry_at``; ``queued``: a
    broker countdown carries the retry, ``counted``: the attempt counts against its
    retry budget), ``detail`` (default: the vendor's message). ``call_seconds``: how
    long the call took, kept in ``vendor_calls`` (None: no call was made).
    ``refused_due_at``: numbers the vendor refused by count only (``Refusals``) that no
    delivery report places by then end failed (None: its vendor sends no reports). False:
    the chunk moved on meanwhile (recorded by another), nothing of it was written."""
    state = C(state)
    if state not in RECIPIENT_STATE and state is not C.PENDING:  # e.g. moved: a failover's, not an answer's
        raise IllegalTransition("chunk", C.SENDING, state, claimed.chunk_id, by="a vendor's answer")
    for was in RECORDED_FROM:
        check_chunk(was, state, claimed.chunk_id)
    now = now or utcnow()
    refusals = Refusals.of(claimed, result, refused_due_at) if state is C.ACCEPTED else None
    values = _chunk_values(result, state, detail, retry_at, queued, counted, now, refusals)
    if refusals is not None and not refusals.total and call_seconds is not None and is_postgres(conf.database_url):
        # the common answer, every number taken: one statement (RECORD_ACCEPTED_PG)
        return _record_accepted_pg(conf, claimed, result, values, call_seconds, now)
    with transaction(conf.database_url) as conn:
        if call_seconds is not None:  # the call happened, whatever becomes of the chunk row
            count_call(conn, claimed.account, result.outcome.value, call_seconds, now)
        if conn.execute(update(Chunk).where(still_ours(claimed, RECORDED_FROM)).values(**values)).rowcount != 1:
            return False
        if refusals is not None:
            _record_accepted(conn, claimed, result, refusals, now)
        else:
            _record_recipients(conn, claimed, result, state, now)
    return True


def count_call(conn, account: str, outcome: str, seconds: float, now: datetime) -> None:
    """A vendor call in ``vendor_calls``."""
    conn.execute(insert(VendorCall).values(account=account, outcome=outcome, seconds=seconds, created_at=now))


# An accepted chunk, all in one statement (so one round trip, committed on its own):
# the chunk's outcome if the chunk is still ours (still_ours), its numbers
# 'sent' only then, and the call counted in vendor_calls whatever became of the
# chunk (as record() does). Data-modifying CTEs all see the rows as they were
# before the statement, hence the recipients' "the chunk was ours" test reads
# the chunk update's RETURNING instead of the table.
RECORD_ACCEPTED_PG = f"""
WITH ours AS (
    UPDATE chunks SET state = '{C.ACCEPTED}', outcome = :outcome, code = :code, detail = :detail, raw = :raw,
                      finished_at = :now, vendor_ref = :vendor_ref
    WHERE id = :id AND attempts = :attempt AND state IN ('{C.SENDING}', '{C.UNKNOWN}')
    RETURNING id),
called AS (
    INSERT INTO vendor_calls (account, outcome, seconds, created_at) VALUES (:account, :outcome, :seconds, :now)),
sent AS (
    UPDATE recipients AS r SET state = '{R.SENT}', vendor_id = {{vendor_id}}, updated_at = :now
    {{numbers}} AND r.state IN ('{R.QUEUED}', '{R.UNKNOWN}') AND EXISTS (SELECT 1 FROM ours))
SELECT count(*) FROM ours
"""
# each number with its own vendor id, in the order sent. The ids go as one text each,
# split by the server: the driver builds an array parameter in Python, checking every
# element for quoting, which cost a third of the record's CPU.
RECORD_ACCEPTED_WITH_IDS_PG = text(
    RECORD_ACCEPTED_PG.format(
        vendor_id="v.vid",
        numbers="FROM unnest(CAST(string_to_array(:rids, ',') AS bigint[]), "
        "string_to_array(:vids, :sep)) AS v(rid, vid) WHERE r.id = v.rid",
    )
)
# vendor ids that the separator could cut (or an empty id, which a split can drop)
# go as an array
RECORD_ACCEPTED_WITH_ID_ARRAY_PG = text(
    RECORD_ACCEPTED_PG.format(
        vendor_id="v.vid",
        numbers="FROM unnest(CAST(:rids AS bigint[]), CAST(:vids AS text[])) AS v(rid, vid) WHERE r.id = v.rid",
    )
)
ID_SEPARATOR = "\x1f"  # ASCII unit separator: in no vendor's id
# one id for the whole call (or none)
RECORD_ACCEPTED_ONE_ID_PG = text(
    RECORD_ACCEPTED_PG.format(
        vendor_id="CAST(:vid AS text)", numbers="WHERE r.batch_id = :batch AND r.chunk_seq = :seq"
    )
)


def _record_accepted_pg(
    conf: Settings, claimed: ClaimedChunk, result: SendResult, values: dict, call_seconds: float, now: datetime
) -> bool:
    params = {
        "id": claimed.chunk_id,
        "attempt": claimed.attempt,
        "now": now,
        "account": claimed.account,
        "seconds": call_seconds,
        "vendor_ref": values["vendor_ref"],
        **{key: values[key] for key in ("outcome", "code", "detail", "raw")},
    }
    vids = _vendor_ids(claimed, result)
    if vids:
        if all(vids) and not any(ID_SEPARATOR in vid for vid in vids):
            statement = RECORD_ACCEPTED_WITH_IDS_PG
            params.update(
                rids=",".join(str(rid) for rid, _ in claimed.recipients), vids=ID_SEPARATOR.join(vids), sep=ID_SEPARATOR
            )
        else:
            statement = RECORD_ACCEPTED_WITH_ID_ARRAY_PG
            params.update(rids=[rid for rid, _ in claimed.recipients], vids=vids)
    else:
        statement = RECORD_ACCEPTED_ONE_ID_PG
        params.update(vid=_single_id(result), batch=claimed.batch_id, seq=claimed.seq)
    with autocommit(conf.database_url) as conn:
        return conn.execute(statement, params).scalar() == 1


def _vendor_ids(claimed: ClaimedChunk, result: SendResult) -> list[str]:
    """One vendor id per number, in the order sent, fitted to the column; [] when the
    vendor's ids cannot be paired with the numbers."""
    if len(result.vendor_ids) != len(claimed.recipients):
        return []
    return [fit(Recipient.vendor_id, vid) for vid in result.vendor_ids]


def _single_id(result: SendResult) -> str | None:
    """One id for the whole call (or ids we cannot pair with numbers): the chunk keeps
    the vendor's reference; reports are matched by mobile."""
    ref = result.batch_ref
    return ref if ref and len(ref) <= 64 and "," not in ref else None


# Every number of an accepted chunk with its own vendor id, in one statement
# (an UPDATE per row was 100 round trips a chunk).
SENT_WITH_IDS_PG = text(f"""
UPDATE recipients AS r SET state = '{R.SENT}', vendor_id = v.vid, updated_at = :now
FROM unnest(CAST(:rids AS bigint[]), CAST(:vids AS text[])) AS v(rid, vid)
WHERE r.id = v.rid AND r.state IN ('{R.QUEUED}', '{R.UNKNOWN}')
""")


def _record_sent_with_ids(conn, pairs: list[tuple[int, str]], now: datetime) -> None:
    if is_postgres(conn):
        conn.execute(
            SENT_WITH_IDS_PG, {"now": now, "rids": [rid for rid, _ in pairs], "vids": [vid for _, vid in pairs]}
        )
        return
    table = cast(Table, Recipient.__table__)  # SQLite, in-process: executemany costs no round trips
    # (an IN list cannot go into an executemany)
    still_waiting = (table.c.state == R.QUEUED) | (table.c.state == R.UNKNOWN)
    conn.execute(
        update(table)
        .where(table.c.id == bindparam("rid"), still_waiting)
        .values(state=R.SENT, vendor_id=bindparam("vid"), updated_at=now),
        [{"rid": rid, "vid": vid} for rid, vid in pairs],
    )


RETRIED = recipients_from(R.QUEUED, (R.UNKNOWN,))
REFUSED_NUMBER = recipients_from(R.FAILED, (R.QUEUED, R.UNKNOWN, R.SENT))
ALL_REFUSED = recipients_from(R.FAILED, ANSWERED)


def _of_chunk(claimed: ClaimedChunk):
    return and_(Recipient.batch_id == claimed.batch_id, Recipient.chunk_seq == claimed.seq)


def _record_accepted(conn, claimed: ClaimedChunk, result: SendResult, refusals: Refusals, now: datetime) -> None:
    """The numbers of an accepted chunk: sent, with their vendor ids; the ones the vendor
    named as refused failed, with its reason (and its code for the number, else
    ``refused``); the ones it only counted (``Refusals``): see ``_record_counted``."""
    if refusals.counted:
        _record_counted(conn, claimed, refusals, now)
    else:
        vids = _vendor_ids(claimed, result)
        if vids:  # one id per number, in the order sent
            _record_sent_with_ids(
                conn, [(rid, vid) for (rid, _), vid in zip(claimed.recipients, vids, strict=True)], now
            )
        else:
            answered = and_(_of_chunk(claimed), Recipient.state.in_(ANSWERED))
            conn.execute(
                update(Recipient).where(answered).values(state=R.SENT, vendor_id=_single_id(result), updated_at=now)
            )
    for mobile, reason in refusals.named.items():
        conn.execute(
            update(Recipient)
            .where(_of_chunk(claimed), Recipient.mobile == mobile, Recipient.state.in_(REFUSED_NUMBER))
            .values(
                state=R.FAILED,
                code=result.failed_codes.get(mobile, REFUSED_CODE),
                detail=fit(Recipient.detail, reason),
                updated_at=now,
            )
        )


def _record_counted(conn, claimed: ClaimedChunk, refusals: Refusals, now: datetime) -> None:
    """The numbers the vendor did not name, when it counted refusals beyond those it named.
    Which of them it refused it does not say, and its ids are its accepted numbers' (in
    no documented order): no number gets an id here; a delivery report ties each id to
    its number, and the relay fails the numbers none placed (settling.place_refusals).
    A count that covers them all leaves no doubt: all failed."""
    others = and_(_of_chunk(claimed), Recipient.mobile.not_in(list(refusals.named)))
    detail = fit(Recipient.detail, refusals.note())
    if refusals.all_others:
        values: dict[str, object] = dict(state=R.FAILED, code=REFUSED_CODE, detail=detail, updated_at=now)
        conn.execute(update(Recipient).where(others, Recipient.state.in_(ALL_REFUSED)).values(**values))
        return
    values = dict(state=R.SENT, vendor_id=None, detail=detail, updated_at=now)
    conn.execute(update(Recipient).where(others, Recipient.state.in_(ANSWERED)).values(**values))


def _record_recipients(conn, claimed: ClaimedChunk, result: SendResult, state: C, now: datetime) -> None:
    of_chunk = _of_chunk(claimed)
    if state is C.PENDING:
        # recipients stay queued for the retry; a late answer (from the spool) to a chunk the
        # relay had turned 'unknown' gives its numbers back to the retry
        conn.execute(
            update(Recipient).where(of_chunk, Recipient.state.in_(RETRIED)).values(state=R.QUEUED, updated_at=now)
        )
        return
    to = RECIPIENT_STATE[state]
    answered = and_(of_chunk, Recipient.state.in_(recipients_from(to, ANSWERED)))
    conn.execute(
        update(Recipient)
        .where(answered)
        .values(state=to, code=result.code, detail=fit(Recipient.detail, result.message or ""), updated_at=now)
    )

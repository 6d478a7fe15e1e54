"""Removing what is old: finished batches (with their chunks and recipients),
parsed poll journal rows, delivery reports and the record of vendor calls (metrics);
and, whatever the age asked, the send policy's expired counts (the frequency caps' and the
duplicate guard's rows whose window has ended, when they are kept in the database).

What it never removes:

* a batch with a chunk still ``pending`` or ``sending`` (in flight), however old;
* a journal row that was not parsed (``fetched`` or ``failed``): it may hold the
  only copy of inbound messages the vendor handed out once;
* blocked numbers (an opt-out must outlive any purge);
* inbound messages, unless asked (``inbound=True``): they are the application's
  data, and smsq cannot know whether it has read them.

Rows go in steps of STEP ids, each step its own transaction, so a purge of
millions of rows never holds one giant transaction or lock; an interrupted
purge is finished by running it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from smsq.store.lifecycle import ChunkState
from smsq.store.models import (
    Batch,
    Chunk,
    InboundMessage,
    NumberSends,
    PollJournal,
    RecentContent,
    Recipient,
    SplitJob,
    StatusReport,
    VendorCall,
    utcnow,
)
from smsq.store.sql import rows_changed
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from .schema import ensure_schema

STEP = 10_000  # rows deleted per transaction
BATCH_GROUP = 500  # batches purged together
IN_FLIGHT = (ChunkState.PENDING, ChunkState.SENDING)
PURGED_JOURNAL_STATES = ("parsed", "vendor_error")  # a vendor error body holds no data
MINIMUM_AGE = timedelta(days=1)  # younger needs force=True

_AGE_RE = re.compile(r"^\s*(\d+)\s*([dh])\s*$")


def parse_age(value: str) -> timedelta:
    """``"90d"`` or ``"36h"`` -> timedelta."""
    m = _AGE_RE.match(value or "")
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"an age looks like 90d (days) or 36h (hours), not {value!r}")
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


@dataclass
class PurgeReport:
    cutoff: datetime  # naive UTC: rows older than this
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)  # table -> rows (would be) removed
    kept_in_flight: int = 0  # old batches kept because a chunk is pending or sending
    kept_unparsed: int = 0  # old journal rows kept because they were never parsed

    def as_dict(self) -> dict:
        return {
            "cutoff": self.cutoff,
            "dry_run": self.dry_run,
            "removed": self.removed,
            "kept_in_flight_batches": self.kept_in_flight,
            "kept_unparsed_journal": self.kept_unparsed,
        }


def _finished_batches(cutoff: datetime):
    in_flight = exists().where(Chunk.batch_id == Batch.id, Chunk.state.in_(IN_FLIGHT))
    splitting = exists().where(SplitJob.batch_id == Batch.id)  # chunks still to be made
    return select(Batch.id).where(Batch.created_at < cutoff, ~in_flight, ~splitting)


def purge(
    older_than: timedelta,
    *,
    dry_run: bool = False,
    inbound: bool = False,
    force: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> PurgeReport:
    """Remove what is older than ``older_than`` (see the module docstring); return
    what was removed. ``dry_run`` counts only. ``progress(table, rows so far)``
    is called after every step."""
    if older_than < MINIMUM_AGE and not force:
        raise ValueError(
            f"refusing to purge rows younger than {MINIMUM_AGE.days} day without force (asked: older than {older_than})"
        )
    conf = settings()
    ensure_schema(conf)
    cutoff = utcnow() - older_than
    report = PurgeReport(cutoff, dry_run)
    url = conf.database_url
    tables = [
        ("poll_journal", PollJournal, [PollJournal.fetched_at < cutoff, PollJournal.state.in_(PURGED_JOURNAL_STATES)]),
        ("status_reports", StatusReport, [StatusReport.created_at < cutoff]),
        # the metrics' record of vendor calls: an exporter counts from where it starts,
        # so old rows going away only looks like a restart to Prometheus
        ("vendor_calls", VendorCall, [VendorCall.created_at < cutoff]),
    ]
    if inbound:
        tables.append(("inbound_messages", InboundMessage, [InboundMessage.created_at < cutoff]))
    # the send policy's counts whose window has ended (frequency caps, duplicate guard): of no
    # use once expired, whatever the age asked
    expired = [(m.__tablename__, m, [m.expires_at < utcnow()]) for m in (NumberSends, RecentContent)]
    with session_scope(url, readonly=True) as session:
        _count_kept(session, report)
        if dry_run:
            _count_removable(session, report, tables + expired)
            return report

    def counted(name: str, n: int) -> None:
        report.removed[name] = report.removed.get(name, 0) + n
        if progress and n:
            progress(name, report.removed[name])

    for name in ("batches", "chunks", "recipients"):
        report.removed[name] = 0
    _purge_batches(url, cutoff, counted)
    for name, model, where in tables:
        report.removed[name] = 0
        _delete_in_steps(url, model, where, partial(counted, name))
    for name, model, where in expired:
        with session_scope(url) as session:
            deleted = delete(model).where(*where).execution_options(synchronize_session=False)
            counted(name, rows_changed(session.execute(deleted)))
    return report


def _count_kept(session: Session, report: PurgeReport) -> None:
    """What is old enough yet stays: batches still in flight, journal rows never parsed."""
    report.kept_in_flight = session.execute(
        select(func.count())
        .select_from(Batch)
        .where(Batch.created_at < report.cutoff, Batch.id.not_in(_finished_batches(report.cutoff)))
    ).scalar_one()
    report.kept_unparsed = session.execute(
        select(func.count())
        .select_from(PollJournal)
        .where(PollJournal.fetched_at < report.cutoff, PollJournal.state.not_in(PURGED_JOURNAL_STATES))
    ).scalar_one()


def _count_removable(session: Session, report: PurgeReport, tables: list) -> None:
    """A dry run's report: the rows a purge would remove, table by table."""
    finished = _finished_batches(report.cutoff)
    report.removed["batches"] = session.execute(select(func.count()).select_from(finished.subquery())).scalar_one()
    for name, owned in (("chunks", Chunk), ("recipients", Recipient)):
        report.removed[name] = session.execute(
            select(func.count()).select_from(owned).where(owned.batch_id.in_(finished))
        ).scalar_one()
    for name, model, where in tables:
        report.removed[name] = session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def _delete_in_steps(url: str, model, where: list, counted: Callable[[int], None]) -> None:
    """DELETE ... WHERE id IN (SELECT id ... LIMIT STEP), one transaction a step, until none is left."""
    while True:
        with session_scope(url) as session:
            step = select(model.id).where(*where).limit(STEP).scalar_subquery()
            n = rows_changed(
                session.execute(delete(model).where(model.id.in_(step)).execution_options(synchronize_session=False))
            )
        if not n:
            return
        counted(n)


def _purge_batches(url: str, cutoff: datetime, counted: Callable[[str, int], None]) -> None:
    while True:
        with session_scope(url, readonly=True) as session:
            group = session.execute(_finished_batches(cutoff).order_by(Batch.id).limit(BATCH_GROUP)).scalars().all()
        if not group:
            return
        # Every step checks again that the batch is finished: an operator's resend
        # meanwhile puts it back in flight, and then it is left alone.
        finished = _finished_batches(cutoff).where(Batch.id.in_(group))
        for name, model in (("recipients", Recipient), ("chunks", Chunk)):
            _delete_in_steps(url, model, [model.batch_id.in_(finished)], partial(counted, name))
        with session_scope(url) as session:
            n = rows_changed(
                session.execute(
                    delete(Batch).where(Batch.id.in_(finished)).execution_options(synchronize_session=False)
                )
            )
        counted("batches", n)  # a batch left out went back in flight: it is not picked again


__all__ = ["purge", "parse_age", "PurgeReport"]

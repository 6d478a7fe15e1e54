"""What vendors refused of a batch in answers that took the rest of a call (dxt ``b``,
orgws FailPhone, jinxin failCount/failList, qxs successCounts), read from its chunks:
for `smsq status`, `smsq batches` and whether a batch is clean."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from smsq.providers.base import BEIJING
from smsq.store.models import Chunk


@dataclass(frozen=True)
class Refused:
    """A batch's refused numbers. ``numbers``: all the vendors refused, named or only
    counted; the named ones and the counted ones already placed are ``failed``
    recipients. ``open``: counted, and no number is known for them yet; of those,
    ``awaiting`` may still be placed by delivery reports (until ``due_at``, naive UTC:
    then the numbers no report placed end failed); the rest can never be (their vendor
    sends no reports): their chunk's numbers stay ``sent``, one of them refused."""

    numbers: int = 0
    open: int = 0
    awaiting: int = 0
    due_at: datetime | None = None

    @property
    def untold(self) -> int:
        """Open refusals no delivery report can ever place."""
        return self.open - self.awaiting

    def as_dict(self) -> dict:
        due = None if self.due_at is None else self.due_at.replace(tzinfo=UTC).astimezone(BEIJING)
        return {
            "numbers": self.numbers,
            "open": self.open,
            "awaiting_reports": self.awaiting,
            "untold": self.untold,
            "due_at": None if due is None else due.isoformat(timespec="seconds"),
        }


NONE = Refused()


def refused_of(session: Session, batch_ids: list[int]) -> dict[int, Refused]:
    """{batch id: Refused} of the batches that have any, in one GROUP BY over their chunks."""
    if not batch_ids:
        return {}
    awaiting = case((Chunk.refused_due_at.is_not(None), Chunk.refused_open), else_=0)
    rows = session.execute(
        select(
            Chunk.batch_id,
            func.sum(Chunk.refused),
            func.coalesce(func.sum(Chunk.refused_open), 0),
            func.coalesce(func.sum(awaiting), 0),
            func.max(Chunk.refused_due_at),
        )
        .where(Chunk.batch_id.in_(batch_ids), Chunk.refused.is_not(None))
        .group_by(Chunk.batch_id)
    ).all()
    return {batch_id: Refused(int(n), int(opened), int(waiting), due) for batch_id, n, opened, waiting, due in rows}

"""Running totals of ``vendor_calls`` (count by account and outcome, a duration
histogram by account), read incrementally by id.

Why a cursor and not a ``GROUP BY`` per scrape: the table gains a row per chunk
forever (tens of millions in a busy year); re-aggregating it every 15 s would
scan it all every time. The tally reads each row once, and still counts from
the table's first row, so every exporter — restarted, or several side by side —
reports the same absolute totals.

Why not simply ``id > last id read``: ids come from a sequence when a row is
inserted, not when its transaction commits, so a row with a lower id can
become visible after a higher one was read. The tally therefore re-reads the
recent rows: its floor (every id at or under it is counted or will never
come) only moves past a row once a row inserted ``SETTLE_SECONDS`` later has
been seen. The rows above the floor are remembered by id so none is counted
twice; they are the last ``SETTLE_SECONDS`` of calls, a small set. A record
transaction that stays open longer than that would be missed — they take
milliseconds.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from smsq.store.models import VendorCall

# Upper bounds (seconds) of the vendor call histogram: a vendor answers in
# 50-500 ms when well; timeouts are 5-30 s.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
SETTLE_SECONDS = 30.0
PAGE = 10_000  # rows read per query


@dataclass
class Durations:
    """One account's histogram: counts per bucket (not cumulative), the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``[("0.05", n), ..., ("+Inf", count)]`` as Prometheus buckets want them."""
        out, running = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class CallTally:
    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = defaultdict(int)  # (account, outcome) -> calls
        self.durations: dict[str, Durations] = defaultdict(Durations)
        self._floor = 0
        self._above_floor: dict[int, datetime] = {}  # counted ids over the floor -> created_at
        self._newest: datetime | None = None

    def update(self, session: Session) -> int:
        """Count the rows not counted yet; return how many were new."""
        new, after = 0, self._floor
        while True:
            rows = session.execute(
                select(VendorCall.id, VendorCall.account, VendorCall.outcome, VendorCall.seconds, VendorCall.created_at)
                .where(VendorCall.id > after)
                .order_by(VendorCall.id)
                .limit(PAGE)
            ).all()
            for row in rows:
                if row.id in self._above_floor:
                    continue  # read before, still inside the settling window
                self.calls[(row.account, row.outcome)] += 1
                self.durations[row.account].add(row.seconds)
                self._above_floor[row.id] = row.created_at
                if self._newest is None or row.created_at > self._newest:
                    self._newest = row.created_at
                new += 1
            self._raise_floor()
            if len(rows) < PAGE:
                return new
            after = rows[-1].id

    def _raise_floor(self) -> None:
        """Move the floor past every row inserted ``SETTLE_SECONDS`` before the newest
        row seen: anything under them that was going to commit has committed."""
        if self._newest is None:
            return
        settled = self._newest - timedelta(seconds=SETTLE_SECONDS)
        old = [row_id for row_id, created in self._above_floor.items() if created <= settled]
        if old:
            self._floor = max(self._floor, max(old))
            self._above_floor = {i: c for i, c in self._above_floor.items() if i > self._floor}

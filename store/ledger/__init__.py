"""The ledger: the only code that writes chunk and recipient rows.

Every write moves a row along a transition of store/lifecycle.py's tables, and
checks it: a single row's move before it is written (``IllegalTransition``), a
bulk update by selecting only the from-states the table allows.

* claims.py    a worker's claim: claim, release, hold, and the rows' queue marks
* records.py   the outcome of a vendor call (decided by the caller), written
* cutting.py   chunks made: a batch cut into chunks, a route's failover moving numbers on
* narrowing.py a chunk refused over a number the vendor did not name: its offenders
               failed, the rest in new chunks of its account
* validity.py  chunks whose batch's validity passed before their vendor call: expired
* settling.py  chunks settled without a call of their own: made unknown after the send timeout, cancelled,
               settled by an operator or by a delivery report; numbers a vendor
               refused by count only, placed when it is known which
"""

from .claims import (
    FIRST_ATTEMPT,
    ClaimedChunk,
    claim,
    hold,
    mark_queued,
    release,
    release_in,
    still_ours,
    unqueue,
    wake,
)
from .cutting import Cut, cut, fail_claimed, move, write_rejected, write_short
from .narrowing import Refused, narrow, refused_chunk, spend_calls, spent_calls
from .records import REFUSED_CODE, count_call, record
from .settling import CANCELLED_DETAIL, cancel_pending, expire, place_refusals, settle, settle_by_report
from .validity import expire_claimed, expire_waiting

__all__ = [
    "ClaimedChunk",
    "claim",
    "hold",
    "mark_queued",
    "release",
    "release_in",
    "still_ours",
    "unqueue",
    "wake",
    "Cut",
    "cut",
    "fail_claimed",
    "move",
    "write_rejected",
    "write_short",
    "Refused",
    "narrow",
    "refused_chunk",
    "spend_calls",
    "spent_calls",
    "FIRST_ATTEMPT",
    "REFUSED_CODE",
    "count_call",
    "record",
    "CANCELLED_DETAIL",
    "cancel_pending",
    "expire",
    "settle",
    "settle_by_report",
    "place_refusals",
    "expire_claimed",
    "expire_waiting",
]

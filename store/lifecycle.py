"""The states a chunk and a recipient go through, and the moves allowed between them.

The values are the strings stored in ``chunks.state`` and ``recipients.state``; a
``StrEnum`` member equals its string, so rows read back compare equal to members.

``CHUNK_TRANSITIONS`` and ``RECIPIENT_TRANSITIONS`` are the only list of the moves
a row may make (store/ledger.py checks every write against them; the docs draw the
state diagrams from them). A row is born ``pending`` (chunk) or ``queued`` /
``rejected`` (recipient); a state with no entry, or an empty one, is final.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class ChunkState(StrEnum):
    PENDING = "pending"  # waiting for a worker (new, retrying, held, or back from a call never made)
    SENDING = "sending"  # claimed by a worker; its vendor call may be under way
    ACCEPTED = "accepted"  # the vendor took it
    FAILED = "failed"  # the vendor refused it, or its retries ran out
    UNKNOWN = "unknown"  # the call may have reached the vendor; nobody can tell (an operator settles it)
    CANCELLED = "cancelled"  # an operator cancelled it before it was sent
    MOVED = "moved"  # failover: its numbers went to new chunks on the route's next account


class RecipientState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REJECTED = "rejected"  # refused at intake (not a mobile number, blocked)
    CANCELLED = "cancelled"


C, R = ChunkState, RecipientState

# from -> the states a chunk may go to; the comment says who makes each move.
CHUNK_TRANSITIONS: dict[ChunkState, frozenset[ChunkState]] = {
    C.PENDING: frozenset(
        {
            C.SENDING,  # a worker claims it
            C.PENDING,  # held for a while (an open circuit, a rate limit, an account not known yet)
            C.CANCELLED,  # an operator cancels its batch
            C.MOVED,  # failover: another chunk of its batch on the same account moves it along
        }
    ),
    C.SENDING: frozenset(
        {
            C.ACCEPTED,
            C.FAILED,
            C.UNKNOWN,  # the vendor's answer
            C.PENDING,  # a retry, a call never made (released), or held by its route
            C.MOVED,  # failover: its call tripped the account's circuit, or the circuit was open
            # (C.UNKNOWN also when the relay finds it sending past the send timeout)
        }
    ),
    C.UNKNOWN: frozenset(
        {
            C.ACCEPTED,
            C.FAILED,
            C.PENDING,
            C.UNKNOWN,  # a late answer (from the spool)
            # an operator settles it (accepted, failed, resend = pending); a delivery report (accepted)
        }
    ),
    C.FAILED: frozenset(
        {
            C.FAILED,
            C.PENDING,  # an operator settles it as failed, or resends it
        }
    ),
    C.ACCEPTED: frozenset(),
    C.CANCELLED: frozenset(),
    C.MOVED: frozenset(),
}

RECIPIENT_TRANSITIONS: dict[RecipientState, frozenset[RecipientState]] = {
    R.QUEUED: frozenset(
        {
            R.SENT,
            R.FAILED,
            R.UNKNOWN,  # its chunk's answer (failed also: blocked at the route's next account)
            R.CANCELLED,  # its chunk was cancelled
            R.QUEUED,  # moved to a new chunk (failover), or given back to a resend
        }
    ),
    R.SENT: frozenset(
        {
            R.DELIVERED,
            R.FAILED,  # a delivery report; failed also: the vendor refused that number
        }
    ),
    R.UNKNOWN: frozenset(
        {
            R.SENT,
            R.FAILED,
            R.QUEUED,
            R.UNKNOWN,  # a late answer, or an operator (queued: resend)
            R.DELIVERED,  # a delivery report
        }
    ),
    R.FAILED: frozenset(
        {
            R.SENT,
            R.FAILED,
            R.QUEUED,  # an operator settles its chunk
            R.DELIVERED,  # a late report changing a settled status
        }
    ),
    R.DELIVERED: frozenset({R.FAILED, R.DELIVERED}),  # a late report changing a settled status
    R.REJECTED: frozenset(),
    R.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """A write that would move a chunk or a recipient along no allowed transition."""

    def __init__(self, kind: str, from_state: str, to_state: str, row_id: object = None, by: str = ""):
        self.kind, self.from_state, self.to_state, self.row_id = kind, from_state, to_state, row_id
        which = f"{kind} {row_id}" if row_id is not None else kind
        super().__init__(
            f"{which}: {from_state} -> {to_state} is not an allowed transition" + (f" by {by}" if by else "")
        )


def _check(table: Mapping, kind: str, from_state: str, to_state: str, row_id: object) -> None:
    try:
        allowed = table[type(next(iter(table)))(from_state)]
    except (ValueError, KeyError):
        raise IllegalTransition(kind, from_state, to_state, row_id) from None
    if to_state not in allowed:
        raise IllegalTransition(kind, from_state, to_state, row_id)


def check_chunk(from_state: str, to_state: str, chunk_id: object = None) -> None:
    """Raise IllegalTransition unless a chunk may go from ``from_state`` to ``to_state``."""
    _check(CHUNK_TRANSITIONS, "chunk", from_state, to_state, chunk_id)


def check_recipient(from_state: str, to_state: str, recipient_id: object = None) -> None:
    """Raise IllegalTransition unless a recipient may go from ``from_state`` to ``to_state``."""
    _check(RECIPIENT_TRANSITIONS, "recipient", from_state, to_state, recipient_id)


def chunks_from(to_state: ChunkState, among: Iterable[ChunkState]) -> tuple[ChunkState, ...]:
    """The states ``among`` that a bulk update to ``to_state`` may select (its WHERE clause):
    every one of them must be allowed to move there, or IllegalTransition."""
    among = tuple(among)
    for state in among:
        check_chunk(state, to_state)
    return among


def recipients_from(to_state: RecipientState, among: Iterable[RecipientState]) -> tuple[RecipientState, ...]:
    """As ``chunks_from``, for recipients."""
    among = tuple(among)
    for state in among:
        check_recipient(state, to_state)
    return among

"""The states a chunk and a recipient go through, and the moves allowed between them.

The values are the strings stored in ``chunks.state`` and ``recipients.state``; a
``StrEnum`` member equals its string, so rows read back compare equal to members.

``CHUNK_TRANSITIONS`` and ``RECIPIENT_TRANSITIONS`` are the only list of the moves
a row may make (store/ledger/ checks every write against them; the docs draw the
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
    # its call was refused over a number the vendor did not name (tasks/narrowing.py): the
    # offenders it could tell failed, the rest went to new chunks of its account
    NARROWED = "narrowed"
    EXPIRED = "expired"  # its batch's validity (valid_for) passed before its vendor call: never sent


class RecipientState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REJECTED = "rejected"  # refused at intake (not a mobile number, blocked)
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # its chunk expired: the batch's validity passed before the number was sent


C, R = ChunkState, RecipientState

# from -> {to: who makes that move}. The docs draw the state diagrams from these tables
# (tools/state_diagram.py), so the labels are the diagram's words.
CHUNK_STARTS = (C.PENDING,)  # intake and the split write every chunk pending
CHUNK_TRANSITIONS: dict[ChunkState, dict[ChunkState, str]] = {
    C.PENDING: {
        C.SENDING: "a worker claims it",
        C.PENDING: "held (open circuit, rate limit, account not known yet, send window closed)",
        C.CANCELLED: "smsq cancel",
        C.MOVED: "failover moves its batch's chunks on",
        C.EXPIRED: "its validity passed while it waited (relay)",
    },
    C.SENDING: {
        C.ACCEPTED: "the vendor took it",
        C.FAILED: "refused, or its retries ran out",
        C.UNKNOWN: "ambiguous answer, or no answer in SMSQ_SEND_TIMEOUT (relay)",
        C.PENDING: "a retry, a claim given back (send window closed, ...), or held by its route",
        C.MOVED: "failover, as its call tripped the circuit or the circuit was open",
        C.NARROWED: "refused over a number it did not name: its numbers split into new chunks",
        C.EXPIRED: "claimed past its validity: no vendor call",
    },
    C.UNKNOWN: {
        C.ACCEPTED: "a late answer, a delivery report, or smsq settle",
        C.FAILED: "a late answer, or smsq settle",
        C.PENDING: "a late transient answer, or smsq settle resend",
        C.UNKNOWN: "a late ambiguous answer",
    },
    C.FAILED: {
        C.FAILED: "smsq settle failed",
        C.PENDING: "smsq settle resend",
    },
    C.ACCEPTED: {},
    C.CANCELLED: {},
    C.MOVED: {},
    C.NARROWED: {},
    C.EXPIRED: {},
}

RECIPIENT_STARTS = (R.QUEUED, R.REJECTED)  # rejected: refused at intake, in no chunk
RECIPIENT_TRANSITIONS: dict[RecipientState, dict[RecipientState, str]] = {
    R.QUEUED: {
        R.SENT: "its chunk accepted",
        R.FAILED: (
            "its chunk failed, blocked at the route's next account, found to be why its chunk was refused, "
            "or refused in the vendor's answer"
        ),
        R.UNKNOWN: "its chunk unknown",
        R.CANCELLED: "its chunk cancelled",
        R.EXPIRED: "its chunk expired",
        R.QUEUED: "moved to a new chunk (failover, narrowing), or a resend",
    },
    R.SENT: {
        R.DELIVERED: "a delivery report",
        R.FAILED: "a delivery report, the vendor named it refused, or no report placed a refused count (relay)",
    },
    R.UNKNOWN: {
        R.SENT: "a late answer, or smsq settle",
        R.FAILED: "a late answer, or smsq settle",
        R.QUEUED: "smsq settle resend",
        R.UNKNOWN: "a late ambiguous answer",
        R.DELIVERED: "a delivery report",
    },
    R.FAILED: {
        R.SENT: "smsq settle accepted",
        R.FAILED: "smsq settle failed",
        R.QUEUED: "smsq settle resend",
        R.DELIVERED: "a late delivery report",
    },
    R.DELIVERED: {
        R.FAILED: "a late report changing a settled status",
        R.DELIVERED: "a repeated report",
    },
    R.REJECTED: {},
    R.CANCELLED: {},
    R.EXPIRED: {},
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

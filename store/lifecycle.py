"""The states a chunk and a recipient go through, as enums.

The values are the strings stored in ``chunks.state`` and ``recipients.state``; a
``StrEnum`` member equals its string, so rows read back compare equal to members.
"""
from __future__ import annotations

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

"""What a vendor's answer to a chunk's call becomes, recorded through the ledger
(store/ledger), and what a chunk's run ends as. What an answer means is decided once,
by tasks/decisions.py; in short:

   accepted                  -> accepted; recipients sent (vendor ids kept); numbers the
                                vendor refused failed, or, counted only, placed by reports
   transient                 -> pending again after a backoff, for SMSQ_RETRY_FOR
   rate_limited              -> pending after the vendor's interval; not counted as an attempt
   auth / balance            -> failed, logged as an alert; the account's circuit opens
                                (tasks/circuit.py): its other chunks wait without calling the vendor
   invalid_request / blocked -> failed
   refused over a number it did not name (linkws -11)
                             -> narrowed: the offenders fail, the rest goes to new chunks
                                (tasks/narrowing.py records it, not this module)
   ambiguous                 -> unknown: never resent automatically
"""

from __future__ import annotations

import logging
from enum import StrEnum

from smsq.providers import Outcome, SendResult, provider_class
from smsq.store import ledger
from smsq.store.ledger import ClaimedChunk
from smsq.store.lifecycle import ChunkState
from smsq.store.models import utcnow
from smsq.worker.config import Settings

from .account_health import clear_flag, flag_account
from .decisions import Decision, Policy, decide
from .publish import MAX_COUNTDOWN, publish_chunk

log = logging.getLogger("smsq.send")


class ChunkRun(StrEnum):
    """How one chunk's run (tasks/send.py ``run_chunk``) ended; equal to its string."""

    ACCEPTED = "accepted"  # the vendor took it
    PENDING = "pending"  # the vendor asked to try again later (a retry is due)
    FAILED = "failed"  # recorded failed (raised as ChunkFailed by the send path)
    UNKNOWN = "unknown"  # recorded unknown (raised as ChunkUnknown by the send path)
    SPOOLED = "spooled"  # the answer waits in the local spool for the database (tasks/outcome_keeper.py)
    SKIPPED = "skipped"  # not pending (already claimed or done): nothing to do
    DEFERRED = "deferred"  # no rate-limit slot, or an account not known yet: back to the queue, unclaimed
    RELEASED = "released"  # the claim was given back untouched: the relay sends it again
    HELD = "held"  # its account's circuit is open: it waits, pending
    WAITING = "waiting"  # claimed outside its send window: it waits, pending, with the rest of its group
    MOVED = "moved"  # failover: its numbers went to the route's next account
    NARROWED = "narrowed"  # refused over a number it did not name: its numbers went to new chunks
    EXPIRED = "expired"  # claimed past its validity: not sent (raised as ChunkExpired by the send path)


def decided(conf: Settings, claimed: ClaimedChunk, result: SendResult, probe: bool = False) -> Decision:
    """What the answer ``result`` to the claimed chunk's call means, now (tasks/decisions.py)."""
    return decide(
        result,
        claimed.attempt,
        claimed.first_attempt_at,
        utcnow(),
        Policy.of(conf),
        probe=probe,
        numbers=len(claimed.recipients),
        reports=sends_reports(conf, claimed.account),
    )


def sends_reports(conf: Settings, account: str) -> bool:
    """The account's vendor has delivery reports to poll (dxt, qxs; not jinxin, orgws)."""
    known = conf.accounts.get(account)
    return known is not None and "reports" in provider_class(known.provider).poll_kinds


def record(
    conf: Settings, claimed: ClaimedChunk, result: SendResult, decision: Decision, call_seconds: float | None = None
) -> tuple[ChunkState, float | None]:
    """Record the answer as ``decision`` says; return the chunk's new state and, for a
    retry, the delay. ``call_seconds``: how long the vendor call took, kept in
    ``vendor_calls`` (None: no vendor call was made)."""
    state, retry_in = decision.next_state, decision.wait
    if not ledger.record(
        conf,
        claimed,
        result,
        state,
        detail=decision.detail,
        retry_at=decision.retry_at,
        queued=retry_in is not None and retry_in <= MAX_COUNTDOWN,
        counted=decision.attempt_counts,
        call_seconds=call_seconds,
        refused_due_at=decision.refused_due_at,
    ):
        log.warning("chunk %s: outcome %s not recorded, the chunk moved on", claimed.chunk_id, state)
        return state, None
    return state, retry_in


def after_record(conf: Settings, claimed: ClaimedChunk, result: SendResult, retry_in: float | None) -> None:
    """What follows a recorded answer, whether it was recorded at once or from the spool:
    the account's health flag, and a short retry's message."""
    if result.outcome in (Outcome.AUTH, Outcome.BALANCE):
        flag_account(conf, claimed.account, result)
    elif result.outcome is Outcome.OK:
        clear_flag(conf, claimed.account)
    if retry_in is not None and retry_in <= MAX_COUNTDOWN:
        publish_chunk(
            claimed.chunk_id, claimed.lane, batch_id=claimed.batch_id, account=claimed.account, countdown=retry_in
        )

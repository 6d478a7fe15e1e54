"""What a vendor's answer means for its chunk and its account: one pure function.

``decide`` reads the answer (a ``SendResult``), which call of the chunk it was, when
the chunk's first call was, the time, and the retry settings; it returns a
``Decision``: the chunk's next state, when it is called again, whether the account's
circuit opens or closes (tasks/circuit.py), whether a routed chunk moves on
(tasks/routes.py), and the text an operator reads in the chunk's detail. No database,
no broker: tasks/send.py decides once per vendor call and hands the decision to the
circuit and to the record of the outcome.

The taxonomy (providers/base.py):

    ok                        -> accepted; numbers the vendor refused by count only wait
                                 SMSQ_REPORT_WAIT for delivery reports to tell them apart
    ambiguous                 -> unknown: never resent automatically
    invalid_request / blocked -> failed
      refused whole over a number it did not name (``SendResult.refused_whole``, linkws -11):
                              -> narrowed: the chunk's numbers go to new chunks until the
                                 offenders are found (a chunk of one number: failed, it is one)
    auth / balance            -> failed; the account's circuit opens, a routed chunk moves on
                                 (an answer about the account, not the request: every call
                                 gets it until an operator acts; providers class each code)
    rate_limited              -> pending after the vendor's interval; the call is not counted
    transient                 -> pending after a backoff, while the retry budget lasts;
                                 then failed, and the circuit opens as for auth

The retry budget. Vendor outages of minutes are ordinary, so transient failures
(connect refused, HTTP 5xx, the vendor's "busy") are retried for a time budget,
``SMSQ_RETRY_FOR`` (an hour by default), counted from the chunk's first vendor call;
``SMSQ_MAX_ATTEMPTS``, when set, caps the number of calls as well. The waits grow 2,
4, 8 ... seconds up to ``SMSQ_RETRY_BACKOFF_MAX`` (5 minutes), each jittered to
between half and all of it, so chunks that failed together do not come back
together; the last wait is cut to end at the budget's end. The due time lives in
the database (``next_attempt_at``); a wait of at most a minute also rides a broker
countdown, a longer one is released by the relay.

The half-open probe (tasks/circuit.py): any answer showing the account works (ok,
invalid request, blocked numbers, rate limited) closes the circuit; a transient
failure opens it again (the chunk itself is retried as any other); an ambiguous
answer decides nothing.

Narrowing (tasks/narrowing.py). A vendor that refuses a whole call over a number in it
and took none of it (the provider marks the answer ``refused_whole``) lets smsq send the
others again. ``decide`` says ``narrowed`` for a chunk of several numbers (``failed`` for
one: that number is the offender), and ``split_refused`` says where its numbers go: the
offenders it can tell (named by the vendor, or on the account's blocked list) fail and
the rest goes to one new chunk; when it can tell none, the numbers go to two halves, each
sent as any chunk. A half that is accepted clears its numbers; a refused half is split
again. Finding k offenders among n numbers so costs at most 2·k·⌈log2 n⌉ extra calls,
which SMSQ_NARROW_MAX_CALLS caps.

A poll's answer (``decide_poll``) means less: nothing is retried or failed, the
next turn polls again. It only speaks for the account's circuit, the same one the
sends use (one password, one circuit):

    auth     -> the circuit opens: polls of every endpoint and sends rest for the cool-off
    balance  -> the circuit opens: the sends rest (a balance *reading* of 0 is a reading,
                ``ok``: the providers return it as a number; no vendor's poll documents
                a balance refusal)
    as the half-open probe: an answer showing the account works (ok, invalid request,
    blocked, rate limited) closes it, a transient failure opens it again, and an
    answer that says nothing (ambiguous, a body the parser cannot read) gives the
    probe back: the next call probes.

Which open circuits hold the polls (``holds_polls``): those opened for ``auth``, by a
send or a poll. A refused password is refused on every endpoint, and trying it again
is what locks accounts; and a poll answered shows the password works again, so a poll
may be the probe. A circuit opened for ``balance`` or for a send's retries running out
holds the sends only: the polls go on (delivery reports and replies keep coming), and
never probe it: a poll's answer says nothing of the credit, and closing the circuit
on it would send every waiting chunk into the vendor's refusal, each failing for good.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from smsq.providers import Outcome, SendResult
from smsq.store.lifecycle import ChunkState

LAST_TRY_MIN_WAIT = 1.0  # the final call of a budget still waits this long
RATE_LIMIT_WAIT = 30.0  # seconds, when a rate-limited answer names no interval

# The account should rest: calling again with a wrong password is how vendor accounts
# get locked (dxt -10: 帐号已被锁定).
TRIPS = (Outcome.AUTH, Outcome.BALANCE)
# A probe answered so shows the account works.
ANSWERED = (Outcome.OK, Outcome.INVALID_REQUEST, Outcome.BLOCKED, Outcome.RATE_LIMITED)
# Refusals a vendor may mark "refused whole over a number" (providers/base.py refused_whole).
REFUSED = (Outcome.BLOCKED, Outcome.INVALID_REQUEST)
FINAL_STATE = {Outcome.OK: ChunkState.ACCEPTED, Outcome.AMBIGUOUS: ChunkState.UNKNOWN}  # any other: failed

Draw = Callable[[float, float], float]  # a number between two bounds: the backoff's jitter


@dataclass(frozen=True)
class Policy:
    """The settings a decision needs (worker/config.py ``Settings``)."""

    retry_for: float = 3600.0  # SMSQ_RETRY_FOR: seconds of transient retries from the first call
    retry_backoff_max: float = 300.0  # SMSQ_RETRY_BACKOFF_MAX: the longest wait between two calls
    max_attempts: int = 0  # SMSQ_MAX_ATTEMPTS: an extra cap on calls per chunk; 0: none
    report_wait: float = 172800.0  # SMSQ_REPORT_WAIT: seconds delivery reports may place refused numbers

    @classmethod
    def of(cls, conf) -> Policy:
        return cls(conf.retry_for, conf.retry_backoff_max, conf.max_attempts, conf.report_wait)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    next_state: ChunkState
    detail: str  # the chunk's detail: the vendor's words; for retries run out, why it gave up first
    wait: float | None = None  # pending: seconds until the chunk is called again; None: not retried
    retry_at: datetime | None = None  # naive UTC: when the wait ends
    attempt_counts: bool = True  # False: a rate-limited call is given back, it does not count
    trips_circuit: bool = False  # the account's circuit opens (again)
    closes_circuit: bool = False  # the probe was answered: the account works
    moves_on_route: bool = False  # the vendor did not take it and the account should rest
    reason: str = ""  # what the answer says of the account: the circuit's reason, a move's detail
    narrows: bool = False  # refused over a number it did not name: narrowing finds it (tasks/narrowing.py)
    # accepted, with numbers the vendor refused by count only (dxt b): when those of its numbers
    # no delivery report has placed end failed. None: none such, or the vendor sends no reports
    refused_due_at: datetime | None = None


class _Common(TypedDict):
    """The fields every decision of one answer shares."""

    outcome: Outcome
    reason: str
    closes_circuit: bool


def backoff(attempt: int, cap: float, draw: Draw = random.uniform) -> float:
    """Between half and all of 2**attempt seconds, at most ``cap``."""
    ceiling = min(cap, 2.0 ** min(attempt, 30))
    return draw(ceiling / 2, ceiling)


def retry_wait(
    attempt: int, first_attempt_at: datetime | None, now: datetime, policy: Policy, draw: Draw = random.uniform
) -> tuple[float | None, str]:
    """After the ``attempt``-th call of a chunk failed transiently: (seconds to wait, "") or
    (None, why it gives up). The budget counts from ``first_attempt_at`` (None: now)."""
    spent = (now - (first_attempt_at or now)).total_seconds()
    left = policy.retry_for - spent
    gave_up = f"gave up after {attempt} attempts in {spent:.0f}s"
    if policy.max_attempts and attempt >= policy.max_attempts:
        return None, f"{gave_up} (SMSQ_MAX_ATTEMPTS={policy.max_attempts})"
    if left <= 0:
        return None, f"{gave_up} (SMSQ_RETRY_FOR={policy.retry_for:.0f}s)"
    # The last wait is cut to end at the budget's end: one more call right then.
    return max(LAST_TRY_MIN_WAIT, min(backoff(attempt, policy.retry_backoff_max, draw), left)), ""


def decide(
    result: SendResult,
    attempt: int,
    first_attempt_at: datetime | None,
    now: datetime,
    policy: Policy,
    *,
    probe: bool = False,
    reports: bool = True,
    draw: Draw = random.uniform,
    numbers: int = 1,
) -> Decision:
    """What the answer ``result`` to the ``attempt``-th call of a chunk means (see the module's
    docstring). ``probe``: the call was its account's half-open probe; ``reports``: its vendor
    sends delivery reports; ``draw``: the jitter; ``numbers``: how many numbers the call carried."""
    outcome, said = result.outcome, result.message or ""
    fields = _Common(outcome=outcome, reason=reason(result, attempt), closes_circuit=probe and outcome in ANSWERED)
    if result.refused_whole and outcome in REFUSED:
        # Nothing was taken: its numbers may go again. One number is the offender itself.
        state = ChunkState.NARROWED if numbers > 1 else ChunkState.FAILED
        return Decision(next_state=state, detail=said, narrows=True, **fields)
    if outcome is Outcome.RATE_LIMITED:
        interval = result.retry_after or RATE_LIMIT_WAIT
        return Decision(
            next_state=ChunkState.PENDING,
            detail=said,
            wait=interval,
            retry_at=now + timedelta(seconds=interval),
            attempt_counts=False,
            **fields,
        )
    if outcome is Outcome.TRANSIENT:
        wait, why = retry_wait(attempt, first_attempt_at, now, policy, draw)
        if wait is not None:
            return Decision(
                next_state=ChunkState.PENDING,
                detail=said,
                wait=wait,
                retry_at=now + timedelta(seconds=wait),
                trips_circuit=probe,
                **fields,
            )
        return Decision(
            next_state=ChunkState.FAILED,
            detail=f"{why}: {said}",
            trips_circuit=True,
            moves_on_route=True,
            **fields,
        )
    rests = outcome in TRIPS
    return Decision(
        next_state=FINAL_STATE.get(outcome, ChunkState.FAILED),
        detail=said,
        trips_circuit=rests,
        moves_on_route=rests,
        refused_due_at=refused_due(result, now, policy, reports),
        **fields,
    )


@dataclass(frozen=True)
class PollDecision:
    """What one poll's answer means for its account's circuit (tasks/circuit.py)."""

    trips_circuit: bool = False  # the account's circuit opens (again)
    closes_circuit: bool = False  # the probe was answered: the account works
    gives_back_probe: bool = False  # the probe's answer says nothing: the next call probes
    reason: str = ""  # the circuit's reason: "auth -7: 帐号登录验证失败 ..., on the reports poll"


def decide_poll(outcome: str, detail: str, kind: str, *, probe: bool = False) -> PollDecision:
    """What a poll of ``kind`` that came to ``outcome`` (an ``Outcome`` value, or ``failed``:
    a body the parser could not read) means for the account's circuit. ``probe``: the
    poll was the account's half-open probe."""
    known = next((o for o in Outcome if o.value == outcome), None)
    if known in TRIPS or (probe and known is Outcome.TRANSIENT):
        return PollDecision(
            trips_circuit=True, reason=" ".join(w for w in (outcome, detail) if w) + f", on the {kind} poll"
        )
    if not probe:
        return PollDecision()
    if known in ANSWERED:
        return PollDecision(closes_circuit=True, reason=f"the {kind} poll was answered ({outcome})")
    return PollDecision(gives_back_probe=True, reason=f"the {kind} poll said nothing of the account ({outcome})")


def holds_polls(reason: str) -> bool:
    """Does a circuit opened for ``reason`` hold the account's polls too (module docstring)?
    Every trip's reason starts with its outcome (``reason``, ``decide_poll``): "auth -7 ..."."""
    return reason.split(" ", 1)[0] == Outcome.AUTH.value


PROBE_SAID = "; then the probe: "


def reopened_for(previous: str, why: str) -> str:
    """The reason of a circuit its half-open probe opens again with ``why``. A transient
    failure says nothing of the password: a circuit that held the polls (``previous``)
    still does, and names both. Any other answer says what the account is now."""
    if holds_polls(previous) and why.split(" ", 1)[0] == Outcome.TRANSIENT.value:
        return previous.split(PROBE_SAID)[0] + PROBE_SAID + why
    return why


def refused_due(result: SendResult, now: datetime, policy: Policy, reports: bool) -> datetime | None:
    """An accepted answer that counts refused numbers it does not name: the numbers of the
    call that no delivery report places within ``SMSQ_REPORT_WAIT`` were the refused ones.
    A vendor without delivery reports (jinxin) can never tell which: None."""
    if result.outcome is not Outcome.OK or not result.unnamed_refusals or not reports:
        return None
    return now + timedelta(seconds=policy.report_wait)


def reason(result: SendResult, attempt: int) -> str:
    """``auth -7 用户登入信息验证失败``; ``transient after 5 attempts: HTTP 500 ...``."""
    words = [result.outcome.value, result.code or "", result.message or ""]
    if result.outcome is Outcome.TRANSIENT and attempt > 1:
        words[0] = f"transient after {attempt} attempts:"
    return " ".join(w for w in words if w)


@dataclass(frozen=True)
class Split:
    """Where the numbers of a chunk refused over a number go (``split_refused``)."""

    offenders: list[tuple[int, str]]  # (recipient id, mobile): failed as the refusal's cause, and blocked
    parts: list[list[tuple[int, str]]]  # the new chunks, each sent as any chunk


def split_refused(numbers: list[tuple[int, str]], known: set[str]) -> Split:
    """The refused chunk's queued ``numbers`` (in the order sent) split by what is known of the
    offenders (``known``: named by the vendor, or on the account's blocked list). Known ones fail
    and the rest is sent once more, whole; none known, the rest goes in two halves, and a chunk of
    one number is its own offender."""
    offenders = [n for n in numbers if n[1] in known]
    rest = [n for n in numbers if n[1] not in known]
    if offenders or len(rest) <= 1:
        return Split(offenders or rest, [rest] if offenders and rest else [])
    half = (len(rest) + 1) // 2
    return Split([], [rest[:half], rest[half:]])

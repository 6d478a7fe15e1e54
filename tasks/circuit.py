"""The circuit breaker of each account: when to stop calling a vendor, and when to try again.

One circuit per account, for its sends and its polls alike: the password is the
account's, so a refusal on either side holds both.

States (table ``account_circuits``; no row is ``closed``)::

    closed --trip--> open --reopen_at passes, one chunk takes the probe--> half_open
    half_open --the probe is answered--> closed
    half_open --the probe fails--> open again, for twice the cool-off (at most 8x the base)

* A **trip** is a send or a poll of any endpoint answered with auth or balance
  or a chunk whose transient retries ran out. Auth and balance are answers about the
  account (its credentials, configuration, state or credit) that every call gets
  until an operator acts, and calling again with a wrong password is how vendor
  accounts get locked (dxt -10). A call already in flight that fails
  after the circuit opened changes nothing: only the probe's failure lengthens the
  cool-off.
* **Half-open**: after ``reopen_at`` exactly one call, a chunk or a poll, may call
  the vendor. It takes the probe by a conditional update (``open -> half_open``), so
  any number of workers and beat's polls agree on which one. Any answer from the
  vendor that shows the account works (ok, invalid request, blocked numbers, rate
  limited) closes the circuit; an ambiguous answer decides nothing (a poll's gives
  the probe back, so the next call probes). A probe that never reports back (its
  worker died) is given up after the send timeout, and another call may probe.
* **Polls** (``admit_poll``, ``after_poll``): while the circuit is open for a refused
  password (``auth``, from a send or a poll: tasks/decisions.py ``holds_polls``) no
  endpoint of the account is polled; the poll is skipped and beat's next turn polls
  again (the vendor keeps what it has not handed out), and the probe may be a poll.
  A circuit open for ``balance`` or a send's spent retries holds the sends only: the
  polls go on and never probe it; a poll refused with ``auth`` meanwhile makes it
  hold the polls too. A poll reads the row every time (no ``CLOSED_TTL``: polls are
  few), so a trip is obeyed by the next poll of any process. A poll's probe marks
  ``probe_chunk_id`` with a negative token of its own, which no chunk id can equal.
* **Damping**: an account that trips again within ``QUIET_COOLOFFS`` base cool-offs
  of closing is flapping: it keeps its doubled cool-off and its trip count, so it
  cannot bounce between open and closed every few seconds. After that quiet spell
  it starts again from the base.
* The base cool-off is the ``cooloff`` of the account's routes (the shortest, if
  several), else ``SMSQ_ACCOUNT_HOLD``.

Which answers trip or close the circuit is decided with the rest of what an answer
means (tasks/decisions.py); this module keeps the state.

A chunk that is not admitted is never sent: tasks/routes.py moves it to the
route's next account, or gives it back to wait until ``reopen_at``.
The cheap case, a closed circuit, costs one primary-key read, and each process
trusts a closed circuit it read for ``CLOSED_TTL`` seconds (a chunk is two
transactions, claim and record: a read per chunk would be a third). A trip by
another process is therefore obeyed up to that much later; this process's own
trips at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from smsq.store.models import AccountCircuit, utcnow
from smsq.store.sql import fit, insert_or_ignore, rows_changed
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

from .decisions import Decision, PollDecision, holds_polls, reopened_for

log = logging.getLogger("smsq.circuit")

MAX_DAMPING = 8  # the cool-off doubles on each failed probe, up to this many times the base
QUIET_COOLOFFS = 10  # closed this many base cool-offs without a trip: the damping is forgotten
PROBE_WAIT = 5.0  # seconds other chunks wait while one probes the account
CLOSED_TTL = 1.0  # seconds a process trusts a closed circuit it read

_closed_lock = threading.Lock()
_closed_at: dict[tuple[str, str], float] = {}  # (database, account) -> when this process saw it closed


def _seen_closed(conf: Settings, account: str) -> bool:
    with _closed_lock:
        seen = _closed_at.get((conf.database_url, account))
    return seen is not None and time.monotonic() - seen < CLOSED_TTL


def _remember_closed(conf: Settings, account: str, closed: bool) -> None:
    with _closed_lock:
        if closed:
            _closed_at[(conf.database_url, account)] = time.monotonic()
        else:
            _closed_at.pop((conf.database_url, account), None)


@dataclass(frozen=True)
class Admission:
    probe: bool  # this chunk is the half-open probe: its answer closes or re-opens the circuit


@dataclass(frozen=True)
class Blocked:
    state: str  # open | half_open
    until: datetime  # naive UTC: when to look again
    why: str  # "auth -7 ..."


def admit(conf: Settings, account: str, chunk_id: int, now: datetime | None = None) -> Admission | Blocked:
    """May this chunk call the account's vendor now?"""
    if _seen_closed(conf, account):
        return Admission(probe=False)
    now = now or utcnow()
    with session_scope(conf.database_url) as session:
        row = session.get(AccountCircuit, account)
        if row is None or row.state == "closed":
            _remember_closed(conf, account, True)
            return Admission(probe=False)
        if row.state == "half_open" and row.probe_chunk_id == chunk_id:
            return Admission(probe=True)  # the probe's own message, delivered again
        if _take_probe(session, conf, account, chunk_id, now):
            log.warning("account %s: half-open, chunk %s probes it (%s)", account, chunk_id, row.reason)
            return Admission(probe=True)
        session.refresh(row)
        return blocked(row, now)


def _take_probe(session: Session, conf: Settings, account: str, probe_id: int, now: datetime) -> bool:
    """``open`` past ``reopen_at`` (or a probe gone stale) -> ``half_open`` with ``probe_id``;
    one conditional update, so of any number of callers one wins."""
    stale_probe = now - timedelta(seconds=conf.send_timeout)
    return bool(
        rows_changed(
            session.execute(
                update(AccountCircuit)
                .where(
                    AccountCircuit.account == account,
                    or_(
                        and_(AccountCircuit.state == "open", AccountCircuit.reopen_at <= now),
                        and_(AccountCircuit.state == "half_open", AccountCircuit.updated_at <= stale_probe),
                    ),
                )
                .values(state="half_open", probe_chunk_id=probe_id, updated_at=now)
            )
        )
    )


def blocked(row: AccountCircuit, now: datetime) -> Blocked:
    if row.state == "open" and row.reopen_at and row.reopen_at > now:
        return Blocked("open", row.reopen_at, row.reason or "")
    return Blocked(row.state, now + timedelta(seconds=PROBE_WAIT), row.reason or "")


def usable(row: AccountCircuit | None, now: datetime, conf: Settings) -> bool:
    """Would a chunk of this account be admitted now (closed, or a probe is free)?"""
    if row is None or row.state == "closed":
        return True
    if row.state == "open":
        return row.reopen_at is not None and row.reopen_at <= now
    return row.updated_at is not None and row.updated_at <= now - timedelta(seconds=conf.send_timeout)


def circuits(session: Session, accounts) -> dict[str, AccountCircuit]:
    return {
        row.account: row
        for row in session.execute(select(AccountCircuit).where(AccountCircuit.account.in_(list(accounts)))).scalars()
    }


def after_call(conf: Settings, account: str, decision: Decision, now: datetime | None = None) -> str | None:
    """Record what a vendor call says about the account (its ``decision``, tasks/decisions.py);
    return "opened" or "closed" when the circuit changed. Only trips and the probe's
    answer write anything."""
    now = now or utcnow()
    if decision.trips_circuit:
        return trip(conf, account, decision.reason, now)
    if decision.closes_circuit:
        return close(conf, account, f"the probe was answered ({decision.outcome.value})", now)
    return None


def close(conf: Settings, account: str, why: str, now: datetime) -> str | None:
    """The probe was answered: half-open -> closed; "closed" when it was half-open."""
    with session_scope(conf.database_url) as session:
        closed = rows_changed(
            session.execute(
                update(AccountCircuit)
                .where(AccountCircuit.account == account, AccountCircuit.state == "half_open")
                .values(
                    state="closed",
                    closed_at=now,
                    probe_chunk_id=None,
                    updated_at=now,
                    reason=fit(AccountCircuit.reason, f"closed: {why}"),
                )
            )
        )
    if not closed:
        return None
    log.warning("account %s: circuit closed, %s", account, why)
    return "closed"


def trip(conf: Settings, account: str, why: str, now: datetime | None = None) -> str | None:
    """Open the circuit (closed or half-open -> open). An open one stays as it is, unless
    ``why`` holds the polls and its own reason did not: then it holds them from now on."""
    now = now or utcnow()
    base = conf.cooloff(account)
    _remember_closed(conf, account, False)
    with session_scope(conf.database_url) as session:
        _ensure_row(session, account, base)  # two workers may trip a fresh account at once
        row = session.get_one(AccountCircuit, account, with_for_update=True)
        if row.state == "open":
            return _hold_polls_too(row, why, now)
        flapping = row.state == "half_open" or (
            row.closed_at is not None and row.trips and now - row.closed_at < timedelta(seconds=QUIET_COOLOFFS * base)
        )
        row.cooloff = min(max(row.cooloff, base) * 2, MAX_DAMPING * base) if flapping else base
        row.trips = row.trips + 1 if flapping else 1
        if row.state == "half_open":
            why = reopened_for(row.reason or "", why)
        row.state, row.opened_at, row.probe_chunk_id, row.updated_at = "open", now, None, now
        row.reopen_at = now + timedelta(seconds=row.cooloff)
        row.reason = fit(AccountCircuit.reason, why)
    log.error("account %s: circuit open for %.0fs (trip %s): %s", account, row.cooloff, row.trips, why)
    return "opened"


def _hold_polls_too(row: AccountCircuit, why: str, now: datetime) -> str | None:
    """An open circuit that held the sends only (balance, spent retries) meets a refused
    password: it holds the polls as well, for a cool-off from now at least."""
    if not holds_polls(why) or holds_polls(row.reason or ""):
        return None
    row.reason, row.updated_at = fit(AccountCircuit.reason, why), now
    row.reopen_at = max(row.reopen_at or now, now + timedelta(seconds=row.cooloff))
    log.error("account %s: circuit open, now for the polls too, until %s UTC: %s", row.account, row.reopen_at, why)
    return "opened"


def _ensure_row(session: Session, account: str, base: float) -> None:
    insert_or_ignore(session, AccountCircuit, dict(account=account, state="closed", cooloff=base, trips=0), ["account"])


def held_until(conf: Settings, account: str, now: datetime | None = None) -> tuple[datetime, str] | None:
    """Until when the account's chunks wait, and why; None when it may send."""
    now = now or utcnow()
    with session_scope(conf.database_url, readonly=True) as session:
        row = session.get(AccountCircuit, account)
        if row is None or usable(row, now, conf):
            return None
        b = blocked(row, now)
        return b.until, b.why


# -- polls -------------------------------------------------------------------


@dataclass(frozen=True)
class PollAdmission:
    token: int | None = None  # the poll is the half-open probe: its mark in ``probe_chunk_id``

    @property
    def probe(self) -> bool:
        return self.token is not None


def admit_poll(conf: Settings, account: str, kind: str, now: datetime | None = None) -> PollAdmission | Blocked:
    """May a poll of the account's ``kind`` endpoint call the vendor now? Closed, or open
    for the sends only: yes; open for a refused password past its cool-off: yes, as the
    probe, if no other call took it; else Blocked."""
    now = now or utcnow()
    with session_scope(conf.database_url) as session:
        row = session.get(AccountCircuit, account)
        if row is None or row.state == "closed" or not holds_polls(row.reason or ""):
            return PollAdmission()  # closed, or open for the sends only (balance, spent retries)
        token = -1 - secrets.randbelow(2**62)  # negative: never a chunk's id
        if _take_probe(session, conf, account, token, now):
            log.warning("account %s: half-open, its %s poll probes it (%s)", account, kind, row.reason)
            return PollAdmission(token)
        session.refresh(row)
        return blocked(row, now)


def after_poll(
    conf: Settings, account: str, decision: PollDecision, admitted: PollAdmission, now: datetime | None = None
) -> str | None:
    """Record what a poll's answer says of the account (``decision``, tasks/decisions.py
    ``decide_poll``); "opened" or "closed" when the circuit changed."""
    now = now or utcnow()
    if decision.trips_circuit:
        return trip(conf, account, decision.reason, now)
    if decision.closes_circuit:
        return close(conf, account, decision.reason, now)
    if decision.gives_back_probe and admitted.probe:
        give_back(conf, account, admitted, now)
    return None


def give_back(conf: Settings, account: str, admitted: PollAdmission, now: datetime | None = None) -> None:
    """A poll's probe that made no call (its window was closed) or heard nothing about the
    account: the circuit is open again, due now, so the next call probes."""
    now = now or utcnow()
    with session_scope(conf.database_url) as session:
        session.execute(
            update(AccountCircuit)
            .where(
                AccountCircuit.account == account,
                AccountCircuit.state == "half_open",
                AccountCircuit.probe_chunk_id == admitted.token,
            )
            .values(state="open", reopen_at=now, probe_chunk_id=None, updated_at=now)
        )

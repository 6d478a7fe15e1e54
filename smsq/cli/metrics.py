"""The Prometheus exporter behind `smsq metrics`.

Every number is read at scrape time from what all processes share — the
database and the broker — never from one process's memory, so it is right
across any number of workers and hosts, and any exporter reports the same.

* recipients and chunks by state and by their batch's message kind (otp, notice,
  marketing): grouped counts (one statement each);
* numbers vendors refused in answers that took the rest, and of those the ones only
  counted and not told apart yet (the chunks' ``refused`` and ``refused_open``);
* vendor calls and their durations: ``vendor_calls``, written by each chunk's
  record transaction, tallied incrementally (see ``call_tally``);
* balances, poll ages and account health: the poll tables (``account_balances``,
  ``poll_status``) and each account's circuit (``account_circuits``: an account
  whose circuit is not closed is down, and ``smsq_account_circuit`` says how);
* numbers refused at intake, by account, message kind and reason (invalid, blocked,
  opted_out, capped, duplicate, quota): ``rejection_counts``, which each send adds to;
* recipients are counted for the account of the chunk that holds them, so numbers
  a failover route moved count for the account that sent them;
* queue lengths: the broker, by a passive ``queue_declare`` (Redis, RabbitMQ
  and the embedded SQLite broker all answer it).

A scrape's result is kept ``CACHE_SECONDS`` so that several scrapers do not
multiply the queries. A database or broker that cannot be reached does not
stop the exporter: what can be read is served, and ``smsq_up{component}`` says
which part is missing.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, literal, select

from smsq.scheduler.app import get_app
from smsq.store.models import (
    CHUNK_STATES,
    RECIPIENT_STATES,
    AccountBalance,
    AccountCircuit,
    Batch,
    Chunk,
    PollStatus,
    Recipient,
    RejectionCount,
    SplitChunk,
    utcnow,
)
from smsq.tasks.rejections import REASONS
from smsq.tasks.schema import ensure_schema
from smsq.worker.app import QUEUES
from smsq.worker.config import Settings
from smsq.worker.db import session_scope
from smsq.worker.kinds import KINDS

from .call_tally import CallTally

log = logging.getLogger("smsq.metrics")

CACHE_SECONDS = 5.0
ACCOUNT_DOWN = ("auth", "balance")  # outcomes that need an operator before the account works again


class SmsqCollector(Collector):
    def __init__(self, conf: Settings) -> None:
        self.conf = conf
        self.tally = CallTally()
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._taken_at = float("-inf")
        self._up: dict[str, bool] = {}

    def collect(self):
        with self._lock:  # one scrape at a time reads; the others get its result
            if time.monotonic() - self._taken_at >= CACHE_SECONDS:
                self._families = self._read()
                self._taken_at = time.monotonic()
            return list(self._families)

    def _read(self) -> list[Metric]:
        families: list[Metric] = []
        up = GaugeMetricFamily(
            "smsq_up", "1 when the exporter could read this component at the last scrape", labels=["component"]
        )
        for component, read in (("database", self._database), ("broker", self._broker)):
            try:
                families += read()
                ok = True
            except Exception as exc:  # never let a scrape kill the exporter
                ok = False
                if self._up.get(component, True):  # log the change, not every scrape
                    log.warning(
                        "metrics: cannot read the %s: %s: %s",
                        component,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                    )
            if ok and not self._up.get(component, True):
                log.warning("metrics: the %s can be read again", component)
            self._up[component] = ok
            up.add_metric([component], 1.0 if ok else 0.0)
        return families + [up]

    # -- the database --------------------------------------------------------
    def _database(self) -> list[Metric]:
        ensure_schema(self.conf)
        with session_scope(self.conf.database_url, readonly=True) as session:
            self.tally.update(session)
            # A rejected number has no chunk: it counts for the batch's account.
            holder = func.coalesce(Chunk.account, Batch.account)
            recipients = session.execute(
                select(holder, Batch.kind, Recipient.state, func.count())
                .join(Batch, Batch.id == Recipient.batch_id)
                .outerjoin(Chunk, (Chunk.batch_id == Recipient.batch_id) & (Chunk.seq == Recipient.chunk_seq))
                .group_by(holder, Batch.kind, Recipient.state)
            ).all()
            # Numbers a worker has still to cut into chunks wait to be sent too: queued.
            staged = session.execute(
                select(Batch.account, Batch.kind, literal("queued"), func.sum(SplitChunk.size))
                .join(Batch, Batch.id == SplitChunk.batch_id)
                .group_by(Batch.account, Batch.kind)
            ).all()
            chunks = session.execute(
                select(Batch.kind, Chunk.state, func.count())
                .join(Batch, Batch.id == Chunk.batch_id)
                .group_by(Batch.kind, Chunk.state)
            ).all()
            balances = session.execute(select(AccountBalance.account, AccountBalance.balance)).all()
            polls = session.execute(
                select(PollStatus.account, PollStatus.kind, PollStatus.polled_at, PollStatus.outcome)
            ).all()
            breakers = dict(session.execute(select(AccountCircuit.account, AccountCircuit.state)).all())
            refused = session.execute(
                select(Chunk.account, func.sum(Chunk.refused), func.coalesce(func.sum(Chunk.refused_open), 0))
                .where(Chunk.refused.is_not(None))
                .group_by(Chunk.account)
            ).all()
            rejections = session.execute(
                select(RejectionCount.account, RejectionCount.kind, RejectionCount.reason, RejectionCount.numbers)
            ).all()
        return [
            self._recipients([*recipients, *staged]),
            self._chunks(chunks),
            *self._refused(refused),
            self._rejected(rejections),
            *self._calls(),
            self._balances(balances),
            *self._accounts(polls, breakers),
        ]

    def _recipients(self, rows) -> Metric:
        counts = {
            (account, kind, state): 0 for account in self.conf.accounts for kind in KINDS for state in RECIPIENT_STATES
        }
        for account, kind, state, n in rows:
            counts[account, kind, state] = counts.get((account, kind, state), 0) + int(n)
        # A gauge: recipients move between states (queued -> sent -> delivered).
        family = GaugeMetricFamily(
            "smsq_recipients_total",
            "Recipients stored, by account, message kind and current state",
            labels=["account", "kind", "state"],
        )
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        return family

    def _chunks(self, rows) -> Metric:
        counts = {(kind, state): 0 for kind in KINDS for state in CHUNK_STATES}
        counts |= {(kind, state): n for kind, state, n in rows}
        family = GaugeMetricFamily(
            "smsq_chunks", "Chunks by their batch's message kind and current state", labels=["kind", "state"]
        )
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        return family

    def _refused(self, rows) -> list[Metric]:
        numbers = GaugeMetricFamily(
            "smsq_refused_numbers",
            "Numbers a vendor refused in answers that took the rest of the call (named, or only "
            "counted: dxt b, jinxin failCount, qxs successCounts), by account",
            labels=["account"],
        )
        still_open = GaugeMetricFamily(
            "smsq_refused_open",
            "Of those, numbers only counted that are not known yet: delivery reports tell them apart "
            "until SMSQ_REPORT_WAIT ends (a vendor without reports never does)",
            labels=["account"],
        )
        counts = {account: (0, 0) for account in self.conf.accounts}
        counts.update({account: (int(n), int(opened)) for account, n, opened in rows})
        for account, (n, opened) in sorted(counts.items()):
            numbers.add_metric([account], n)
            still_open.add_metric([account], opened)
        return [numbers, still_open]

    def _rejected(self, rows) -> Metric:
        counts = {(account, kind, reason): 0 for account in self.conf.accounts for kind in KINDS for reason in REASONS}
        counts |= {(account, kind, reason): int(n) for account, kind, reason, n in rows}
        family = CounterMetricFamily(
            "smsq_rejected",
            "Numbers refused at intake (never stored for sending), by account, message kind and "
            "reason (invalid, blocked, opted_out, capped, duplicate, quota)",
            labels=["account", "kind", "reason"],
        )
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        return family

    def _calls(self) -> list[Metric]:
        calls = CounterMetricFamily(
            "smsq_vendor_calls",
            "Vendor send calls recorded, by account and outcome "
            "(ok, transient, rate_limited, auth, balance, invalid_request, blocked, "
            "ambiguous)",
            labels=["account", "outcome"],
        )
        for (account, outcome), n in sorted(self.tally.calls.items()):
            calls.add_metric([account, outcome], n)
        seconds = HistogramMetricFamily(
            "smsq_vendor_call_seconds", "Duration of vendor send calls, by account", labels=["account"]
        )
        for account, durations in sorted(self.tally.durations.items()):
            seconds.add_metric([account], durations.cumulative(), durations.total)
        return [calls, seconds]

    def _balances(self, rows) -> Metric:
        family = GaugeMetricFamily(
            "smsq_balance",
            "Last balance the vendor reported (messages or money, as the vendor counts; +Inf for postpaid)",
            labels=["account"],
        )
        for account, balance in sorted(rows):
            family.add_metric([account], balance)
        return family

    def _accounts(self, polls, breakers: dict[str, str]) -> list[Metric]:
        now = utcnow()
        ages = GaugeMetricFamily(
            "smsq_poll_age_seconds",
            "Seconds since the account's last poll of this kind, whatever its outcome",
            labels=["account", "kind"],
        )
        down = set()
        for account, kind, polled_at, outcome in sorted(polls, key=lambda row: (row[0], row[1])):
            if outcome in ACCOUNT_DOWN:
                down.add(account)
            if kind != "send" and polled_at is not None:  # "send" is the health flag of sends, not a poll
                ages.add_metric([account, kind], max(0.0, (now - polled_at).total_seconds()))
        down |= {account for account, state in breakers.items() if state != "closed"}
        up = GaugeMetricFamily(
            "smsq_account_up",
            "0 when the account's circuit is not closed (a send failed with "
            "auth or balance, or ran out of retries) or its last poll failed with auth or "
            "balance, else 1",
            labels=["account"],
        )
        circuit = GaugeMetricFamily(
            "smsq_account_circuit",
            "1 for the state the account's send circuit is in (closed, open, half_open)",
            labels=["account", "state"],
        )
        for account in sorted(self.conf.accounts):
            up.add_metric([account], 0.0 if account in down else 1.0)
            for state in ("closed", "open", "half_open"):
                circuit.add_metric([account, state], 1.0 if breakers.get(account, "closed") == state else 0.0)
        return [ages, up, circuit]

    # -- the broker ----------------------------------------------------------
    def _broker(self) -> list[Metric]:
        family = GaugeMetricFamily(
            "smsq_queue_length", "Messages waiting in the broker queue (not yet taken by a worker)", labels=["queue"]
        )
        for queue, n in queue_lengths(QUEUES).items():
            family.add_metric([queue], n)
        return [family]


def queue_lengths(queues) -> dict[str, int]:
    """Ready messages per queue. A queue the broker does not know holds nothing
    (Redis drops a list when it empties)."""
    lengths = {}
    with get_app().connection_for_read() as conn:
        conn.connect()  # raises at once when the broker is unreachable
        for queue in queues:
            try:
                with conn.channel() as channel:
                    lengths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors:
                lengths[queue] = 0
    return lengths

"""The beat schedule, built from the configured accounts.

* the outbox relay, every ``SMSQ_RELAY_INTERVAL`` seconds;
* per account, one entry per poll kind its provider has. Inbound messages and
  reports every ``poll_interval`` (account key, default 60 s, never under the
  vendor's 30 s); balance every 10 minutes; blocked numbers every 20 minutes
  (linkws NotSend only remembers the last hour), and every kind once as beat
  starts (an interval schedule would first fire one interval later: a balance
  ten minutes after a restart; in distributed mode, as a beat takes the lock).
  Kinds that share one vendor
  window (linkws) are kept apart by the lease; a poll that finds the window
  closed comes back when it opens.
"""

from __future__ import annotations

import logging

from celery.signals import beat_init

from smsq.providers import provider_class
from smsq.tasks import polls
from smsq.worker.config import Settings, settings
from smsq.worker.guest import sent_by_smsq

log = logging.getLogger("smsq.beat")

DEFAULT_INTERVALS = {"inbound": 60.0, "reports": 60.0, "balance": 600.0, "blocked": 1200.0}


def poll_interval(account, kind: str, min_interval: float) -> float:
    if kind in ("inbound", "reports") and "poll_interval" in account.options:
        return max(min_interval, float(account.options["poll_interval"]))
    return max(min_interval, DEFAULT_INTERVALS[kind])


def beat_schedule(conf: Settings) -> dict:
    schedule = {
        "smsq.relay": {
            "task": "smsq.relay",
            "schedule": conf.relay_interval,
            "options": {"queue": "smsq.poll", "expires": conf.relay_interval * 3},
        },
    }
    for name, kind in poll_kinds(conf):
        account = conf.accounts[name]
        cls = provider_class(account.provider)
        every = poll_interval(account, kind, cls.min_poll_interval)
        schedule[f"smsq.poll_{kind}:{name}"] = {
            "task": f"smsq.poll_{kind}",
            "schedule": every,
            "args": (name,),
            # A poll that waited in the queue past its next turn is dropped, not run late.
            "options": {"queue": "smsq.poll", "expires": every},
        }
    return schedule


def poll_kinds(conf: Settings) -> list[tuple[str, str]]:
    return [
        (name, kind)
        for name, account in sorted(conf.accounts.items())
        for kind in sorted(provider_class(account.provider).poll_kinds)
    ]


@beat_init.connect
def poll_everything_at_start(sender=None, **_: object) -> None:
    """One poll of every kind as beat starts. Harmless when the last poll was moments
    ago: the leases decide who calls the vendor. A scheduler with a lock (distributed
    mode) does this itself once it holds the lock, so a standby beat sends nothing.
    An application's own beat that imports smsq sends nothing either."""
    if not sent_by_smsq(sender):
        return
    if getattr(getattr(sender, "scheduler", None), "polls_on_lock", False):
        return

    for account, kind in poll_kinds(settings()):
        polls.publish_poll(account, kind)
    log.info("beat started: one poll of every account and kind queued")

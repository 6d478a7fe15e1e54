"""The beat schedule, built from the configured accounts.

* the outbox relay, every ``SMSQ_RELAY_INTERVAL`` seconds;
* per account, one entry per poll kind its provider has. Inbound messages and
  reports every ``poll_interval`` (account key, default 60 s, never under the
  vendor's 30 s); balance every 10 minutes; blocked numbers every 20 minutes
  (linkws NotSend only remembers the last hour). Kinds that share one vendor
  window (linkws) are kept apart by the lease; a poll that finds the window
  closed comes back when it opens.
"""
from __future__ import annotations

from providers import provider_class
from worker.config import Settings

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
    for name, account in sorted(conf.accounts.items()):
        cls = provider_class(account.provider)
        for kind in sorted(cls.poll_kinds):
            every = poll_interval(account, kind, cls.min_poll_interval)
            schedule[f"smsq.poll_{kind}:{name}"] = {
                "task": f"smsq.poll_{kind}",
                "schedule": every,
                "args": (name,),
                # A poll that waited in the queue past its next turn is dropped, not run late.
                "options": {"queue": "smsq.poll", "expires": every},
            }
    return schedule

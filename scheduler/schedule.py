"""The beat schedule, built from the configured accounts.

Today it holds the outbox relay. Per-account polls (inbound, reports, blocked
numbers, balance) are added from each provider's ``poll_kinds``.
"""
from __future__ import annotations

from worker.config import Settings


def beat_schedule(conf: Settings) -> dict:
    return {
        "smsq.relay": {
            "task": "smsq.relay",
            "schedule": conf.relay_interval,
            "options": {"queue": "smsq.poll", "expires": conf.relay_interval * 3},
        },
    }

"""What every command needs first: the settings, with their secrets masked in all logging."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from smsq.providers.base import BEIJING
from smsq.worker import logs
from smsq.worker.config import env_secret, settings


def load(*, need_accounts: bool = True):
    """The settings. ``need_accounts``: the command sends or polls, so the accounts file
    must exist and name at least one account. Every command needs the file in embedded
    mode without SMSQ_HOME, since the database lives next to it."""
    conf = settings()
    logs.mask_secrets(conf.secrets())
    file_locates_database = conf.embedded and not os.environ.get("SMSQ_HOME") and not env_secret("SMSQ_DATABASE_URL")
    if need_accounts or (file_locates_database and not conf.config_found):
        conf.require_accounts()
    return conf


def format_balance(balance: float) -> str:
    """Messages left (whole numbers), money (two decimals), or a postpaid account's no limit."""
    if balance == float("inf"):
        return "unlimited (postpaid)"
    return f"{int(balance):,}" if float(balance).is_integer() else f"{balance:,.2f}"


# Every time the CLI prints is Beijing time, the vendors' clock, and says so:
# the database keeps naive UTC, the vendors and `--at` speak Beijing time, and
# one column must never mix the two.
TIME_ZONE_NAME = "Beijing time, UTC+8"


def show_time(value, *, iso: bool = False) -> str:
    """A stored (naive UTC) or aware time as Beijing time: ``2026-12-01 20:58:03+08:00``
    (``iso``: ``2026-12-01T20:58:03+08:00`` for JSON). ``None`` stays empty."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING).replace(microsecond=0).isoformat(sep="T" if iso else " ")


def parse_at(value: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f'wants a time as "YYYY-MM-DD HH:MM:SS", not {value!r}')


def send_options(args) -> dict:
    """``smsq send``'s options as the keyword arguments of ``send_sms`` and ``preview_send``
    (one mapping for both, so a dry run asks exactly what the send would)."""
    return {
        "send_at": args.at,
        "idempotency_key": args.idempotency_key,
        "priority": True if args.priority else None,
        "kind": args.kind,
        "valid_for": args.valid_for,
    }

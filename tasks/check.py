"""``smsq check``: do an account's credentials work? Asked of the vendor, stored nowhere.

A check runs in an operator's shell, with the password that shell reads: a
wrong one there says nothing about the account the workers send with. So the
vendor's answer is returned to be printed and never written: no poll status,
balance, send flag or circuit changes, and no metric moves.

The one thing a check shares is the vendor's window (one balance call per 30 s,
and on linkws one call of Get, SelSum or NotSend): that rule is the vendor's,
whoever calls, so a check takes the poll lease as a poll does. With ``book``
it also books the next window when it finds it closed, so beat polling every
30 s cannot take every window before the check does (store/leases.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from smsq.providers import Outcome, Provider, ProviderError
from smsq.store import leases
from smsq.worker.clients import provider_for
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

from .schema import ensure_schema

ACCEPTED, REFUSED, NOT_CHECKED, CLOSED = "accepted", "refused", "not_checked", "closed"
# Vendor answers that say nothing about the credentials: ask again later.
NO_VERDICT = (Outcome.RATE_LIMITED, Outcome.TRANSIENT, Outcome.AMBIGUOUS)


@dataclass
class Check:
    verdict: str  # accepted | refused | not_checked | closed (the window: no call was made)
    detail: str = ""  # what the vendor said, or why no call was made
    balance: float | None = None
    vendor_id: int | None = None
    wait: float = 0.0  # closed: seconds until the window opens


def checker(conf: Settings, account: str) -> Provider:
    """The account's vendor client; ValueError when the vendor offers no call that checks
    credentials without sending."""
    provider = provider_for(conf.account(account))
    if not hasattr(provider, "login") and "balance" not in provider.poll_kinds:
        raise ValueError(
            f"{provider.name} has no way to check credentials without sending; "
            f"`smsq send --wait` one message to a test number"
        )
    return provider


def check_credentials(conf: Settings, account: str, *, book: bool = False) -> Check:
    """One check: the vendor's login call where it has one, else a balance call in the window."""
    provider = checker(conf, account)
    if hasattr(provider, "login"):  # orgws UserLogin: no window
        return _ask(lambda: Check(ACCEPTED, vendor_id=provider.login()))
    ensure_schema(conf)
    family = provider.poll_family("balance")
    interval = max(provider.min_poll_interval, 1.0)
    with session_scope(conf.database_url) as session:
        if not leases.take(session, account, family, interval):
            if book:
                leases.book(session, account, family)
            wait = leases.free_in(session, account, family, interval)
            return Check(
                CLOSED,
                f"the vendor allows one call per {interval:g} s ({family}) and its window opens in {wait:.0f} s",
                wait=wait,
            )
    try:
        return _ask(lambda: Check(ACCEPTED, balance=provider.parse_balance(provider.fetch("balance"))))
    finally:
        with session_scope(conf.database_url) as session:
            leases.extend(session, account, family, interval)


def give_up(conf: Settings, account: str) -> None:
    """The check stops waiting: its booking, if any, goes back to the polls."""
    provider = provider_for(conf.account(account))
    if "balance" in provider.poll_kinds and not hasattr(provider, "login"):
        with session_scope(conf.database_url) as session:
            leases.unbook(session, account, provider.poll_family("balance"))


def _ask(call) -> Check:
    try:
        return call()
    except ProviderError as exc:
        detail = f"{exc.outcome.value} {exc.code or ''} {exc}".replace("  ", " ").strip()
        return Check(NOT_CHECKED if exc.outcome in NO_VERDICT else REFUSED, detail)
    except ValueError as exc:  # an answer the parser cannot read
        return Check(NOT_CHECKED, f"unreadable answer: {exc}")

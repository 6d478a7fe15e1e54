"""One provider, with one HTTP connection pool, per account and process."""
from __future__ import annotations

import threading

import httpx

from smsq.providers import Account, Provider, provider_class

from . import slots

# Connections kept per account and process when the process's slots are not known
# (a prefork child, the producer, the CLI); a thread-pool worker keeps one per slot.
CONNECTIONS = 20

_lock = threading.Lock()
_providers: dict[str, tuple[Account, Provider]] = {}


def provider_for(account: Account) -> Provider:
    """Raises ConfigError when the account's password cannot be read: it is read here,
    when a vendor client is first needed, not when the config is loaded."""
    account.password.reveal()
    with _lock:
        cached = _providers.get(account.name)
        if cached is None or cached[0] != account:
            if cached is not None:
                cached[1].client.close()
            # Explicit timeouts on every call: a vendor that never answers must
            # not hold a worker thread (and an unknown outcome) forever.
            timeout = httpx.Timeout(account.timeout, connect=min(5.0, account.timeout))
            # Every slot of a thread-pool worker may be in a call to this account at once
            # (64 calls in flight at 500 ms for a 100/s account): a smaller pool would
            # make slots queue for a connection, and keep-alive for fewer would open and
            # close connections all the time.
            connections = max(CONNECTIONS, slots.total() or 0)
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
            client = httpx.Client(timeout=timeout, limits=limits, headers={"User-Agent": "smsq"})
            cached = (account, provider_class(account.provider)(account, client))
            _providers[account.name] = cached
        return cached[1]


def close_all() -> None:
    with _lock:
        for _, provider in _providers.values():
            provider.client.close()
        _providers.clear()


def forget() -> None:
    """After a fork: drop the parent's pools without closing its sockets."""
    with _lock:
        _providers.clear()

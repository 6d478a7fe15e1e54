"""One provider, with one HTTP connection pool, per account and process."""

from __future__ import annotations

import threading
import time

import httpx

from smsq.providers import Account, Provider, provider_class

from . import slots

# Connections kept per account and process when the process's slots are not known
# (a prefork child, the producer, the CLI); a thread-pool worker keeps one per slot.
CONNECTIONS = 20

# A provider replaced because its account changed in the accounts file (worker/config.py
# refresh) may still be in a call of another thread, begun with the settings before:
# it is closed this long after its last use, never under that call.
RETIRED_CLOSE_AFTER = 900.0  # seconds

_lock = threading.Lock()
_providers: dict[str, tuple[Account, Provider]] = {}
_retired: list[list] = []  # [last used (monotonic), provider]


def provider_for(account: Account) -> Provider:
    """Raises ConfigError when the account's password cannot be read: it is read here,
    when a vendor client is first needed, not when the config is loaded."""
    account.password.reveal()
    with _lock:
        cached = _providers.get(account.name)
        if cached is None or cached[0] != account:
            now = time.monotonic()
            for entry in _retired:  # a thread still on the settings before the change
                if entry[1].account == account:
                    entry[0] = now
                    return entry[1]
            for entry in [e for e in _retired if now - e[0] > RETIRED_CLOSE_AFTER]:
                _retired.remove(entry)
                entry[1].client.close()
            if cached is not None:
                _retired.append([now, cached[1]])
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
        for provider in [p for _, p in _providers.values()] + [p for _, p in _retired]:
            provider.client.close()
        _providers.clear()
        _retired.clear()


def forget() -> None:
    """After a fork: drop the parent's pools without closing its sockets."""
    with _lock:
        _providers.clear()
        _retired.clear()

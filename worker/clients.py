"""One provider, with one HTTP connection pool, per account and process."""
from __future__ import annotations

import threading

import httpx

from smsq.providers import Account, Provider, provider_class

_lock = threading.Lock()
_providers: dict[str, tuple[Account, Provider]] = {}


def provider_for(account: Account) -> Provider:
    with _lock:
        cached = _providers.get(account.name)
        if cached is None or cached[0] != account:
            if cached is not None:
                cached[1].client.close()
            # Explicit timeouts on every call: a vendor that never answers must
            # not hold a worker thread (and an unknown outcome) forever.
            timeout = httpx.Timeout(account.timeout, connect=min(5.0, account.timeout))
            client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=20),
                                  headers={"User-Agent": "smsq"})
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

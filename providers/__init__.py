"""Vendor protocols. Each module is pure (no Celery, no database) and holds every quirk of its vendor."""

from __future__ import annotations

import importlib

from .base import (
    Account,
    ContentError,
    Inbound,
    Outcome,
    Provider,
    ProviderError,
    Report,
    Secret,
    SendContext,
    SendResult,
)

PROVIDERS = {
    "linkws": "smsq.providers.linkws:LinkwsProvider",
    "dxt": "smsq.providers.dxt:DxtProvider",
    "jinxin": "smsq.providers.jinxin:JinxinProvider",
    "orgws": "smsq.providers.orgws:OrgwsProvider",
    "qxs": "smsq.providers.qxs:QxsProvider",
}


def provider_class(name: str) -> type[Provider]:
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = [
    "Account",
    "ContentError",
    "Inbound",
    "Outcome",
    "Provider",
    "ProviderError",
    "Report",
    "Secret",
    "SendContext",
    "SendResult",
    "provider_class",
    "PROVIDERS",
]

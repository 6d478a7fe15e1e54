"""smsq: a queue-backed SMS dispatcher for Chinese SMS vendors, on Celery.

    from smsq import send_sms, batch_status

    receipt = send_sms(account="shop-dxt", to=numbers, content="【某某科技】您的验证码是 345678")

Everything smsq installs lives under this one package (``smsq.tasks``,
``smsq.worker``, ``smsq.providers``, ...), so it never collides with an
application's own ``tasks.py``. The names below are resolved on first use:
``import smsq.providers`` stays free of Celery and the database, and
``celery -A smsq worker`` finds the app as ``smsq.app``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "send_sms": "smsq.tasks.producer",
    "preview_send": "smsq.tasks.preview",
    "Preview": "smsq.tasks.preview",
    "batch_status": "smsq.tasks.producer",
    "Receipt": "smsq.tasks.producer",
    "BatchStatus": "smsq.tasks.producer",
    "NoValidNumbersError": "smsq.tasks.producer",
    "IdempotencyConflictError": "smsq.tasks.idempotency",
    "DatabaseUnreachableError": "smsq.worker.services",
    "number_history": "smsq.tasks.lookup",
    "export_batch": "smsq.tasks.lookup",
    "recent_batches": "smsq.tasks.lookup",
    "cancel_batch": "smsq.tasks.cancel",
    "settle": "smsq.tasks.settle",
    "settle_batch": "smsq.tasks.settle",
    "purge": "smsq.tasks.purge",
    "blocked_numbers": "smsq.tasks.blocklist",
    "block_number": "smsq.tasks.blocklist",
    "unblock_number": "smsq.tasks.blocklist",
    "ContentError": "smsq.providers.base",
    "ProviderError": "smsq.providers.base",
    "ConfigError": "smsq.worker.config",
    "UnknownAccountError": "smsq.worker.config",
}

__all__ = [*_EXPORTS, "app"]


def __getattr__(name: str):
    if name in ("app", "celery"):
        from smsq.scheduler.app import get_app  # on first use: `import smsq.providers` loads no Celery

        return get_app()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smsq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""The producer API and the Celery tasks behind it.

    from smsq.tasks import send_sms, batch_status

The names are resolved on first use, so importing one module of smsq.tasks (the
command line's error classes, say) does not load the whole send path.
"""

from __future__ import annotations

import importlib

__all__ = ["send_sms", "batch_status", "Receipt", "BatchStatus"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'smsq.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module("smsq.tasks.producer"), name)
    globals()[name] = value
    return value

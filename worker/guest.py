"""smsq is a guest in an application that may run Celery apps of its own.

Celery's signals (``worker_ready``, ``beat_init``, ...) are sent for every app in
the process: an application's own worker or beat that merely imports smsq would
run smsq's receivers too. Each receiver asks ``is_smsq_app`` first.
"""

from __future__ import annotations

APP_NAME = "smsq"  # the main name of smsq's Celery app (worker/app.py)


def is_smsq_app(app: object) -> bool:
    """Whether ``app`` is smsq's own Celery app (not the application's)."""
    return getattr(app, "main", None) == APP_NAME


def sent_by_smsq(sender: object) -> bool:
    """Whether a worker or beat signal's sender (a worker, its consumer, beat's service)
    belongs to smsq's app."""
    return is_smsq_app(getattr(sender, "app", None))

"""Logging with the vendor passwords masked, whatever logger or handler emits the line."""
from __future__ import annotations

import logging

MASK = "********"
_installed = False
_secrets: list[str] = []


def mask_secrets(secrets: list[str]) -> None:
    """From now on every log record has each secret replaced by ``********``.

    A record factory (not a handler filter) catches every record of every
    logger, including the handlers Celery installs after us.
    """
    global _installed
    _secrets[:] = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:
                return record
            masked = message
            for secret in _secrets:
                masked = masked.replace(secret, MASK)
            if masked != message or record.args:
                record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)


def setup(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request line at INFO; our own lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def keep_masking(secrets: list[str]) -> None:
    """Secrets read later (accounts read again) are masked too, besides the earlier ones,
    which a call in flight may still log. Installs nothing where masking is not on."""
    if _installed:
        _secrets[:] = sorted(set(_secrets) | {s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

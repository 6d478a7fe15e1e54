"""Logging with the vendor passwords masked, whatever logger or handler emits the line."""

from __future__ import annotations

import logging

from sqlalchemy.engine import make_url

MASK = "********"
_installed = False
_secrets: tuple[str, ...] = ()  # longest first; replaced whole, never changed in place, for the factory


def remember_secret(secret: str) -> None:
    """Mask ``secret`` too: a password read after masking began (see ``mask_secrets``)."""
    global _secrets
    if secret and len(secret) >= 3 and secret not in _secrets:
        _secrets = tuple(sorted({*_secrets, secret}, key=len, reverse=True))


def mask_secrets(secrets: list[str]) -> None:
    """From now on every log record has each secret (these, and every one remembered)
    replaced by ``********``.

    A record factory (not a handler filter) catches every record of every
    logger, including the handlers Celery installs after us.
    """
    global _installed
    for secret in secrets:
        remember_secret(secret)
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        secrets = _secrets
        if secrets:
            try:
                message = record.getMessage()
            except Exception:
                return record
            masked = message
            for secret in secrets:
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
        for secret in secrets:
            remember_secret(secret)


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for a log line or a message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]

"""What every command needs first: the settings, with their secrets masked in all logging."""
from __future__ import annotations


def load():
    from .. import logs
    from ..config import settings

    conf = settings()
    logs.mask_secrets(conf.secrets())
    return conf

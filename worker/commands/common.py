"""What every command needs first: the settings, with their secrets masked in all logging."""
from __future__ import annotations


def load():
    from .. import logs
    from ..config import settings

    conf = settings()
    logs.mask_secrets(conf.secrets())
    return conf


def format_balance(balance: float) -> str:
    """Messages left (whole numbers), money (two decimals), or a postpaid account's no limit."""
    if balance == float("inf"):
        return "unlimited (postpaid)"
    return f"{int(balance):,}" if float(balance).is_integer() else f"{balance:,.2f}"

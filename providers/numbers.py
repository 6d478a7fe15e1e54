"""Normalising recipient numbers: one mainland number, one spelling.

Numbers arrive as people write them: ``+86 138-0013-8000``, ``0086 13800138000``,
full-width digits from a spreadsheet. They leave as 11 ASCII digits.
"""
from __future__ import annotations

import re
import unicodedata

MOBILE_RE = re.compile(r"1[3-9]\d{9}")
# Fixed-line numbers with area code (小灵通): 0 + 2-3 digit area + 7-8 digit number.
LANDLINE_RE = re.compile(r"0[1-9]\d{1,2}\d{7,8}")
_SEPARATORS = re.compile(r"[\s\-().]")

INVALID_EMPTY = "empty"
INVALID_CHARS = "contains characters other than digits, '+', spaces and dashes"
INVALID_MOBILE = "not a mainland mobile number (11 digits, 1[3-9]…)"
INVALID_NUMBER = "not a mainland mobile (11 digits, 1[3-9]…) or fixed-line number with area code"


def normalise(raw: object, *, landline: bool = False) -> tuple[str | None, str | None]:
    """Return ``(number, None)`` for a usable number, ``(None, reason)`` otherwise."""
    if type(raw) is str and len(raw) == 11 and raw.isascii() and MOBILE_RE.fullmatch(raw):
        # Already in the canonical spelling, as most of a large list is: skip the
        # Unicode and separator passes (a million numbers: seconds saved).
        return raw, None
    text = str(raw) if raw is not None else ""
    if not text.isascii():  # full-width digits and other compatibility forms; ASCII is already NFKC
        text = unicodedata.normalize("NFKC", text)
    text = _SEPARATORS.sub("", text)
    if not text:
        return None, INVALID_EMPTY
    if text.startswith("+"):
        text = text[1:]
        if not text.startswith("86"):
            return None, INVALID_MOBILE if not landline else INVALID_NUMBER
    if not text.isascii() or not text.isdigit():
        return None, INVALID_CHARS
    if text.startswith("0086"):
        text = text[4:]
    elif text.startswith("86") and len(text) == 13:
        text = text[2:]
    if MOBILE_RE.fullmatch(text):
        return text, None
    if landline and LANDLINE_RE.fullmatch(text):
        return text, None
    return None, INVALID_NUMBER if landline else INVALID_MOBILE

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
# MOBILE_RE's \d also matches other scripts' digits; this one is for text not yet normalised.
_CANONICAL_MOBILE = re.compile(r"1[3-9][0-9]{9}").fullmatch
# The usual other spellings of a mobile number ("+86 138-0013-8000", "0086 13800138000",
# "138 0013 8000"): normalise makes of each its three groups joined, without the function call.
_SPELLED_MOBILE = re.compile(r"(?:\+86 ?|0086 ?)?(1[3-9][0-9])[ -]?([0-9]{4})[ -]?([0-9]{4})").fullmatch
# A block of canonical numbers joined by newlines: one match for all of them.
_CANONICAL_LINES = re.compile(r"(?:1[3-9][0-9]{9}\n)*1[3-9][0-9]{9}").fullmatch

INVALID_EMPTY = "empty"
INVALID_CHARS = "contains characters other than digits, '+', spaces and dashes"
INVALID_MOBILE = "not a mainland mobile number (11 digits, 1[3-9]…)"
INVALID_NUMBER = "not a mainland mobile (11 digits, 1[3-9]…) or fixed-line number with area code"


def normalise(raw: object, *, landline: bool = False) -> tuple[str, None] | tuple[None, str]:
    """Return ``(number, None)`` for a usable number, ``(None, reason)`` otherwise."""
    if type(raw) is str and len(raw) == 11 and _CANONICAL_MOBILE(raw):
        return raw, None  # already in the canonical spelling: nothing to undo
    text = str(raw) if raw is not None else ""
    if not text.isascii():  # full-width digits and other compatibility forms; ASCII is already NFKC
        text = unicodedata.normalize("NFKC", text)
    if not text.isdigit():
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


def normalise_block(block: list, *, landline: bool = False) -> tuple[list[str], list[tuple[object, str]]]:
    """``normalise`` over a block of a large list: (usable numbers, [(entry, reason), ...]).
    A block all in the canonical spelling, as a clean export is, costs one regex match
    in all; otherwise an entry in the canonical spelling, or in one of the usual others,
    costs one match each and no function call."""
    if _all_canonical(block):
        return list(block), []
    valid: list[str] = []
    invalid: list[tuple[object, str]] = []
    for raw in block:
        if type(raw) is str:
            if len(raw) == 11 and _CANONICAL_MOBILE(raw):
                valid.append(raw)
                continue
            spelled = _SPELLED_MOBILE(raw)
            if spelled:
                valid.append(spelled[1] + spelled[2] + spelled[3])
                continue
        checked = normalise(raw, landline=landline)
        if checked[0] is None:
            invalid.append((raw, checked[1]))
        else:
            valid.append(checked[0])
    return valid, invalid


def _all_canonical(block: list) -> bool:
    """Every entry is a str of 11 digits, 1[3-9]…. The joined text matching means it: k numbers
    joined by newlines are 12k - 1 characters, so with that length there are as many numbers as
    entries and no entry holds a newline of its own."""
    if not block or set(map(type, block)) != {str}:
        return False
    text = "\n".join(block)
    return len(text) == 12 * len(block) - 1 and _CANONICAL_LINES(text) is not None

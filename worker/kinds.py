"""Message kinds and the rules each kind carries: parsed, validated, resolved.

A batch is of one kind: ``otp`` (a code), ``notice`` (the default) or ``marketing``.
Each kind carries rules, configured in ``[kinds.NAME]`` tables of the accounts file
and overridden per account in ``[accounts.ACCOUNT.kinds.NAME]``::

    [kinds.otp]
    per_number = ["1/1m", "5/1h", "10/1d"]  # at most COUNT sends to one number per PERIOD ([] none)
    duplicate_window = "30s"                # the same text to the same number within it ("0": off)
    valid_for = "5m"                        # a code not sent by then is not sent ("0": no limit)

    [kinds.marketing]
    send_window = "08:00-21:00"             # Beijing time; "00:00-24:00": any time; "22:00-06:00" crosses midnight

    [accounts.shop-dxt.kinds.marketing]
    send_window = "09:00-20:00"             # an account may only narrow the window

A table names only the keys it changes; the others keep their defaults (``DEFAULTS``).
This module only reads and checks the rules: what each rule does is done where a send
is taken in and where a chunk is sent (tasks/policy.py says where). Pure: no database,
no settings; mistakes are ValueErrors naming the table and the key, which
worker/config.py turns into ConfigErrors naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from smsq.providers.base import BEIJING  # send windows are Beijing time, the vendors' clock

KINDS = ("otp", "notice", "marketing")
DEFAULT_KIND = "notice"
RULE_KEYS = ("per_number", "duplicate_window", "valid_for", "send_window")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_CAP_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
DAY_MINUTES = 24 * 60


def check_kind(kind: object) -> str:
    """``kind`` if it is one of KINDS; else a ValueError listing them."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return kind


def _duration_text(seconds: int) -> str:
    """``300`` -> ``"5m"``: the largest unit that divides it."""
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover (s divides every whole number)


@dataclass(frozen=True)
class Cap:
    """At most ``count`` sends to one number per ``seconds``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{_duration_text(self.seconds)}"


@dataclass(frozen=True)
class SendWindow:
    """The minutes of the Beijing day in which sends may go: ``start <= minute < end``.

    A window whose start is after its end crosses midnight: ``22:00-06:00`` is open from
    22:00 to 06:00 the next morning (``start <= minute`` or ``minute < end``)."""

    start: int  # minutes after midnight, Beijing time
    end: int  # exclusive; up to 24 * 60; before ``start``: the window crosses midnight

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def _open_at(self, minute: int) -> bool:
        if self.crosses_midnight:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in the window (a naive time is UTC, as the database keeps it)."""
        local = _beijing(moment)
        return self._open_at(local.hour * 60 + local.minute)

    def opens_after(self, moment: datetime) -> datetime:
        """The next opening after ``moment``: the first instant at or after it that the
        window holds, if it holds ``moment`` that is ``moment`` itself. In the form
        ``moment`` was given: naive UTC for a naive time, else aware in its zone."""
        if self.contains(moment):
            return moment
        local = _beijing(moment)
        opening = local.replace(hour=self.start // 60, minute=self.start % 60, second=0, microsecond=0)
        if opening <= local:  # closed for today: tomorrow's (Beijing has no daylight saving)
            opening += timedelta(days=1)
        if moment.tzinfo is None:
            return opening.astimezone(UTC).replace(tzinfo=None)
        return opening.astimezone(moment.tzinfo)

    def minutes(self) -> frozenset[int]:
        """The minutes of the Beijing day the window holds."""
        return frozenset(m for m in range(DAY_MINUTES) if self._open_at(m))

    def within(self, other: SendWindow | None) -> bool:
        """Whether this window lies inside ``other`` (None: any time of day)."""
        return other is None or self.minutes() <= other.minutes()

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def _beijing(moment: datetime) -> datetime:
    """``moment`` in Beijing time (a naive time is UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(BEIJING)


@dataclass(frozen=True)
class KindRules:
    """The rules a send of ``kind`` is held to (for one account, once resolved)."""

    kind: str
    per_number: tuple[Cap, ...] = ()  # shortest period first; () no cap
    duplicate_window: int = 30  # seconds; 0: no duplicate guard
    valid_for: int | None = None  # seconds after the batch was stored; None: no limit
    send_window: SendWindow | None = None  # None: any time of day

    def describe(self) -> dict[str, Any]:
        """The rules as the config file writes them (for JSON, a preview, the docs)."""
        return {
            "kind": self.kind,
            "per_number": [str(cap) for cap in self.per_number],
            "duplicate_window": _duration_text(self.duplicate_window) if self.duplicate_window else "0",
            "valid_for": _duration_text(self.valid_for) if self.valid_for else None,
            "send_window": str(self.send_window) if self.send_window else None,
        }


DEFAULTS: Mapping[str, KindRules] = {
    "otp": KindRules("otp", per_number=(Cap(1, 60), Cap(5, 3600), Cap(10, 86400)), valid_for=300),
    "notice": KindRules("notice"),
    "marketing": KindRules("marketing", send_window=SendWindow(8 * 60, 21 * 60)),
}


def parse_duration(value: Any, key: str) -> int:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` -> seconds; ``"0"`` (or 0) -> 0."""
    if (value == 0 and not isinstance(value, bool)) or value == "0":
        return 0
    if isinstance(value, str) and (m := _DURATION_RE.match(value)):
        return int(m.group(1)) * UNITS[m.group(2)]
    raise ValueError(f'{key} must be a duration like "30s", "5m", "2h" or "1d" ("0": off), not {value!r}')


def parse_cap(value: Any, key: str) -> Cap:
    """``"5/1h"`` (or ``"5/h"``) -> Cap(5, 3600)."""
    m = _CAP_RE.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) < 1 or m.group(2) in ("0", "00"):
        raise ValueError(
            f"{key} holds {value!r}: a cap is COUNT/PERIOD, COUNT at least 1 and PERIOD "
            f'a number of s, m, h or d, e.g. "5/1h"'
        )
    return Cap(int(m.group(1)), int(m.group(2) or 1) * UNITS[m.group(3)])


def parse_caps(value: Any, key: str) -> tuple[Cap, ...]:
    """``["1/1m", "5/1h"]`` -> caps, shortest period first; ``[]`` -> none."""
    if not isinstance(value, list):
        raise ValueError(f'{key} must be a list of caps like ["1/1m", "5/1h", "10/1d"] ([]: none), not {value!r}')
    caps = [parse_cap(item, key) for item in value]
    periods = [cap.seconds for cap in caps]
    if len(set(periods)) != len(periods):
        raise ValueError(f"{key} gives two caps for the same period: {', '.join(map(repr, value))}")
    return tuple(sorted(caps, key=lambda cap: cap.seconds))


def parse_window(value: Any, key: str) -> SendWindow | None:
    """``"08:00-21:00"`` (Beijing time) -> SendWindow; ``"00:00-24:00"`` (any time) -> None.
    A start after the end crosses midnight: ``"22:00-06:00"``; start and end the same is
    refused (no window, or every minute: say which)."""
    m = _WINDOW_RE.match(value) if isinstance(value, str) else None
    if m is not None:
        sh, sm, eh, em = map(int, m.groups())
        start, end = sh * 60 + sm, eh * 60 + em
        if (start, end) == (0, DAY_MINUTES):
            return None
        if sh < 24 and sm < 60 and em < 60 and end <= DAY_MINUTES and start != end % DAY_MINUTES:
            return SendWindow(start, end)  # "22:00-24:00" and "22:00-00:00" alike: to midnight
    raise ValueError(
        f'{key} must be "HH:MM-HH:MM" in Beijing time, start and end apart (e.g. "08:00-21:00"; '
        f'"22:00-06:00" crosses midnight; "00:00-24:00": any time), not {value!r}'
    )


_PARSERS = {
    "per_number": parse_caps,
    "duplicate_window": parse_duration,
    "valid_for": lambda value, key: parse_duration(value, key) or None,
    "send_window": parse_window,
}


def parse_rules(table: Any, where: str) -> dict[str, Any]:
    """The rules a ``[kinds.NAME]`` table (or an account's) sets, parsed: only the keys
    it gives, ready for ``resolve``. ``where`` names the table in messages."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(RULE_KEYS)}")
    return {key: _PARSERS[key](value, f"{where} {key}") for key, value in table.items()}


def parse_kind_tables(tables: Any, where: str) -> dict[str, dict[str, Any]]:
    """The ``kinds`` table (``where``: how messages name it, e.g. ``kinds``): per kind,
    the rules it sets. A kind not given sets none."""
    if tables is None:
        return {}
    if not isinstance(tables, Mapping):
        raise ValueError(f"{where} must hold tables, one per kind: [{where}.otp]")
    for name in tables:
        if name not in KINDS:
            raise ValueError(f"[{where}.{name}] is not a kind; the kinds are {', '.join(KINDS)}")
    return {name: parse_rules(table, f"[{where}.{name}]") for name, table in tables.items()}


def resolve(base: KindRules, override: Mapping[str, Any]) -> KindRules:
    """``base`` with the rules ``override`` sets (from ``parse_rules``)."""
    return replace(base, **override) if override else base


def kind_defaults(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, KindRules]:
    """Every kind's rules: DEFAULTS with the file's ``[kinds.NAME]`` tables applied."""
    return {kind: resolve(DEFAULTS[kind], tables.get(kind, {})) for kind in KINDS}


def check_narrows(base: Mapping[str, KindRules], overrides: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """An account's send window may only narrow its kind's: never start earlier nor end later."""
    for kind, override in overrides.items():
        if "send_window" not in override:
            continue
        window, allowed = override["send_window"], base[kind].send_window
        if allowed is not None and (window is None or not window.within(allowed)):
            raise ValueError(
                f"[{where}.{kind}] send_window {str(window or '00:00-24:00')!r} widens the kind's "
                f"window {str(allowed)!r}; an account may only narrow it"
            )


def parse_daily_quota(value: Any, key: str) -> int:
    """Numbers an account may send to per Beijing day: a whole number, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number of numbers per Beijing day, at least 1, not {value!r}")
    return value

"""Failover routes in the config: ``[routes.NAME]``.

::

    [routes.shop]
    accounts = ["shop-dxt", "shop-linkws"]   # in order of preference
    cooloff = 300                            # seconds a failed account rests (default SMSQ_ACCOUNT_HOLD)

A route name is accepted wherever an account name is (``send_sms``, ``smsq send
--account``), so it must not also be an account's name. Each account of a route
must be configured, and named once. What a route does at send time is in
tasks/routes.py; the circuit of each account in tasks/circuit.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    name: str
    accounts: tuple[str, ...]  # in order of preference
    cooloff: float | None = None  # None: the settings' account_hold


def parse_routes(tables: Any, accounts: Mapping[str, Any], error: type[Exception]) -> dict[str, Route]:
    """The ``routes`` table of the config; ``error`` is raised naming the route and the key."""
    if tables is None:
        return {}
    if not isinstance(tables, Mapping):
        raise error("routes must be tables: [routes.NAME]")
    return {name: _route(name, table, accounts, error) for name, table in tables.items()}


def _route(name: str, table: Any, accounts: Mapping[str, Any], error: type[Exception]) -> Route:
    where = f"route {name!r}"
    if not isinstance(table, Mapping):
        raise error(f"{where}: must be a table ([routes.{name}])")
    if name in accounts:
        raise error(f"{where}: an account has the same name; a route name must differ from every account's")
    unknown = set(table) - {"accounts", "cooloff"}
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; allowed: accounts, cooloff")
    members = table.get("accounts")
    if not isinstance(members, list) or not members or not all(isinstance(a, str) and a for a in members):
        raise error(f'{where}: accounts must be a list of at least one account name, e.g. ["shop-dxt", "shop-linkws"]')
    missing = [a for a in members if a not in accounts]
    if missing:
        raise error(
            f"{where}: accounts names {', '.join(map(repr, missing))}, not configured "
            f"(configured: {', '.join(sorted(accounts)) or 'none'})"
        )
    doubled = sorted({a for a in members if members.count(a) > 1})
    if doubled:
        raise error(f"{where}: accounts names {', '.join(map(repr, doubled))} more than once")
    cooloff = table.get("cooloff")
    if cooloff is not None and (isinstance(cooloff, bool) or not isinstance(cooloff, (int, float)) or cooloff <= 0):
        raise error(f"{where}: cooloff must be a positive number of seconds, not {cooloff!r}")
    return Route(name, tuple(members), None if cooloff is None else float(cooloff))

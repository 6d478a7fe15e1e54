"""The simulators `smsq simulate` and `smsq demo` start, on fixed ports.

Every simulator knows one account: user ``demo``, password ``demo-secret``
(``DEMO_PASSWORD``), so the sample config works against all of them.
"""
from __future__ import annotations

from typing import Any, Callable

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-secret"

# name -> (port, factory building (state, app))
PORTS = {"linkws": 8800, "dxt": 8801, "jinxin": 8802, "orgws": 8803, "qxs": 8804}


def _dxt() -> tuple[Any, Any]:
    from simulator.dxt import DxtState, create_app

    state = DxtState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000)
    return state, create_app(state)


FACTORIES: dict[str, Callable[[], tuple[Any, Any]]] = {"dxt": _dxt}


def build(names: list[str] | None = None) -> dict[str, tuple[Any, Any, int]]:
    """name -> (state, app, port) for the requested simulators (all by default)."""
    names = names or list(FACTORIES)
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        raise KeyError(f"no simulator for {', '.join(unknown)}; available: {', '.join(FACTORIES)}")
    return {name: (*FACTORIES[name](), PORTS[name]) for name in names}

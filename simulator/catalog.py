"""The simulators `smsq simulate` and `smsq demo` start, on fixed ports.

Every simulator knows one account: user ``demo``, password ``demo-secret``
(``DEMO_PASSWORD``), enterprise id 12 and organisation code 10001 where the
vendor has them, so ``config()`` works against all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import dxt, jinxin, linkws, orgws, qxs

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-secret"
DEMO_USERID = "12"  # jinxin / qxs enterprise id
DEMO_ORG_ID = 10001  # orgws organisation code


def first_id_from_clock() -> int:
    """Where a fixed-port simulator starts its message ids: milliseconds since 1970.

    Real vendors never hand out an id twice, and smsq matches delivery reports
    to recipients by it. A simulator restarted against the same database (a
    second `smsq demo`, `smsq simulate` run again) must not start from the
    document's example id again, or its reports would look like ones already
    stored. Unique across restarts as long as fewer than 1000 ids a second are
    handed out, far above what the demo sends.
    """
    return time.time_ns() // 1_000_000


# name -> (port, factory building (state, app))
PORTS = {"linkws": 8800, "dxt": 8801, "jinxin": 8802, "orgws": 8803, "qxs": 8804}


def _dxt() -> tuple[Any, Any]:
    # Only dxt and qxs ids come back in delivery reports; the others' ids are
    # 32-bit integers in their WSDL and are never matched against anything.
    state = dxt.DxtState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000, first_smsid=first_id_from_clock())
    return state, dxt.create_app(state)


def _linkws() -> tuple[Any, Any]:
    state = linkws.LinkwsState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000)
    return state, linkws.create_app(state)


def _jinxin() -> tuple[Any, Any]:
    state = jinxin.JinxinState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000, userid=DEMO_USERID, format="json")
    return state, jinxin.create_app(state)


def _orgws() -> tuple[Any, Any]:
    state = orgws.OrgwsState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000, org_id=DEMO_ORG_ID)
    return state, orgws.create_app(state)


def _qxs() -> tuple[Any, Any]:
    state = qxs.QxsState(
        {DEMO_USER: DEMO_PASSWORD}, balance=1_000_000, userid=DEMO_USERID, first_task_id=first_id_from_clock()
    )
    return state, qxs.create_app(state)


FACTORIES: dict[str, Callable[[], tuple[Any, Any]]] = {
    "linkws": _linkws,
    "dxt": _dxt,
    "jinxin": _jinxin,
    "orgws": _orgws,
    "qxs": _qxs,
}

# The accounts that talk to the simulators above, as smsq.toml tables; {port}
# is filled in by config().
ACCOUNTS = {
    "linkws": """[accounts.demo-linkws]
provider = "linkws"
base_url = "http://127.0.0.1:{port}/"
transport = "soap"
""",
    "dxt": """[accounts.demo-dxt]
provider = "dxt"
base_url = "http://127.0.0.1:{port}/"
charset = "gbk"
""",
    "jinxin": f"""[accounts.demo-jinxin]
provider = "jinxin"
base_url = "http://127.0.0.1:{{port}}/"
userid = "{DEMO_USERID}"
format = "json"
""",
    "orgws": f"""[accounts.demo-orgws]
provider = "orgws"
base_url = "http://127.0.0.1:{{port}}/Service.asmx"
org_id = {DEMO_ORG_ID}
""",
    "qxs": f"""[accounts.demo-qxs]
provider = "qxs"
base_url = "http://127.0.0.1:{{port}}/"
userid = "{DEMO_USERID}"
""",
}
COMMON = f"""username = "{DEMO_USER}"
password_env = "SMSQ_DEMO_PASSWORD"
signature = "【某某科技】"
rate_limit = "20/s"
"""


def config(names: list[str] | None = None, extra: str = "", ports: dict[str, int] | None = None) -> str:
    """smsq.toml for the demo accounts of the given simulators (on ``ports``, default the fixed ones)."""
    ports = {**PORTS, **(ports or {})}
    return "\n".join(ACCOUNTS[n].replace("{port}", str(ports[n])) + COMMON + extra for n in (names or list(FACTORIES)))


def build(names: list[str] | None = None, *, any_port: bool = False) -> dict[str, tuple[Any, Any, int]]:
    """name -> (state, app, port) for the requested simulators (all by default);
    port 0 (any free one) for each with ``any_port``."""
    names = names or list(FACTORIES)
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        raise KeyError(f"no simulator for {', '.join(unknown)}; available: {', '.join(FACTORIES)}")
    return {name: (*FACTORIES[name](), 0 if any_port else PORTS[name]) for name in names}

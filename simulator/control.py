"""Pieces every vendor simulator shares: fault switches, the state base
class and the JSON control routes under ``/_sim/``.

The control routes are for tests, the benchmark and demos; they are not part
of any vendor protocol and are never recorded as vendor calls.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

__all__ = ["Call", "Faults", "SimState", "add_control_routes", "choice", "control_routes", "numbers"]


@dataclass
class Faults:
    """Misbehaviour switches; each simulator maps them onto its own codes."""

    latency: float = 0.0  # seconds added before answering any call
    busy: bool = False  # answer the vendor's "system busy" code
    auth_fail: bool = False  # answer the vendor's login-failed code to every call
    # Answer every call as if the account's name or password were empty: the vendor's
    # "credentials empty" code (orgws -2 帐户信息错误, qxs 用户名或密码不能为空 / error 1),
    # which an account whose configuration lost its secret gets. Vendors whose document
    # has no such answer (dxt, linkws, jinxin) ignore it.
    empty_login: bool = False
    balance: int | None = None  # report/enforce this balance instead of the real one
    # "Accept then hang": the call takes effect (a send is recorded as
    # accepted, polled items are handed out) but the answer comes only after
    # hang_seconds, so the client read-times-out on a request that succeeded.
    hang: bool = False
    hang_seconds: float = 30.0
    garbled: bool = False  # answer 200 with a body no client can parse
    # An outage: answer every call with this HTTP status (e.g. 500) and nothing
    # else, until the unix time http_error_until (None: until switched off).
    http_error: int = 0
    http_error_until: float | None = None
    # Partial acceptance: a send is taken but these numbers are refused, each simulator
    # answering as its vendor does (dxt counts them in b; orgws names them in FailPhone;
    # jinxin names them in failList, or with refuse_unnamed only counts them in failCount;
    # qxs leaves them out of successCounts). They get no id and no delivery report.
    refuse: list[str] = field(default_factory=list)
    refuse_unnamed: bool = False

    _TYPES: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "latency": (int, float),
        "busy": bool,
        "auth_fail": bool,
        "empty_login": bool,
        "balance": (int, type(None)),
        "hang": bool,
        "hang_seconds": (int, float),
        "garbled": bool,
        "http_error": int,
        "http_error_until": (int, float, type(None)),
        "refuse": list,
        "refuse_unnamed": bool,
    }
    _ITEMS: ClassVar[dict[str, type]] = {"refuse": str}  # what a list's items must be

    def failing_http(self) -> int:
        """The HTTP status an outage answers with now, or 0."""
        if not self.http_error or (self.http_error_until is not None and time.time() >= self.http_error_until):
            return 0
        return self.http_error

    def merged(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ValueError on unknown or ill-typed fields."""
        for name, value in changes.items():
            expected = self._TYPES.get(name)
            if expected is None:
                raise ValueError(f"unknown fault {name!r}")
            # bool is an int subclass: don't let `true` pass as a latency.
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                raise ValueError(f"bad value for fault {name!r}: {value!r}")
            items = value if isinstance(value, list) else []
            if name in self._ITEMS and not all(isinstance(item, self._ITEMS[name]) for item in items):
                raise ValueError(f"bad value for fault {name!r}: {value!r}")
        return dataclasses.replace(self, **changes)

    def refused(self, number: str) -> bool:
        """Is ``number`` one the vendor refuses in an answer that takes the rest (``refuse``)?"""
        return number in self.refuse


@dataclass(frozen=True)
class Call:
    endpoint: str
    at: float  # unix time the call arrived


def numbers(value: Any) -> set[str]:
    """A switch's list of numbers (JSON array of strings) as the set a simulator keeps."""
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ValueError(f"need a list of numbers as strings, not {value!r}")
    return set(value)


def choice(*allowed: str) -> Callable[[Any], str]:
    """A switch that is one of ``allowed`` words."""

    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"need one of {', '.join(map(repr, allowed))}, not {value!r}")
        return value

    return check


def without(items: list, taken: list) -> list:
    """``items`` less the ``taken`` ones (by identity): what a vendor hands out, it hands out once."""
    handed = {id(t) for t in taken}
    return [item for item in items if id(item) not in handed]


class SimState:
    """Base for a simulator's in-memory state.

    Subclasses keep their vendor data here too and take ``self.lock`` around
    every read-modify-write: the server thread mutates state while tests read
    it from another thread.

    ``SWITCHES`` names the vendor behaviours a test may change over HTTP
    (``POST /_sim/switches``): attribute -> a check that turns the JSON value into
    what the state keeps (ValueError when it is not one). Unlike faults they are
    configuration: ``reset()`` keeps them.
    """

    SWITCHES: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self.sends: list[Any] = []
        self.calls: list[Call] = []

    def __repr__(self) -> str:
        # Users and counts only: a simulator's state holds passwords.
        queued = {name: len(getattr(self, name)) for name in ("sends", "reports", "inbound") if hasattr(self, name)}
        counts = " ".join(f"{name}={n}" for name, n in queued.items())
        return f"<{type(self).__name__} users={sorted(getattr(self, 'accounts', {}))} {counts}>"

    def reset(self) -> None:
        """Forget runtime data and faults; keep configuration. Extend in subclasses."""
        with self.lock:
            self.faults = Faults()
            self.sends.clear()
            self.calls.clear()

    def record_call(self, endpoint: str) -> None:
        with self.lock:
            self.calls.append(Call(endpoint, time.time()))

    def set_switches(self, **changes: Any) -> dict[str, Any]:
        """Change vendor behaviours (``SWITCHES``); ValueError, and nothing changed, on an
        unknown name or a bad value. Returns every switch as it now is."""
        checked = {}
        for name, value in changes.items():
            if name not in self.SWITCHES:
                known = ", ".join(sorted(self.SWITCHES)) or "none"
                raise ValueError(f"unknown switch {name!r} (this simulator has: {known})")
            try:
                checked[name] = self.SWITCHES[name](value)
            except ValueError as exc:
                raise ValueError(f"bad value for switch {name!r}: {exc}") from None
        with self.lock:
            for name, value in checked.items():
                setattr(self, name, value)
            return self.switches()

    def switches(self) -> dict[str, Any]:
        """Every switch as JSON shows it (a set as a sorted list)."""
        with self.lock:
            values = {name: getattr(self, name) for name in self.SWITCHES}
        return {name: sorted(v) if isinstance(v, set) else v for name, v in values.items()}

    def current_faults(self) -> Faults:
        with self.lock:
            return dataclasses.replace(self.faults)

    def fail_http_for(self, seconds: float, status: int = 500) -> Faults:
        """An outage of ``seconds``: every call answers HTTP ``status``, then the vendor recovers."""
        return self.set_faults(http_error=status, http_error_until=time.time() + seconds)

    def set_faults(self, **changes: Any) -> Faults:
        with self.lock:
            self.faults = self.faults.merged(changes)
            return dataclasses.replace(self.faults)

    # Hooks for the control routes; vendors without polls keep the defaults.

    # *args, **extra: each simulator names its own fields (username, ext, task_id, ...)
    def add_inbound(self, mobile: str, content: str, *args: Any, **extra: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no inbound messages")

    def pending_counts(self) -> dict[str, int]:
        return {}

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view for ``GET /_sim/state``; must never include secrets."""
        with self.lock:
            return {
                "sends": [_jsonable(s) for s in self.sends],
                "calls": len(self.calls),
                "pending": self.pending_counts(),
                "faults": dataclasses.asdict(self.faults),
                "switches": self.switches(),
            }


def _jsonable(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


def control_routes(state: SimState) -> list[BaseRoute]:
    """The ``/_sim/`` routes for ``state``, to put in front of a vendor's routes."""

    async def get_state(request: Request) -> JSONResponse:
        return JSONResponse(state.snapshot())

    async def get_calls(request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse([dataclasses.asdict(c) for c in state.calls])

    async def post_faults(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            faults = state.set_faults(**body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(dataclasses.asdict(faults))

    async def post_switches(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            return JSONResponse(state.set_switches(**body))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def post_reset(request: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"ok": True})

    async def post_inbound(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        mobile, content = body.pop("mobile", None), body.pop("content", None)
        if not isinstance(mobile, str) or not isinstance(content, str):
            return JSONResponse({"error": "need string fields 'mobile' and 'content'"}, status_code=400)
        try:
            item = state.add_inbound(mobile, content, **body)
        except NotImplementedError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except (TypeError, ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(_jsonable(item))

    return [
        Mount(
            "/_sim",
            routes=[
                Route("/state", get_state, methods=["GET"]),
                Route("/calls", get_calls, methods=["GET"]),
                Route("/faults", post_faults, methods=["POST"]),
                Route("/switches", post_switches, methods=["POST"]),
                Route("/reset", post_reset, methods=["POST"]),
                Route("/inbound", post_inbound, methods=["POST"]),
            ],
        )
    ]


def add_control_routes(app: Starlette, state: SimState) -> Starlette:
    """Put the ``/_sim/`` routes in front of ``app``'s own (catch-alls included)."""
    app.router.routes[0:0] = control_routes(state)
    return app


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
    return body

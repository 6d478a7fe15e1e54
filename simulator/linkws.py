"""Simulator of the ``linkws`` vendor: Lingkai LinkWS, SOAP and plain HTTP on one app.

The protocol: ``docs/vendors/linkws.md``, written from the vendor's own document,
which wins wherever the two disagree.

Laid out like a moto backend, in three sections:

* state    -- ``LinkwsState``: accounts, balances, recorded sends, queued
              inbound messages, blocked-number events, the shared 30 s
              window of Get/SelSum/NotSend, and the business rules;
* wire     -- SOAP 1.1 envelopes (parsed with lxml, no DTD, no entities) and
              the ``.aspx`` forms (percent-encoded GB2312 bytes);
* routes   -- ``create_app(state)``: ``/ws/LinkWS.asmx`` (SOAP, and the WSDL
              smsq ships at ``?wsdl``), ``/ws/<Operation>.aspx`` (HTTP) and the
              shared ``/_sim/`` control routes.

Choices where the vendor document is silent are marked "Choice:".
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsq.simulator.control import SimState, add_control_routes, numbers, without

__all__ = [
    "BlockedEvent",
    "InboundMessage",
    "LinkwsError",
    "LinkwsState",
    "SendRecord",
    "SoapFault",
    "create_app",
    "envelope",
    "parse_envelope",
    "parse_params",
]

# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

OPERATIONS = ("BatchSend2", "Get", "SelSum", "NotSend")
POLLS = ("Get", "SelSum", "NotSend")  # the three that answer -101 inside 30 s

# 建议500个号码: a recommendation, and the document gives no hard limit
# anywhere, so larger sends are accepted; their batch ids go in
# ``oversized_sends`` so a test can see a client went past it.
RECOMMENDED_NUMBERS = 500
MAX_CHARS = 300  # -8 發送內容需在1到300字之間
MAX_INBOUND = 50  # 每次最多取50條
BLOCKED_WINDOW = 3600.0  # NotSend: 最近1小時內屏蔽的手機號碼
FIRST_BATCH_ID = 1001

BEIJING = timezone(timedelta(hours=8))
_MOBILE = re.compile(r"1[3-9]\d{9}")
_SIGNATURE_AT_END = re.compile(r"【[^【】]{1,20}】$")


def segments_for(content: str) -> int:
    """Billed messages per number: 70 characters, then 67 per part (UCS-2 rule)."""
    return 1 if len(content) <= 70 else math.ceil(len(content) / 67)


def _beijing_now() -> datetime:
    return datetime.now(BEIJING).replace(tzinfo=None)


class LinkwsError(Exception):
    """A vendor answer other than success: ``code`` is the return value ("-3")."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class SendRecord:
    """One accepted BatchSend2 (the vendor answered a positive batch id)."""

    username: str
    numbers: list[str]  # accepted numbers, in order (duplicates kept: the vendor trusts the client)
    content: str
    send_time: str | None  # SendTime as received; None when absent or empty (= send now)
    cell: str
    batch_id: int
    transport: str  # "soap" or "http"
    at: float
    rejected: list[str] = field(default_factory=list)  # not mainland mobiles
    segments: int = 1  # billed per accepted number


@dataclass
class InboundMessage:
    username: str
    mobile: str
    content: str
    ext: str
    received_at: str  # as the vendor prints it in Get: yyyy-MM-dd HH:mm:ss, Beijing
    at: float


@dataclass
class BlockedEvent:
    username: str
    mobile: str
    at: float


@dataclass
class DecodeError:
    endpoint: str
    error: str  # the codec's message; never the raw request (it holds the password)
    at: float


class LinkwsState(SimState):
    """In-memory LinkWS vendor. Every method takes ``self.lock``.

    Configuration (kept by ``reset()``): ``accounts``, ``charset`` (of the
    ``.aspx`` endpoints), ``min_poll_interval``, ``blocked_numbers`` (also a switch:
    ``POST /_sim/switches {"blocked_numbers": [...]}``).
    Runtime data (cleared by ``reset()``): ``sends``, ``calls``, ``faults``,
    queued inbound messages, blocked events, the poll windows,
    ``decode_errors``, ``oversized_sends``; balances go back to their initial values.
    """

    SWITCHES = {"blocked_numbers": numbers}  # the numbers the vendor refuses to send to

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        balance: int | dict[str, int] = 10_000,
        charset: str = "gb2312",
        min_poll_interval: float = 30.0,
        blocked_numbers: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.accounts = dict(accounts if accounts is not None else {"test": "secret"})
        self._initial_balances = {
            user: (balance.get(user, 0) if isinstance(balance, dict) else balance) for user in self.accounts
        }
        self.balances = dict(self._initial_balances)
        self.charset = charset
        self.min_poll_interval = min_poll_interval
        self.blocked_numbers = set(blocked_numbers or ())
        self.inbound: list[InboundMessage] = []
        self.blocked_events: list[BlockedEvent] = []
        self.decode_errors: list[DecodeError] = []
        self.oversized_sends: list[int] = []  # batch ids of sends above RECOMMENDED_NUMBERS
        self._last_poll: dict[str, float] = {}  # user -> monotonic time of the last answered poll
        # Batch ids stay monotonic across reset(), as a real vendor's would.
        self._batch_ids = itertools.count(FIRST_BATCH_ID)

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.balances = dict(self._initial_balances)
            self.inbound.clear()
            self.blocked_events.clear()
            self.decode_errors.clear()
            self.oversized_sends.clear()
            self._last_poll.clear()

    # -- helpers --------------------------------------------------------

    def _login(self, username: str, password: str) -> None:
        if self.faults.busy:
            # Choice: LinkWS has no "busy" code; -2 其他錯誤 is the closest.
            raise LinkwsError("-2")
        if self.faults.auth_fail:
            raise LinkwsError("-3")
        if username not in self.accounts:
            raise LinkwsError("-1")  # 賬號未注冊
        if self.accounts[username] != password:
            raise LinkwsError("-3")  # 帳號或密碼錯誤

    def _balance(self, username: str) -> int:
        # Choice: a balance fault is a fixed override; sends still draw the
        # real balance down underneath it.
        if self.faults.balance is not None:
            return self.faults.balance
        return self.balances[username]

    def _poll(self, username: str, password: str) -> None:
        """Login, then the 30 s rule: Get, SelSum and NotSend share one window per account."""
        self._login(username, password)
        now = time.monotonic()
        last = self._last_poll.get(username)
        if last is not None and now - last < self.min_poll_interval:
            # Choice: a refused call does not restart the window.
            raise LinkwsError("-101")  # 調用接口速度太快(大于30s)
        self._last_poll[username] = now

    def record_decode_error(self, endpoint: str, exc: UnicodeDecodeError) -> None:
        with self.lock:
            self.decode_errors.append(DecodeError(endpoint, str(exc), time.time()))

    # -- vendor operations ----------------------------------------------

    def send(
        self, username: str, password: str, mobile: str, content: str, cell: str, send_time: str | None, transport: str
    ) -> SendRecord:
        with self.lock:
            self._login(username, password)
            numbers = [n.strip() for n in mobile.split(",") if n.strip()]
            if not numbers:
                raise LinkwsError("-9")  # 發送號碼為空
            if not 1 <= len(content) <= MAX_CHARS:
                raise LinkwsError("-8")
            if not _SIGNATURE_AT_END.search(content.rstrip()):
                raise LinkwsError("-7")  # 提交信息末尾未加簽名
            if cell and not (cell.isascii() and cell.isdigit()):
                raise LinkwsError("-2")  # Choice: 擴展號必須是數字或為空 has no code of its own
            if send_time is not None:
                try:
                    if not re.fullmatch(r"\d{14}", send_time):
                        raise ValueError(send_time)
                    when = datetime.strptime(send_time, "%Y%m%d%H%M%S")
                except ValueError:
                    raise LinkwsError("-6") from None  # 定時發送時間不是有效的時間格式
                if when < _beijing_now():
                    raise LinkwsError("-10")  # 定時時間不能小于系統當前時間
            # Choice: numbers that are not mainland mobiles are dropped (not
            # charged); only when nothing is left does the whole call fail.
            rejected = [n for n in numbers if not _MOBILE.fullmatch(n)]
            accepted = [n for n in numbers if _MOBILE.fullmatch(n)]
            blocked = [n for n in accepted if n in self.blocked_numbers]
            now = time.time()
            if blocked:
                # -11 屏蔽手機號碼, as the vendor answers it: one blocked number refuses
                # the whole call, none of it is sent or charged, and the answer does
                # not say which; NotSend names the blocked ones (最近1小時內屏蔽的手機號碼).
                self.blocked_events.extend(BlockedEvent(username, n, now) for n in blocked)
                raise LinkwsError("-11")
            if not accepted:
                raise LinkwsError("-9")
            segments = segments_for(content)
            if self._balance(username) < len(accepted) * segments:
                raise LinkwsError("-5")  # 余額不足
            self.balances[username] -= len(accepted) * segments
            record = SendRecord(
                username,
                accepted,
                content,
                send_time,
                cell,
                next(self._batch_ids),
                transport,
                now,
                rejected,
                segments,
            )
            self.sends.append(record)
            if len(numbers) > RECOMMENDED_NUMBERS:
                self.oversized_sends.append(record.batch_id)
            return record

    def take_inbound(self, username: str, password: str) -> list[InboundMessage]:
        """Up to 50 messages, each handed out once (取走后系統自動更改短信標志為【已取】)."""
        with self.lock:
            self._poll(username, password)
            taken = [m for m in self.inbound if m.username == username][:MAX_INBOUND]
            self.inbound = without(self.inbound, taken)
            return taken

    def balance_of(self, username: str, password: str) -> int:
        with self.lock:
            self._poll(username, password)
            return max(self._balance(username), 0)

    def blocked_of(self, username: str, password: str) -> list[str]:
        """Numbers blocked in the last hour; a window, not handed out once."""
        with self.lock:
            self._poll(username, password)
            since = time.time() - BLOCKED_WINDOW
            numbers = [e.mobile for e in self.blocked_events if e.username == username and e.at >= since]
            return list(dict.fromkeys(numbers))

    # -- control hooks ---------------------------------------------------

    def add_inbound(
        self, mobile: str, content: str, username: str | None = None, ext: str = "", received_at: str | None = None
    ) -> InboundMessage:
        """Queue a message a handset sent to ``username`` (default: first account)."""
        with self.lock:
            user = username if username is not None else next(iter(self.accounts))
            if user not in self.accounts:
                raise KeyError(f"unknown account {user!r}")
            when = received_at or _beijing_now().strftime("%Y-%m-%d %H:%M:%S")
            message = InboundMessage(user, mobile, content, ext, when, time.time())
            self.inbound.append(message)
            return message

    def add_blocked(self, mobile: str, username: str | None = None, at: float | None = None) -> BlockedEvent:
        """Record that the vendor blocked ``mobile`` (``at`` defaults to now)."""
        with self.lock:
            user = username if username is not None else next(iter(self.accounts))
            event = BlockedEvent(user, mobile, time.time() if at is None else at)
            self.blocked_events.append(event)
            return event

    def pending_counts(self) -> dict[str, int]:
        with self.lock:
            return {"inbound": len(self.inbound)}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = super().snapshot()
            snap["balances"] = dict(self.balances)
            snap["blocked_events"] = [dataclasses.asdict(e) for e in self.blocked_events]
            snap["decode_errors"] = [dataclasses.asdict(e) for e in self.decode_errors]
            snap["oversized_sends"] = list(self.oversized_sends)
            return snap


# ---------------------------------------------------------------------------
# wire protocol
# ---------------------------------------------------------------------------

TNS = "http://tempuri.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_NSMAP = {
    "soap": SOAP_ENV,
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xsd": "http://www.w3.org/2001/XMLSchema",
}
PARAMS = ("CorpID", "Pwd", "Mobile", "Content", "Cell", "SendTime")

# An HTML error page with status 200, as a proxy or a crashed page might
# serve: no client can read a return value out of it.
GARBLED_BODY = (
    b"<html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>HTTP Error 503.</p></body></html>"
)


class SoapFault(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_envelope(body: bytes, soap_action: str) -> tuple[str, dict[str, str]]:
    """(operation, parameters) of a SOAP 1.1 request; SoapFault when unusable.

    Like ASP.NET, the SOAPAction header picks the operation; the body element
    must match it. Parameters are read by exact name (XML is case-sensitive);
    a missing one is empty, as ASP.NET passes null."""
    action = soap_action.strip().strip('"')
    operation = action[len(TNS) :] if action.startswith(TNS) else ""
    if operation not in OPERATIONS:
        raise SoapFault("soap:Client", f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        raise SoapFault(
            "soap:Client", "Server was unable to read request. ---> There is an error in XML document."
        ) from None
    if root.getroottree().docinfo.doctype:
        raise SoapFault("soap:Client", "Server was unable to read request. ---> DTD is prohibited.")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body") if root.tag == f"{{{SOAP_ENV}}}Envelope" else None
    if soap_body is None:
        raise SoapFault("soap:VersionMismatch", "Possible SOAP version mismatch: not a SOAP 1.1 envelope.")
    elements = [child for child in soap_body if isinstance(child.tag, str)]
    if not elements or elements[0].tag != f"{{{TNS}}}{operation}":
        raise SoapFault("soap:Client", f"Server did not recognize the request element for {operation}.")
    params = {}
    for child in elements[0]:
        if isinstance(child.tag, str) and etree.QName(child).namespace == TNS:
            params[etree.QName(child).localname] = child.text or ""
    return operation, params


def envelope(operation: str, value: str) -> bytes:
    """``<operation>Response/<operation>Result`` in a SOAP 1.1 envelope, UTF-8."""
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=_NSMAP)
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    wrapper = etree.SubElement(body, f"{{{TNS}}}{operation}Response", nsmap={None: TNS})
    etree.SubElement(wrapper, f"{{{TNS}}}{operation}Result").text = value
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def fault_envelope(fault: SoapFault) -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=_NSMAP)
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    element = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(element, "faultcode").text = fault.code
    etree.SubElement(element, "faultstring").text = fault.message
    etree.SubElement(element, "detail")
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def parse_params(query: bytes, body: bytes, charset: str) -> dict[str, str]:
    """Decode an ``.aspx`` query string and form body; raise UnicodeDecodeError.

    Percent-encoded bytes are GB2312 (平台編碼), not UTF-8, which is why
    Starlette's form parser is not used. Names are matched case-insensitively
    and the query string wins over the form, as ASP.NET's Request[name] does."""
    canonical = {name.lower(): name for name in PARAMS}
    params: dict[str, str] = {}
    for raw in (body, query):
        text = raw.decode(charset, errors="strict")
        for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict"):
            if key.lower() in canonical:
                params[canonical[key.lower()]] = value
    return params


def answer(state: LinkwsState, operation: str, params: dict[str, str], transport: str) -> str:
    """The operation's bare return value, as both transports carry it."""
    user, pwd = params.get("CorpID", ""), params.get("Pwd", "")
    try:
        if operation == "BatchSend2":
            record = state.send(
                user,
                pwd,
                params.get("Mobile", ""),
                params.get("Content", ""),
                params.get("Cell", ""),
                params.get("SendTime") or None,
                transport,
            )
            return str(record.batch_id)
        if operation == "Get":
            # ||手機號#上行內容#發送時間#擴展號||…; empty when there is nothing.
            return "".join(f"||{m.mobile}#{m.content}#{m.received_at}#{m.ext}" for m in state.take_inbound(user, pwd))
        if operation == "SelSum":
            return str(state.balance_of(user, pwd))
        return ",".join(state.blocked_of(user, pwd))  # NotSend
    except LinkwsError as err:
        return err.code


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------

# IIS matches paths case-insensitively, so clients may write any case.
_ASPX = {f"{op.lower()}.aspx": op for op in OPERATIONS}
_ASMX = "linkws.asmx"


def _wsdl_text() -> str:
    return (resources.files("smsq.providers") / "wsdl" / "linkws.wsdl").read_text(encoding="utf-8")


async def _raw_params(request: Request) -> tuple[bytes, bytes]:
    query: bytes = request.scope.get("query_string", b"")
    body = b""
    if request.method == "POST":
        raw = await request.body()
        ctype = request.headers.get("content-type", "").lower()
        if not ctype or ctype.startswith("application/x-www-form-urlencoded"):
            body = raw
    return query, body


async def _finish(state: LinkwsState, response: Response) -> Response:
    """Apply hang and garbled after the call took effect."""
    faults = state.current_faults()
    if faults.hang:
        await asyncio.sleep(faults.hang_seconds)
    if faults.garbled:
        # An unreadable 200 may hide an accepted send (or messages handed
        # out), so clients must treat it as ambiguous.
        return Response(GARBLED_BODY, status_code=200, media_type="text/html")
    return response


async def _latency(state: LinkwsState) -> None:
    delay = state.current_faults().latency
    if delay > 0:
        await asyncio.sleep(delay)


def _service_page(request: Request, wsdl: str) -> Response:
    """What a GET of the .asmx answers: the WSDL (``?wsdl``) or the operations' list."""
    if any(key.lower() == "wsdl" for key in request.query_params):
        # ASP.NET writes the address it was reached at into the WSDL.
        here = str(request.url).split("?", 1)[0]
        text = re.sub(r'(<soap:address location=")[^"]*(")', rf"\g<1>{here}\g<2>", wsdl)
        return Response(text.encode("utf-8"), media_type="text/xml; charset=utf-8")
    ops = "".join(f"<li>{op}</li>" for op in OPERATIONS)
    return Response(f"<html><body><h1>LinkWS</h1><ul>{ops}</ul></body></html>", media_type="text/html")


async def _asmx(state: LinkwsState, wsdl: str, request: Request) -> Response:
    """The SOAP transport."""
    if request.method == "GET":
        return _service_page(request, wsdl)
    try:
        operation, params = parse_envelope(await request.body(), request.headers.get("soapaction", ""))
    except SoapFault as fault:
        return Response(fault_envelope(fault), status_code=500, media_type="text/xml; charset=utf-8")
    state.record_call(operation)
    await _latency(state)
    value = answer(state, operation, params, "soap")
    return await _finish(state, Response(envelope(operation, value), media_type="text/xml; charset=utf-8"))


async def _aspx(state: LinkwsState, operation: str, request: Request) -> Response:
    """The HTTP transport: one .aspx page per operation."""
    state.record_call(operation)
    await _latency(state)
    query, body = await _raw_params(request)
    try:
        params = parse_params(query, body, state.charset)
    except UnicodeDecodeError as exc:
        state.record_decode_error(operation, exc)
        value = "-2"  # Choice: an undecodable request is 其他錯誤
    else:
        value = answer(state, operation, params, "http")
    return await _finish(
        state,
        Response(
            value.encode(state.charset, errors="replace"),
            headers={"content-type": f"text/html; charset={state.charset}"},
        ),
    )


def create_app(state: LinkwsState) -> Starlette:
    """The LinkWS vendor as an ASGI app (both transports), with ``/_sim/`` control routes."""
    wsdl = _wsdl_text()

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"].lower()
        if name == _ASMX:
            return await _asmx(state, wsdl, request)
        if name in _ASPX:
            return await _aspx(state, _ASPX[name], request)
        return Response(b"Not Found", status_code=404, media_type="text/plain")

    app = Starlette(routes=[Route("/ws/{name}", vendor, methods=["GET", "POST"])])
    return add_control_routes(app, state)

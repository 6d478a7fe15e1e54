"""Simulator of the ``orgws`` vendor: the organisation-code SMS WebService.

The protocol: ``docs/vendors/orgws.md``, written from the vendor's own document,
which wins wherever the two disagree.

Laid out like a moto backend, in three sections:

* state    -- ``OrgwsState``: the organisation, its accounts and balances,
              recorded sends, and the business rules of the six operations;
* wire     -- SOAP 1.1: request envelopes parsed with lxml (no DTD, no
              entities, no network), answers built as ASP.NET builds them;
* routes   -- ``create_app(state)``: ``POST /<any path>`` for the operations
              (dispatched on SOAPAction, as ASP.NET does), ``GET ?wsdl`` for the
              WSDL smsq ships, plus the shared ``/_sim/`` control routes.

The vendor has no reports, no inbound and no per-interval poll rule, so
there is no ``min_poll_interval`` here and ``add_inbound`` keeps the base
class's "not supported". Content length is counted in UTF-16 code units, as a
.NET server counts it (an emoji is two).

Choices where the vendor document is silent are marked "Choice:".
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsq.providers.soap import wsdl_path
from smsq.simulator.control import SimState, add_control_routes, choice, numbers

__all__ = [
    "OrgwsError",
    "OrgwsState",
    "Received",
    "SendRecord",
    "create_app",
    "parse_request",
    "segments_for",
    "sms_length",
]

# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

TNS = "http://tempuri.org/"
OPERATIONS = ("UserLogin", "UpdatePsw", "GetBalance", "SendMessage", "SendTimer", "SendMessageExt")
SEND_OPERATIONS = ("SendMessage", "SendTimer", "SendMessageExt")

MAX_NUMBERS = 1000  # 每次调用接收号码数量不能超过1000个
MAX_SEGMENTS = 3  # 不能超过3条短信的长度
MAX_EXT_DIGITS = 6  # 扩展子号最多6位
BEIJING = timezone(timedelta(hours=8))

_MOBILE = re.compile(r"1[3-9]\d{9}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")  # 2010-03-08 10:20:00

FIRST_ACCOUNT_ID = 1001  # UserLogin: 大于0 返回帐户ID值
FIRST_BATCH_ID = 880001  # SendState.Id: 服务器保存发送短信的批号ID


def sms_length(content: str) -> int:
    """Characters as .NET and the handset count them: UTF-16 code units (an emoji is two)."""
    return len(content.encode("utf-16-le", "surrogatepass")) // 2


def segments_for(content: str) -> int:
    """Billed messages per number: 70 fit one SMS, longer ones go in 67s (UCS-2)."""
    n = sms_length(content)
    return 1 if n <= 70 else math.ceil(n / 67)


class OrgwsError(Exception):
    """A vendor answer other than success: ``code`` goes in the result (State)."""

    def __init__(self, code: int, fail_phone: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.fail_phone = fail_phone


class Unavailable(Exception):
    """No SOAP answer at all: the server is overloaded (HTTP 503)."""


@dataclass
class SendRecord:
    """One accepted send call (State 1)."""

    username: str
    operation: str  # SendMessage, SendTimer or SendMessageExt
    numbers: list[str]  # accepted numbers, in order
    content: str
    send_time: str | None  # SendTimer's DateTime as received; None for the others
    timestamp: int  # the batch Timestamp as received
    ext: str | None  # SendMessageExt's Ext; None for the others
    batch_id: int  # the Id answered: one per (account, Timestamp)
    at: float
    failed: list[str] = field(default_factory=list)  # the FailPhone numbers
    segments: int = 1  # billed per accepted number


@dataclass(frozen=True)
class Received:
    """One send call as the vendor received it, answered or refused (no password)."""

    username: str
    operation: str
    timestamp: int  # the Timestamp as received
    state: int  # the State answered: 1 sent, else the error code
    at: float


@dataclass(frozen=True)
class BalanceAnswer:
    balance: int
    sended: int
    state: int
    totaled: int


class OrgwsState(SimState):
    """In-memory orgws vendor. Every method takes ``self.lock``.

    Configuration (kept by ``reset()``): ``accounts``, ``org_id``, ``charset``,
    ``forbidden_words``, ``disabled``, ``agents``, ``bound_ips``,
    ``fail_numbers`` and ``number_errors`` (both also switches, ``POST
    /_sim/switches``). Runtime data (cleared by ``reset()``): ``sends`` (the
    accepted ones), ``received`` (every send call, refused ones too, with its
    Timestamp), ``calls``, ``faults``; balances and passwords changed by
    UpdatePsw go back to their initial values.
    """

    # What a call holding a number in ``fail_numbers`` (or one that is not a mobile) gets:
    # "listed": sent, those numbers listed in FailPhone (State 1);
    # "refused": the whole call refused, State -10 (发送失败: 号码错误), FailPhone naming them;
    # "refused_unnamed": the whole call refused with -10 and an empty FailPhone.
    # Choice: the document does not say which the vendor does; "listed" is the default.
    NUMBER_ERRORS = ("listed", "refused", "refused_unnamed")
    SWITCHES = {"fail_numbers": numbers, "number_errors": choice(*NUMBER_ERRORS)}

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        balance: int = 10_000,
        charset: str = "utf-8",
        org_id: int = 10001,
        forbidden_words: list[str] | None = None,
        disabled: set[str] | None = None,
        agents: set[str] | None = None,
        bound_ips: dict[str, set[str]] | None = None,
        fail_numbers: set[str] | None = None,
    ) -> None:
        super().__init__()
        self._initial_accounts = dict(accounts if accounts is not None else {"test": "secret"})
        self.accounts = dict(self._initial_accounts)
        self.account_ids = {user: FIRST_ACCOUNT_ID + i for i, user in enumerate(self.accounts)}
        self._initial_balance = balance
        self.balances = {user: balance for user in self.accounts}
        self.sended = {user: 0 for user in self.accounts}
        self.charset = charset  # of the answers
        self.org_id = org_id  # 机构代码
        self.forbidden_words = list(forbidden_words if forbidden_words is not None else ["法轮功"])
        self.disabled = set(disabled or ())  # -> 0 帐户处于禁止使用状态
        self.agents = set(agents or ())  # -> -4 不是普通帐户 (agent/group accounts)
        self.bound_ips = {u: set(ips) for u, ips in (bound_ips or {}).items()}  # -> -30 非绑定IP
        self.fail_numbers = set(fail_numbers or ())  # accepted calls list these in FailPhone
        self.number_errors = "listed"  # see NUMBER_ERRORS
        self.received: list[Received] = []
        # Same account + same Timestamp = same batch (同批次短信，时间戳要相同).
        self._batches: dict[tuple[str, int], int] = {}
        # Ids stay monotonic across reset(): a real vendor never reuses one.
        self._batch_ids = itertools.count(FIRST_BATCH_ID)

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.accounts = dict(self._initial_accounts)
            self.balances = {user: self._initial_balance for user in self.accounts}
            self.sended = {user: 0 for user in self.accounts}
            self._batches.clear()
            self.received.clear()

    # -- helpers --------------------------------------------------------

    def _login(self, org_id: int, name: str, psw: str, ip: str | None) -> str:
        """The UserLogin checks every operation makes; returns the user name."""
        if self.faults.empty_login:
            raise OrgwsError(-2)  # 帐户信息错误: 调用的参数有为空值, as if the account's were empty
        if self.faults.auth_fail:
            raise OrgwsError(-3)
        # Choice: an Id of 0 is what ASP.NET makes of a missing int: "empty".
        if not org_id or not name or not psw:
            raise OrgwsError(-2)  # 调用的参数有为空值
        if org_id != self.org_id or self.accounts.get(name) != psw:
            raise OrgwsError(-3)  # 机构代码、用户名或密码错误
        if name in self.disabled:
            raise OrgwsError(0)
        if name in self.agents:
            raise OrgwsError(-4)
        if name in self.bound_ips and ip not in self.bound_ips[name]:
            raise OrgwsError(-30)
        return name

    def _available(self, user: str) -> int:
        # Choice: a balance fault is a fixed override; sends still draw the
        # real balance down underneath it.
        return self.faults.balance if self.faults.balance is not None else self.balances[user]

    # -- vendor operations ----------------------------------------------

    def user_login(self, org_id: int, name: str, psw: str, ip: str | None = None) -> int:
        with self.lock:
            if self.faults.busy:
                raise Unavailable()  # Choice: UserLogin has no busy code
            return self.account_ids[self._login(org_id, name, psw, ip)]

    def update_psw(self, org_id: int, name: str, old: str, new: str, ip: str | None = None) -> int:
        with self.lock:
            if self.faults.busy:
                raise Unavailable()
            user = self._login(org_id, name, old, ip)
            if not new or not new.strip():
                raise OrgwsError(-1)  # Choice: a blank new password is refused: 修改密码失败
            self.accounts[user] = new
            return 1

    def get_balance(self, org_id: int, name: str, psw: str, ip: str | None = None) -> BalanceAnswer:
        with self.lock:
            if self.faults.busy:
                raise Unavailable()  # Choice: GetBalance has no busy code
            user = self._login(org_id, name, psw, ip)
            return BalanceAnswer(
                balance=max(self._available(user), 0),
                sended=self.sended[user],
                state=self.account_ids[user],
                totaled=self._initial_balance,
            )

    def send(
        self,
        operation: str,
        org_id: int,
        name: str,
        psw: str,
        message: str,
        phone: str,
        timestamp: int,
        *,
        send_time: str | None = None,
        ext: str | None = None,
        ip: str | None = None,
    ) -> SendRecord:
        """Answer a send call; every call, refused or not, is kept in ``received``."""
        with self.lock:
            try:
                record = self._send(operation, org_id, name, psw, message, phone, timestamp, send_time, ext, ip)
            except OrgwsError as err:
                self.received.append(Received(name, operation, timestamp, err.code, time.time()))
                raise
            self.received.append(Received(name, operation, timestamp, 1, record.at))
            return record

    def _send(
        self,
        operation: str,
        org_id: int,
        name: str,
        psw: str,
        message: str,
        phone: str,
        timestamp: int,
        send_time: str | None,
        ext: str | None,
        ip: str | None,
    ) -> SendRecord:
        """``send`` without the record of the call (the caller holds the lock)."""
        if self.faults.busy:
            raise OrgwsError(-9)  # Choice: an overloaded vendor fails to take the data in: 接收数据失败
        user = self._login(org_id, name, psw, ip)
        if operation == "SendMessageExt":
            ext = ext or None  # Choice: an empty Ext means no extension
        numbers = _checked_numbers(operation, message, phone, timestamp, ext, send_time)
        found = [w for w in self.forbidden_words if w in message]
        if found:
            raise OrgwsError(-13, ";".join(found))  # 如是失败-13，返回是包含的关键字
        # FailPhone: numbers of no mobile form, ``fail_numbers`` and the `refuse` switch's.
        accepted = [
            n for n in numbers if _MOBILE.fullmatch(n) and n not in self.fail_numbers and not self.faults.refused(n)
        ]
        failed = [n for n in numbers if n not in accepted]
        if not accepted or (failed and self.number_errors != "listed"):
            # 发送失败: 号码错误: nothing of the call is sent or charged.
            raise OrgwsError(-10, None if self.number_errors == "refused_unnamed" else ";".join(failed))
        segments = segments_for(message)
        cost = len(accepted) * segments
        if self._available(user) < cost:
            raise OrgwsError(-8)
        self.balances[user] -= cost
        self.sended[user] += cost
        key = (user, timestamp)
        if key not in self._batches:
            self._batches[key] = next(self._batch_ids)
        record = SendRecord(
            user,
            operation,
            accepted,
            message,
            send_time,
            timestamp,
            ext,
            self._batches[key],
            time.time(),
            failed,
            segments,
        )
        self.sends.append(record)
        return record

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = super().snapshot()
            snap["balances"] = dict(self.balances)
            snap["received"] = [dataclasses.asdict(r) for r in self.received]
            return snap


def _checked_numbers(
    operation: str, message: str, phone: str, timestamp: int, ext: str | None, send_time: str | None
) -> list[str]:
    """A send's numbers, once the request passes the checks that need no account (in the
    vendor's order); OrgwsError with the code of the first that fails."""
    if not message:
        raise OrgwsError(-5)
    if segments_for(message) > MAX_SEGMENTS:
        raise OrgwsError(-6)
    # Choice: empty entries ("a;;b", a trailing ";") are dropped.
    numbers = [p.strip() for p in (phone or "").split(";") if p.strip()]
    if not numbers:
        raise OrgwsError(-7)
    if len(numbers) > MAX_NUMBERS:
        raise OrgwsError(-10)  # Choice: the document gives no code for > 1000; 号码错误
    if not timestamp:
        raise OrgwsError(-2)  # Choice: the Timestamp is required: 调用的参数有为空值
    bad_ext = ext is not None and not (ext.isascii() and ext.isdigit() and len(ext) <= MAX_EXT_DIGITS)
    if operation == "SendMessageExt" and bad_ext:
        raise OrgwsError(-10)  # Choice: the sub-number is part of the sender number: 号码错误
    if operation == "SendTimer":
        _check_send_time(send_time)
    return numbers


def _check_send_time(value: str | None) -> None:
    # 格式：2010-03-08 10:20:00; 定时时间必须大于当前调用时间.
    if not value or not _DATETIME.fullmatch(value):
        raise OrgwsError(-11)
    try:
        when = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise OrgwsError(-11) from None
    if when <= datetime.now(BEIJING):
        raise OrgwsError(-12)


# ---------------------------------------------------------------------------
# wire protocol
# ---------------------------------------------------------------------------

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"

# Requests are parsed with DTDs and entities refused: nothing in the document
# may make the server read files or the network, or expand itself.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

# An HTML error page with status 200, as a proxy or a crashed worker process
# might serve: no client can read an answer out of it.
GARBLED_BODY = (
    b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/' Application.</h1></body></html>"
)


class SoapFault(Exception):
    """Answer a soap:Fault (HTTP 500), as ASP.NET does for requests it cannot read."""

    def __init__(self, message: str, code: str = "soap:Client") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def parse_request(body: bytes, operation: str) -> dict[str, str]:
    """The parameters of ``operation``'s request element: local name -> text ("" if empty).

    Elements outside the tempuri namespace are ignored, as ASP.NET ignores
    them (the parameter is then null). Raises SoapFault."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault(f"Server was unable to read request. ---> {exc}") from None
    if root.getroottree().docinfo.doctype or root.getroottree().docinfo.internalDTD is not None:
        raise SoapFault("Server was unable to read request. ---> DTD is prohibited in this XML document.")
    if root.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise SoapFault("Possible SOAP version mismatch: this endpoint speaks SOAP 1.1.", "soap:VersionMismatch")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("Server was unable to read request: not a SOAP 1.1 envelope.")
    body_el = root.find(f"{{{SOAP_ENV}}}Body")
    children = [c for c in body_el if isinstance(c.tag, str)] if body_el is not None else []
    if len(children) != 1 or children[0].tag != f"{{{TNS}}}{operation}":
        raise SoapFault(f"Server did not recognize the request element for {operation}.")
    params: dict[str, str] = {}
    for child in children[0]:
        if isinstance(child.tag, str) and etree.QName(child).namespace == TNS:
            params[etree.QName(child).localname] = child.text or ""
    return params


def _int_param(params: dict[str, str], name: str) -> int:
    value = params.get(name, "").strip()
    if not value:
        return 0  # ASP.NET's default for a missing int
    try:
        return int(value)
    except ValueError:
        raise SoapFault(
            f"Server was unable to read request. ---> Input string was not in a correct format ({name})."
        ) from None


def _envelope(operation: str) -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "xsi": XSI, "xsd": XSD})
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    response = etree.SubElement(body, f"{{{TNS}}}{operation}Response", nsmap={None: TNS})
    return env, etree.SubElement(response, f"{{{TNS}}}{operation}Result")


def _children(parent: etree._Element, **fields: object) -> None:
    for name, value in fields.items():
        if value is not None:  # a null string is left out (minOccurs="0")
            etree.SubElement(parent, f"{{{TNS}}}{name}").text = str(value)


def answer(state: OrgwsState, operation: str, params: dict[str, str], ip: str | None) -> etree._Element:
    """Run ``operation``; return the answer envelope. Raises SoapFault or Unavailable."""
    org_id = _int_param(params, "Id")
    name, psw = params.get("Name", ""), params.get("Psw", "")
    env, result = _envelope(operation)
    if operation in ("UserLogin", "UpdatePsw"):
        try:
            if operation == "UserLogin":
                code = state.user_login(org_id, name, psw, ip)
            else:
                code = state.update_psw(org_id, name, params.get("OldPsw", ""), params.get("NewPsw", ""), ip)
        except OrgwsError as err:
            code = err.code
        result.text = str(code)
    elif operation == "GetBalance":
        try:
            b = state.get_balance(org_id, name, psw, ip)
        except OrgwsError as err:
            b = BalanceAnswer(0, 0, err.code, 0)
        _children(result, Balance=b.balance, Sended=b.sended, State=b.state, Totaled=b.totaled)
    else:
        timestamp = _int_param(params, "Timestamp")
        try:
            record = state.send(
                operation,
                org_id,
                name,
                psw,
                params.get("Message", ""),
                params.get("Phone", ""),
                timestamp,
                send_time=params.get("DateTime") if operation == "SendTimer" else None,
                ext=params.get("Ext") if operation == "SendMessageExt" else None,
                ip=ip,
            )
        except OrgwsError as err:
            _children(result, FailPhone=err.fail_phone, Id=0, State=err.code)
        else:
            _children(result, FailPhone=";".join(record.failed) or None, Id=record.batch_id, State=1)
    return env


def fault_envelope(fault: SoapFault) -> etree._Element:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "xsi": XSI, "xsd": XSD})
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    el = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(el, "faultcode").text = fault.code
    etree.SubElement(el, "faultstring").text = fault.message
    etree.SubElement(el, "detail")
    return env


def wsdl_for(address: str) -> bytes:
    """The shipped WSDL with soap:address pointing here, as ASP.NET rewrites it."""
    tree = etree.parse(wsdl_path("orgws.wsdl"), _PARSER)
    for el in tree.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
        el.set("location", address)
    return etree.tostring(tree, xml_declaration=True, encoding="utf-8")


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------


def _operation(request: Request) -> str | None:
    action = request.headers.get("soapaction", "").strip().strip('"')
    if action.startswith(TNS) and action[len(TNS) :] in OPERATIONS:
        return action[len(TNS) :]
    return None


def create_app(state: OrgwsState) -> Starlette:
    """The orgws vendor as an ASGI app, with ``/_sim/`` control routes."""

    def xml(env: etree._Element, status: int = 200) -> Response:
        return Response(
            etree.tostring(env, xml_declaration=True, encoding=state.charset),
            status_code=status,
            headers={"content-type": f"text/xml; charset={state.charset}"},
        )

    async def vendor(request: Request) -> Response:
        if request.method == "GET":
            if request.url.query.lower() == "wsdl":
                address = str(request.url.replace(query=""))
                return Response(wsdl_for(address), media_type="text/xml; charset=utf-8")
            help_page = (
                "<html><body><h1>Service</h1><ul>"
                + "".join(f"<li>{op}</li>" for op in OPERATIONS)
                + "</ul></body></html>"
            )
            return Response(help_page, media_type="text/html; charset=utf-8")

        ctype = request.headers.get("content-type", "").lower()
        if not ctype.startswith("text/xml"):
            return Response(b"Unsupported Media Type: SOAP 1.1 is text/xml", status_code=415)
        operation = _operation(request)
        body = await request.body()
        if operation is None:
            action = request.headers.get("soapaction", "")[:200]
            return xml(
                fault_envelope(SoapFault(f"Server did not recognize the value of HTTP Header SOAPAction: {action}.")),
                500,
            )
        state.record_call(operation)
        faults = state.current_faults()
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)

        try:
            params = parse_request(body, operation)
            env = answer(state, operation, params, request.client.host if request.client else None)
        except SoapFault as fault:
            return xml(fault_envelope(fault), 500)
        except Unavailable:
            return Response(
                b"<html><body><h1>Service Unavailable</h1></body></html>", status_code=503, media_type="text/html"
            )

        if faults.hang:
            # The call has taken effect; now make the client time out.
            await asyncio.sleep(faults.hang_seconds)
        if faults.garbled:
            # Also after the call took effect: an unreadable 200 may hide an
            # accepted send, so clients must treat it as ambiguous.
            return Response(GARBLED_BODY, status_code=200, media_type="text/html")
        return xml(env)

    app = Starlette(routes=[Route("/{path:path}", vendor, methods=["GET", "POST"])])
    return add_control_routes(app, state)

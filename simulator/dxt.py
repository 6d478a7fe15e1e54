"""Simulator of the ``dxt`` vendor: 企业短信通 HTTP text interface.

The protocol: ``docs/vendors/dxt.md``, written from the vendor's own document,
which wins wherever the two disagree.

Laid out like a moto backend, in three sections:

* state    -- ``DxtState``: accounts, balances, recorded sends, queued status
              reports and inbound messages, and the business rules;
* wire     -- decoding requests (percent-encoded bytes in the account charset,
              GBK by default) and the pipe-delimited text answers;
* routes   -- ``create_app(state)``: the four ``.asp`` endpoints plus the
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsq.simulator.control import Call, SimState, add_control_routes, without

__all__ = [
    "DxtError",
    "DxtState",
    "InboundMessage",
    "Report",
    "SendRecord",
    "create_app",
    "parse_params",
    "segments_for",
]

# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

SEND = "sendsms_txt.asp"
REPORTS = "get_report_txt.asp"
INBOUND = "get_receive_message_txt.asp"
BALANCE = "Get_Account_Balance.asp"

MAX_NUMBERS = 100  # 最大允许每次提交号码100个号码 -> -4
MAX_CHARS = 335  # 短信内容长度超过规定最大字符长度335个字符 -> -8
MAX_REPORTS = 100  # 长字符串形式返回(最大返回100条)
MAX_INBOUND = 50  # 长字符串形式返回(最大返回50条)

# 目标号码,小灵通需加区号,移动,联通,电信cdma则为手机号码: mobiles, or
# fixed-line numbers written with their area code (075580808080).
_MOBILE = re.compile(r"1[3-9]\d{9}")
_FIXED_LINE = re.compile(r"0\d{9,11}")

# The document's own examples: SMSIDs around 6408649, inbound ids 133/134.
FIRST_SMSID = 6408600
FIRST_INBOUND_ID = 133


def segments_for(content: str) -> int:
    """Billed messages for one number.

    70字为一条标准的短信,大于70字则按长短信标准计算条数 -- the document gives no
    long-SMS size; 67 characters per part is the UCS-2 concatenation rule.
    """
    return 1 if len(content) <= 70 else math.ceil(len(content) / 67)


def _valid_number(number: str) -> bool:
    return bool(_MOBILE.fullmatch(number) or _FIXED_LINE.fullmatch(number))


def _valid_send_time(value: str) -> bool:
    # 格式必须为14个数字,如 20100903112030
    if not re.fullmatch(r"\d{14}", value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


class DxtError(Exception):
    """A vendor answer other than success: ``answer`` is the body to send."""

    def __init__(self, answer: str, status: int = 200) -> None:
        super().__init__(answer)
        self.answer = answer
        self.status = status


class LoginRefused(DxtError):
    """The credentials were refused (a wrong password, an unknown user, ``auth_fail``): a
    failed login, which the state records (``refused_logins``)."""


@dataclass
class SendRecord:
    """One accepted send request (the vendor answered ``0|a|b|d``)."""

    username: str
    numbers: list[str]  # accepted numbers, in order; numbers[i] got smsids[i]
    content: str
    send_time: str | None  # as sent; None when absent (即时短信)
    smsids: list[str]
    at: float
    rejected: list[str] = field(default_factory=list)  # the "b" numbers
    segments: int = 1  # billed per accepted number


@dataclass
class Report:
    username: str
    smsid: str
    mobile: str
    status: int  # -1 未收到状态报告, 10 发送成功, 20 发送失败
    available_at: float


@dataclass
class InboundMessage:
    username: str
    id: int
    mobile: str
    content: str
    at: float


@dataclass
class DecodeError:
    endpoint: str
    error: str  # the codec's message; never the raw request (it holds the password)
    at: float


class DxtState(SimState):
    """In-memory dxt vendor. Every method takes ``self.lock``.

    Configuration (kept by ``reset()``): ``accounts``, ``charset``,
    ``forbidden_words``, ``locked``, ``report_status``, ``fail_numbers``,
    ``report_delay``. Runtime data (cleared by ``reset()``): ``sends``,
    ``calls``, ``faults``, queued reports and inbound messages,
    ``decode_errors``, ``bad_send_times``, ``refused_logins``; balances go back to their
    initial values.
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        balance: int | dict[str, int] = 10_000,
        charset: str = "gbk",
        forbidden_words: list[str] | None = None,
        locked: set[str] | None = None,
        report_status: int | None = 10,
        fail_numbers: set[str] | None = None,
        report_delay: float = 0.0,
        first_smsid: int = FIRST_SMSID,
    ) -> None:
        super().__init__()
        self.accounts = dict(accounts if accounts is not None else {"test": "secret"})
        self._initial_balances = {
            user: (balance.get(user, 0) if isinstance(balance, dict) else balance) for user in self.accounts
        }
        self.balances = dict(self._initial_balances)
        self.charset = charset
        self.forbidden_words = list(forbidden_words if forbidden_words is not None else ["法轮功"])
        self.locked = set(locked or ())
        # Status for generated reports; None generates none (reports that
        # never come). Numbers in fail_numbers always get 20.
        self.report_status = report_status
        self.fail_numbers = set(fail_numbers or ())
        self.report_delay = report_delay
        self.reports: list[Report] = []
        self.inbound: list[InboundMessage] = []
        self.decode_errors: list[DecodeError] = []
        self.bad_send_times: list[str] = []
        # Every call whose credentials were refused (a failed login, as the vendor
        # counts them towards locking the account: -10), by endpoint and time.
        self.refused_logins: list[Call] = []
        # Ids stay monotonic across reset(): a real vendor never reuses one,
        # and reuse would hide duplicate-key bugs in the client's store.
        # A long-lived simulator starts them from the clock (``first_smsid``)
        # so a restarted one does not hand out the ids of the last run again.
        self._smsids = itertools.count(first_smsid)
        self._inbound_ids = itertools.count(FIRST_INBOUND_ID)

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.balances = dict(self._initial_balances)
            self.reports.clear()
            self.inbound.clear()
            self.decode_errors.clear()
            self.bad_send_times.clear()
            self.refused_logins.clear()

    # -- helpers --------------------------------------------------------

    def _login(self, username: str, password: str, *, unknown_user: str) -> None:
        if self.faults.auth_fail:
            raise LoginRefused("-7")
        if username not in self.accounts:
            raise LoginRefused(unknown_user)
        if self.accounts[username] != password:
            raise LoginRefused("-7")

    def _balance(self, username: str) -> int:
        # Choice: a balance fault is a fixed override; sends still draw the
        # real balance down underneath it.
        if self.faults.balance is not None:
            return self.faults.balance
        return self.balances[username]

    def record_refused_login(self, endpoint: str) -> None:
        with self.lock:
            self.refused_logins.append(Call(endpoint, time.time()))

    def record_decode_error(self, endpoint: str, exc: UnicodeDecodeError) -> None:
        with self.lock:
            self.decode_errors.append(DecodeError(endpoint, str(exc), time.time()))

    # -- vendor operations ----------------------------------------------

    def send(self, username: str, password: str, phones: str, content: str, send_time: str | None) -> SendRecord:
        with self.lock:
            if self.faults.busy:
                raise DxtError("-99")  # 系统忙,无法受理此次请求
            # Only -7 exists for a send: 用户登入信息验证失败(一般为密码错误).
            self._login(username, password, unknown_user="-7")
            if username in self.locked:
                raise DxtError("-10")  # 帐号已被锁定
            # Choice: empty entries ("a,,b" or a trailing comma) are dropped,
            # not counted as rejected numbers.
            numbers = [n for n in phones.split(",") if n]
            if not numbers:
                raise DxtError("-1")  # 缺少接收的目标号码
            if not content.strip():
                raise DxtError("-2")  # 缺少短信内容
            if len(numbers) > MAX_NUMBERS:
                raise DxtError("-4")  # 每次请求条数大于最大允许条数100条
            if len(content) > MAX_CHARS:
                raise DxtError("-8")
            for word in self.forbidden_words:
                if word in content:
                    # 具体的禁发词在单竖线的后一个值体现
                    raise DxtError(f"-3|{word}")
            if send_time is not None and not _valid_send_time(send_time):
                # The document says 格式必须为14个数字 but states no consequence:
                # its send codes (-1 -2 -3 -4 -7 -8 -9 -10 -99) have none for the
                # time, nor does it say such a send goes out at once. So no code
                # is invented: the send is answered 0|a|b|d like any other, the
                # raw value is kept on the record and noted here so a test can
                # catch a client that sends it. (The simulator delivers every
                # send at once; it does not model scheduling.)
                self.bad_send_times.append(send_time)
            # "b": 处理失败的号码个数,一般为号码长度不对等 -- numbers of no known form, and
            # the ones the `refuse` switch names; counted in b, named nowhere, no SMSID.
            accepted = [n for n in numbers if _valid_number(n) and not self.faults.refused(n)]
            rejected = [n for n in numbers if n not in accepted]
            segments = segments_for(content)
            cost = len(accepted) * segments
            if self._balance(username) < cost:
                raise DxtError("-9")  # 帐户当前余额不足发送本次请求的条数
            self.balances[username] -= cost

            now = time.time()
            smsids = [str(next(self._smsids)) for _ in accepted]
            record = SendRecord(username, accepted, content, send_time, smsids, now, rejected, segments)
            self.sends.append(record)
            if self.report_status is not None:
                for smsid, number in zip(smsids, accepted, strict=True):
                    status = 20 if number in self.fail_numbers else self.report_status
                    self.reports.append(Report(username, smsid, number, status, now + self.report_delay))
            return record

    def take_reports(self, username: str, password: str) -> list[Report]:
        """Hand out up to 100 available reports, each only once."""
        with self.lock:
            self._poll_checks(username, password)
            now = time.time()
            taken = [r for r in self.reports if r.username == username and r.available_at <= now]
            taken = taken[:MAX_REPORTS]
            # 服务端将不再分发此SMSID的状态报告信息编号的结果给客户端
            self.reports = without(self.reports, taken)
            return taken

    def take_inbound(self, username: str, password: str) -> list[InboundMessage]:
        """Hand out up to 50 inbound messages, each only once."""
        with self.lock:
            self._poll_checks(username, password)
            taken = [m for m in self.inbound if m.username == username][:MAX_INBOUND]
            # 服务端将不再分发此短信编号的内容给客户端
            self.inbound = without(self.inbound, taken)
            return taken

    def _poll_checks(self, username: str, password: str) -> None:
        # Poll codes: -1 用户不存在, -3 系统忙,请稍候再试, -7 帐号登录验证失败.
        # Choice: a locked account may still poll; the document only says
        # what a locked account cannot do for sends.
        if self.faults.busy:
            raise DxtError("-3")
        self._login(username, password, unknown_user="-1")

    def balance_of(self, username: str, password: str) -> int:
        with self.lock:
            if self.faults.busy:
                # Choice: the balance endpoint has no busy code (only -1 and
                # -7), so busy looks like an overloaded IIS: HTTP 503.
                raise DxtError("Service Unavailable", status=503)
            self._login(username, password, unknown_user="-1")  # -1 帐户不存在
            return max(self._balance(username), 0)

    # -- control hooks ---------------------------------------------------

    def add_inbound(self, mobile: str, content: str, username: str | None = None) -> InboundMessage:
        """Queue a message a handset sent to ``username`` (default: first account)."""
        with self.lock:
            user = username if username is not None else next(iter(self.accounts))
            if user not in self.accounts:
                raise KeyError(f"unknown account {user!r}")
            message = InboundMessage(user, next(self._inbound_ids), mobile, content, time.time())
            self.inbound.append(message)
            return message

    def pending_counts(self) -> dict[str, int]:
        with self.lock:
            return {"reports": len(self.reports), "inbound": len(self.inbound)}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = super().snapshot()
            snap["balances"] = dict(self.balances)
            snap["decode_errors"] = [dataclasses.asdict(e) for e in self.decode_errors]
            snap["bad_send_times"] = list(self.bad_send_times)
            snap["refused_logins"] = [dataclasses.asdict(c) for c in self.refused_logins]
            return snap


# ---------------------------------------------------------------------------
# wire protocol
# ---------------------------------------------------------------------------

# An HTML error page with status 200, as a proxy or a crashed ASP page
# might serve: no client can read a code out of it.
GARBLED_BODY = (
    b"<html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>HTTP Error 503.</p></body></html>"
)


def parse_params(query: bytes, body: bytes, charset: str) -> dict[str, str]:
    """Decode the query string and form body; raise UnicodeDecodeError.

    The document names no charset; gateways like this one (classic ASP)
    decode GB2312/GBK, so percent-encoded bytes are read in the account's
    charset, not UTF-8 -- which is why Starlette's form parser is not used.
    Raw (unescaped) non-ASCII bytes are read in the same charset.
    Like ASP's Request(name), the query string wins over the form body.
    """
    params: dict[str, str] = {}
    for raw in (body, query):
        text = raw.decode(charset, errors="strict")
        params.update(urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict"))
    return params


def _credentials(params: dict[str, str]) -> tuple[str, str]:
    return params.get("us_name", ""), params.get("us_pwd", "")


def answer_send(state: DxtState, params: dict[str, str]) -> str:
    user, pwd = _credentials(params)
    # 不带此参数,表示即时短信: an empty value counts as absent.
    send_time = params.get("send_time") or None
    record = state.send(user, pwd, params.get("send_phone", ""), params.get("send_content", ""), send_time)
    # 0|a|b|d: d = the SMSIDs, comma-separated, one per accepted number.
    return f"0|{len(record.numbers)}|{len(record.rejected)}|{','.join(record.smsids)}"


def answer_reports(state: DxtState, params: dict[str, str]) -> str:
    reports = state.take_reports(*_credentials(params))
    if not reports:
        return "0"  # 目前没有状态报告返回
    # 3|6408676;13682250950;20|6408649;13711147169;20|...
    return "|".join([str(len(reports))] + [f"{r.smsid};{r.mobile};{r.status}" for r in reports])


def _inbound_record(m: InboundMessage) -> str:
    # The text says 短信编号+";"+电话号码+";"+内容, but the vendor's own example
    # is 2|133,13798361236;我回复一条|134,13826588212;我也回复一条 -- a comma
    # after the id. Clients must take both, so odd ids get the comma and even
    # ids the semicolon.
    sep = "," if m.id % 2 else ";"
    return f"{m.id}{sep}{m.mobile};{m.content}"


def answer_inbound(state: DxtState, params: dict[str, str]) -> str:
    messages = state.take_inbound(*_credentials(params))
    if not messages:
        return "0"  # 当前没有新的短消息上行
    return "|".join([str(len(messages))] + [_inbound_record(m) for m in messages])


def answer_balance(state: DxtState, params: dict[str, str]) -> str:
    return str(state.balance_of(*_credentials(params)))  # 当前可用条数


_ANSWERS: dict[str, Callable[[DxtState, dict[str, str]], str]] = {
    SEND: answer_send,
    REPORTS: answer_reports,
    INBOUND: answer_inbound,
    BALANCE: answer_balance,
}

# Choice: a request that does not decode in the charset is answered as if
# the field were missing: -2 (缺少短信内容) for a send; for the polls and the
# balance the user name cannot be read, so -1 (用户不存在).
_UNDECODABLE = {SEND: "-2", REPORTS: "-1", INBOUND: "-1", BALANCE: "-1"}


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------

# IIS matches paths case-insensitively, so clients may write any case.
_ENDPOINTS = {name.lower(): name for name in _ANSWERS}


async def _raw_params(request: Request) -> tuple[bytes, bytes]:
    query: bytes = request.scope.get("query_string", b"")
    body = b""
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").lower()
        raw = await request.body()
        # ASP's Request.Form reads only urlencoded bodies.
        if not ctype or ctype.startswith("application/x-www-form-urlencoded"):
            body = raw
    return query, body


def create_app(state: DxtState) -> Starlette:
    """The dxt vendor as an ASGI app, with ``/_sim/`` control routes."""

    async def vendor(request: Request) -> Response:
        endpoint = _ENDPOINTS.get(request.path_params["name"].lower())
        if endpoint is None:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        state.record_call(endpoint)
        faults = state.current_faults()
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        if faults.failing_http():  # an outage: nothing takes effect
            return Response(b"Internal Server Error", status_code=faults.failing_http(), media_type="text/plain")

        status = 200
        query, body = await _raw_params(request)
        try:
            params = parse_params(query, body, state.charset)
        except UnicodeDecodeError as exc:
            state.record_decode_error(endpoint, exc)
            answer = _UNDECODABLE[endpoint]
        else:
            try:
                answer = _ANSWERS[endpoint](state, params)
            except DxtError as err:
                answer, status = err.answer, err.status
                if isinstance(err, LoginRefused):
                    state.record_refused_login(endpoint)

        if faults.hang:
            # The call has taken effect; now make the client time out.
            await asyncio.sleep(faults.hang_seconds)
        if faults.garbled:
            # Also after the call took effect: an unreadable 200 may hide an
            # accepted send (or reports handed out), so clients must treat it
            # as ambiguous, not as a failure to retry.
            return Response(GARBLED_BODY, status_code=200, media_type="text/html")
        return Response(
            answer.encode(state.charset, errors="replace"),
            status_code=status,
            headers={"content-type": f"text/plain; charset={state.charset}"},
        )

    app = Starlette(routes=[Route("/{name}", vendor, methods=["GET", "POST"])])
    return add_control_routes(app, state)

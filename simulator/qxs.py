"""Simulator of the ``qxs`` vendor: 企业信使, the ``sms.aspx`` XML protocol family.

The protocol: ``docs/vendors/qxs.md`` (the reading of the vendor's
OCR-garbled document).

Laid out like a moto backend, in three sections:

* state    -- ``QxsState``: accounts, enterprise ids, balances, recorded sends,
              queued status reports and inbound messages, and the business rules;
* wire     -- decoding form requests (UTF-8) and writing the XML answers, with
              the family's own spellings (``Faild``, ``Sucess`` on ``overage``,
              ``<errorstatus>`` on the poll pages) so clients meet them here;
* routes   -- ``create_app(state)``: ``sms.aspx`` (send, overage, checkkeyword),
              ``statusApi.aspx`` and ``callApi.aspx``, plus the ``/_sim/`` routes.

The original states no numbers-per-call limit, no content length, no rule
for a past or malformed sendTime and no interval between polls, so none is
enforced (a malformed sendTime is kept in ``bad_send_times``). statusNum is
the family's extension; the original does not name it.
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
from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsq.simulator.control import SimState, add_control_routes, without

__all__ = ["InboundMessage", "QxsError", "QxsState", "Report", "SendRecord", "create_app", "parse_params"]

# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

SMS = "sms.aspx"
STATUS = "statusApi.aspx"
CALL = "callApi.aspx"

# The document states no numbers-per-call limit (the family's norm is 100, the
# provider's chunk size), so any count is accepted; the records show each size.
# Choice: no per-call maximum is documented for the poll pages. Reports honour
# the family's statusNum, capped at 100; inbound hands out at most 100.
MAX_REPORTS = 100
MAX_INBOUND = 100

# The vendor's messages (original wording).
EMPTY_LOGIN = "用户名或密码不能为空"
BAD_LOGIN = "用户名或密码错误"
SQL_INJECTION = "发送内容包含sql注入字符"
NO_NUMBERS = "短信号码不能为空"
NO_CONTENT = "短信内容不能为空"
FORBIDDEN = "包含非法字符："
NO_BALANCE = "对不起，您当前要发送的量大于您当前余额"
OTHER_ERROR = "其他错误"

# <errorstatus> codes of statusApi.aspx and callApi.aspx.
POLL_ERRORS = {1: EMPTY_LOGIN, 2: BAD_LOGIN, 3: "该用户不允许查看状态报告", 4: "参数不正确"}

PREPAID, POSTPAID = "预付费", "后付费"
FIRST_TASK_ID = 1504  # the document's own example taskID
BEIJING = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # sendTime and receivetime

_MOBILE = re.compile(r"1[3-9]\d{9}")


def segments_for(content: str) -> int:
    """Billed messages per number: 70 characters fit one, longer ones go in 67s (UCS-2)."""
    return 1 if len(content) <= 70 else math.ceil(len(content) / 67)


def _valid_send_time(value: str) -> bool:
    try:
        datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        return False
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", value))


def _beijing_now(at: float) -> str:
    return datetime.fromtimestamp(at, BEIJING).strftime(TIME_FORMAT)


class QxsError(Exception):
    """A vendor answer other than success.

    ``message`` goes in ``<message>`` (sms.aspx); ``code`` in ``<errorstatus>``
    (poll pages); ``status`` other than 200 is an HTTP-level answer."""

    def __init__(self, message: str = "", *, code: int | None = None, status: int = 200) -> None:
        super().__init__(message or f"error {code}")
        self.message = message
        self.code = code
        self.status = status


@dataclass
class SendRecord:
    """One accepted send (the vendor answered Success)."""

    username: str
    numbers: list[str]  # accepted numbers, in order
    content: str
    send_time: str | None  # sendTime as received; None when absent or empty (send now)
    task_id: str
    at: float
    rejected: list[str] = field(default_factory=list)  # entries that are no mainland mobile
    segments: int = 1  # billed per accepted number
    checkcontent: bool = False
    extno: str | None = None


@dataclass
class Report:
    username: str
    task_id: str
    mobile: str
    status: int  # 10 发送成功, 20 发送失败
    errorcode: str  # family extension: DELIVRD / UNDELIV
    available_at: float


@dataclass
class InboundMessage:
    username: str
    task_id: str
    mobile: str
    content: str
    at: float


@dataclass
class DecodeError:
    endpoint: str
    error: str  # the codec's message; never the raw request (it holds the password)
    at: float


class QxsState(SimState):
    """In-memory qxs vendor. Every method takes ``self.lock``.

    Configuration (kept by ``reset()``): ``accounts``, ``userids``, ``charset``,
    ``payinfo``, ``forbidden_words``, ``sql_markers``, ``report_status``,
    ``fail_numbers``, ``report_delay``, ``report_denied``, ``clean_message``.
    Runtime data (cleared by ``reset()``): ``sends``, ``calls``, ``faults``,
    queued reports and inbound messages, ``decode_errors``, ``bad_send_times``;
    balances go back to their initial values.
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        balance: int | dict[str, int] = 10_000,
        charset: str = "utf-8",
        userid: str | dict[str, str] = "12",
        payinfo: str = PREPAID,
        forbidden_words: list[str] | None = None,
        sql_markers: list[str] | None = None,
        report_status: int | None = 10,
        fail_numbers: set[str] | None = None,
        report_delay: float = 0.0,
        report_denied: set[str] | None = None,
        first_task_id: int = FIRST_TASK_ID,
    ) -> None:
        super().__init__()
        self.accounts = dict(accounts if accounts is not None else {"test": "secret"})
        for user in self.accounts:
            if not user.isascii():
                # 接口账户必须是英文格式,不支持中文名
                raise ValueError(f"account names must be ASCII, not {user!r}")
        # The enterprise id (企业ID) each account must send with its login.
        self.userids = {u: (userid.get(u, "12") if isinstance(userid, dict) else userid) for u in self.accounts}
        # sendTotal: points bought. Sends add to `used` (the vendor's "overage").
        self._totals = {u: (balance.get(u, 0) if isinstance(balance, dict) else balance) for u in self.accounts}
        self.used = {u: 0 for u in self.accounts}
        self.charset = charset
        self.payinfo = payinfo
        self.forbidden_words = list(forbidden_words if forbidden_words is not None else ["法轮功", "代开发票"])
        # Choice: the document names no SQL-injection characters; these are
        # what naive ASP.NET filters of the era refuse.
        self.sql_markers = list(sql_markers if sql_markers is not None else ["'", "--", "/*", "xp_cmdshell"])
        self.report_status = report_status  # None: reports never come
        self.fail_numbers = set(fail_numbers or ())  # these always get status 20
        self.report_delay = report_delay
        self.report_denied = set(report_denied or ())  # accounts answered <error>3</error>
        # The original says 未包含非法字符; the family also answers 没有包含屏蔽词.
        self.clean_message = "未包含非法字符"
        self.reports: list[Report] = []
        self.inbound: list[InboundMessage] = []
        self.decode_errors: list[DecodeError] = []
        self.bad_send_times: list[str] = []
        # Ids stay monotonic across reset(): a real vendor never reuses one.
        # ``first_task_id`` from the clock keeps them unique across restarts too.
        self._task_ids = itertools.count(first_task_id)

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.used = {u: 0 for u in self.accounts}
            self.reports.clear()
            self.inbound.clear()
            self.decode_errors.clear()
            self.bad_send_times.clear()

    # -- helpers --------------------------------------------------------

    def remaining(self, username: str) -> int:
        # Choice: a balance fault is a fixed override of what is left; sends
        # still count up `used` underneath it.
        with self.lock:
            if self.faults.balance is not None:
                return self.faults.balance
            return self._totals[username] - self.used[username]

    def _login_ok(self, username: str, password: str, userid: str) -> bool:
        if self.faults.auth_fail or username not in self.accounts:
            return False
        # Choice: a wrong or missing enterprise id fails like a wrong password.
        return self.accounts[username] == password and self.userids[username] == userid

    def _sms_login(self, p: dict[str, str]) -> str:
        """Checks every sms.aspx action starts with; returns the account name."""
        if self.faults.busy:
            # Choice: busy is the page's database failure, 其他错误, on every action.
            raise QxsError(OTHER_ERROR)
        user, pwd = p.get("account", ""), p.get("password", "")
        if not user or not pwd or self.faults.empty_login:
            raise QxsError(EMPTY_LOGIN)
        if not self._login_ok(user, pwd, p.get("userid", "")):
            raise QxsError(BAD_LOGIN)
        return user

    def _sql_injection(self, content: str) -> bool:
        lowered = content.lower()
        return any(marker in lowered for marker in self.sql_markers)

    def record_decode_error(self, endpoint: str, exc: UnicodeDecodeError) -> None:
        with self.lock:
            self.decode_errors.append(DecodeError(endpoint, str(exc), time.time()))

    # -- vendor operations ----------------------------------------------

    def send(self, p: dict[str, str]) -> SendRecord:
        with self.lock:
            user = self._sms_login(p)
            # 多个号码之间用半角逗号隔开: only the half-width comma separates.
            # Choice: empty entries ("a,,b", a trailing comma) are dropped.
            entries = [n.strip() for n in p.get("mobile", "").split(",") if n.strip()]
            content = p.get("content", "")
            if not entries:
                raise QxsError(NO_NUMBERS)
            if not content.strip():
                raise QxsError(NO_CONTENT)
            # Choice: the injection filter runs whatever checkcontent says.
            if self._sql_injection(content):
                raise QxsError(SQL_INJECTION)
            check = p.get("checkcontent", "0") == "1"  # 当设置为1时表示需要检查,默认0为不检查
            if check:
                found = [w for w in self.forbidden_words if w in content]
                if found:
                    raise QxsError(FORBIDDEN + ",".join(found))
            # Numbers of no mobile form, and the ones the `refuse` switch names: left out of
            # successCounts, named nowhere, no report.
            accepted = [n for n in entries if _MOBILE.fullmatch(n) and not self.faults.refused(n)]
            if not accepted:
                # Choice: nothing valid left to send is "no numbers".
                raise QxsError(NO_NUMBERS)
            segments = segments_for(content)
            cost = len(accepted) * segments
            # 当支付方式为预付费时,检查到账户余额不足
            if self.payinfo == PREPAID and cost > self.remaining(user):
                raise QxsError(NO_BALANCE)
            # 为空表示立即发送: empty counts as absent.
            send_time = p.get("sendtime") or None
            if send_time is not None and not _valid_send_time(send_time):
                # Choice: no message is documented for a bad time; like a
                # lenient gateway we accept and keep the value for tests.
                self.bad_send_times.append(send_time)
            now = time.time()
            record = SendRecord(
                user,
                accepted,
                content,
                send_time,
                str(next(self._task_ids)),
                now,
                rejected=[n for n in entries if n not in accepted],
                segments=segments,
                checkcontent=check,
                extno=p.get("extno") or None,
            )
            self.used[user] += cost
            self.sends.append(record)
            if self.report_status is not None:
                for number in accepted:
                    status = 20 if number in self.fail_numbers else self.report_status
                    code = "DELIVRD" if status == 10 else "UNDELIV"
                    self.reports.append(Report(user, record.task_id, number, status, code, now + self.report_delay))
            return record

    def overage(self, p: dict[str, str]) -> tuple[int, int]:
        """(used, total bought) for ``action=overage``."""
        with self.lock:
            user = self._sms_login(p)
            return self.used[user], self.used[user] + self.remaining(user)

    def check_keywords(self, p: dict[str, str]) -> list[str]:
        with self.lock:
            self._sms_login(p)
            # The document lists four answers here: the two login messages,
            # 包含非法字符 and 未包含非法字符. Empty content finds no word.
            return [w for w in self.forbidden_words if w in p.get("content", "")]

    def _poll_login(self, p: dict[str, str]) -> str:
        if self.faults.busy:
            # Choice: the poll pages have no busy code (only 1-4), so busy
            # looks like an overloaded IIS: HTTP 503.
            raise QxsError("Service Unavailable", status=503)
        user, pwd = p.get("account", ""), p.get("password", "")
        if not user or not pwd or self.faults.empty_login:
            raise QxsError(code=1)
        if not self._login_ok(user, pwd, p.get("userid", "")):
            raise QxsError(code=2)
        if p.get("action") != "query":
            raise QxsError(code=4)
        # The inbound page prints the same code 3 text as the report page.
        if user in self.report_denied:
            raise QxsError(code=3)
        return user

    def take_reports(self, p: dict[str, str]) -> list[Report]:
        """Hand out up to statusNum (at most 100) available reports, each only once."""
        with self.lock:
            user = self._poll_login(p)
            limit = MAX_REPORTS
            raw = p.get("statusnum", "")
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise QxsError(code=4)
                limit = min(int(raw), MAX_REPORTS)
            now = time.time()
            taken = [r for r in self.reports if r.username == user and r.available_at <= now][:limit]
            self.reports = without(self.reports, taken)
            return taken

    def take_inbound(self, p: dict[str, str]) -> list[InboundMessage]:
        """Hand out up to 100 inbound messages, each only once."""
        with self.lock:
            user = self._poll_login(p)
            taken = [m for m in self.inbound if m.username == user][:MAX_INBOUND]
            self.inbound = without(self.inbound, taken)
            return taken

    # -- control hooks ---------------------------------------------------

    def add_inbound(
        self, mobile: str, content: str, username: str | None = None, task_id: str | None = None
    ) -> InboundMessage:
        """Queue a reply a handset sent to ``username`` (default: first account).

        Choice: its taskid is that of the account's latest send to the
        mobile (a reply to it), else "0"."""
        with self.lock:
            user = username if username is not None else next(iter(self.accounts))
            if user not in self.accounts:
                raise KeyError(f"unknown account {user!r}")
            if task_id is None:
                task_id = next(
                    (s.task_id for s in reversed(self.sends) if s.username == user and mobile in s.numbers), "0"
                )
            message = InboundMessage(user, str(task_id), mobile, content, time.time())
            self.inbound.append(message)
            return message

    def pending_counts(self) -> dict[str, int]:
        with self.lock:
            return {"reports": len(self.reports), "inbound": len(self.inbound)}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = super().snapshot()
            snap["balances"] = {u: self.remaining(u) for u in self.accounts}
            snap["decode_errors"] = [dataclasses.asdict(e) for e in self.decode_errors]
            snap["bad_send_times"] = list(self.bad_send_times)
            return snap


# ---------------------------------------------------------------------------
# wire protocol
# ---------------------------------------------------------------------------

DECLARATION = '<?xml version="1.0" encoding="utf-8" ?>\n'
# An HTML error page with status 200, as a proxy or a crashed ASP.NET page
# might serve: no client can read an answer out of it.
GARBLED_BODY = (
    b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/' Application.</h1></body></html>"
)


def parse_params(query: bytes, body: bytes, charset: str) -> dict[str, str]:
    """Decode the query string and form body strictly; raise UnicodeDecodeError.

    Starlette's form parser is not used: it would hide a charset mismatch.
    Like ASP.NET's Request[name], the query string wins over the form body and
    names are case-insensitive (kept here lower-cased: ``sendtime``)."""
    params: dict[str, str] = {}
    for raw in (body, query):
        text = raw.decode(charset, errors="strict")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
        params.update((key.lower(), value) for key, value in pairs)
    return params


def _xml(*elements: str) -> str:
    return DECLARATION + "<returnsms>\n" + "".join(f"  {e}\n" for e in elements) + "</returnsms>"


def _el(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _failed(message: str) -> str:
    # 失败返回 Faild (sic): the family's spelling.
    return _xml(
        _el("returnstatus", "Faild"),
        _el("message", message),
        _el("remainpoint", 0),
        _el("taskID", 0),
        _el("successCounts", 0),
    )


def _errorstatus(code: int) -> str:
    return _xml(f"<errorstatus>{_el('error', code)}{_el('remark', POLL_ERRORS[code])}</errorstatus>")


def answer_send(state: QxsState, p: dict[str, str]) -> str:
    record = state.send(p)
    return _xml(
        _el("returnstatus", "Success"),
        _el("message", "ok"),
        _el("remainpoint", state.remaining(record.username)),
        _el("taskID", record.task_id),
        _el("successCounts", len(record.numbers)),
    )


def answer_overage(state: QxsState, p: dict[str, str]) -> str:
    used, total = state.overage(p)
    # Success spelled Sucess (sic) on this action, as the family does.
    return _xml(
        _el("returnstatus", "Sucess"),
        _el("message", ""),
        _el("payinfo", state.payinfo),
        _el("overage", used),
        _el("sendTotal", total if state.payinfo == PREPAID else 0),
    )


def answer_checkkeyword(state: QxsState, p: dict[str, str]) -> str:
    found = state.check_keywords(p)
    return _xml(_el("message", FORBIDDEN + ",".join(found) if found else state.clean_message))


def answer_reports(state: QxsState, p: dict[str, str]) -> str:
    boxes = [
        "<statusbox>"
        + _el("mobile", r.mobile)
        + _el("taskid", r.task_id)
        + _el("status", r.status)
        + _el("receivetime", _beijing_now(r.available_at))
        + _el("errorcode", r.errorcode)
        + "</statusbox>"
        for r in state.take_reports(p)
    ]
    return _xml(*boxes)


def answer_inbound(state: QxsState, p: dict[str, str]) -> str:
    boxes = [
        "<callbox>"
        + _el("mobile", m.mobile)
        + _el("taskid", m.task_id)
        + _el("content", m.content)
        + _el("receivetime", _beijing_now(m.at))
        + "</callbox>"
        for m in state.take_inbound(p)
    ]
    return _xml(*boxes)


_SMS_ACTIONS = {"send": answer_send, "overage": answer_overage, "checkkeyword": answer_checkkeyword}


def answer(state: QxsState, page: str, p: dict[str, str]) -> tuple[str, int]:
    """(body, HTTP status) for one decoded request."""
    try:
        if page == SMS:
            handler = _SMS_ACTIONS.get(p.get("action", ""))
            if handler is None:
                # Choice: no message is documented for an unknown action.
                return _failed("action参数不正确"), 200
            return handler(state, p), 200
        return (answer_reports if page == STATUS else answer_inbound)(state, p), 200
    except QxsError as err:
        if err.status != 200:
            return err.message, err.status
        if err.code is not None:
            return _errorstatus(err.code), 200
        if page == SMS and p.get("action") == "checkkeyword":
            # This action's answer is <returnsms><message>…</message></returnsms>, errors too.
            return _xml(_el("message", err.message)), 200
        return _failed(err.message), 200


def undecodable(page: str) -> str:
    # Choice: a request that does not decode is answered as if its text were
    # missing: 短信内容不能为空 on sms.aspx, 参数不正确 on the poll pages.
    return _failed(NO_CONTENT) if page == SMS else _errorstatus(4)


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------

# IIS matches paths case-insensitively, so clients may write any case.
_PAGES = {name.lower(): name for name in (SMS, STATUS, CALL)}


async def _raw_params(request: Request) -> tuple[bytes, bytes]:
    query: bytes = request.scope.get("query_string", b"")
    body = b""
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").lower()
        raw = await request.body()
        # Request.Form reads only urlencoded bodies.
        if not ctype or ctype.startswith("application/x-www-form-urlencoded"):
            body = raw
    return query, body


def _operation(page: str, query: bytes, body: bytes) -> str:
    """The operation name a call is recorded under, e.g. ``sms.aspx:send``."""
    action = ""
    for raw in (body, query):  # action is ASCII: readable even if the rest is not
        for key, value in urllib.parse.parse_qsl(raw.decode("latin-1")):
            if key.lower() == "action":
                action = value
    return f"{page}:{action or '?'}"


def create_app(state: QxsState) -> Starlette:
    """The qxs vendor as an ASGI app, with ``/_sim/`` control routes."""

    async def vendor(request: Request) -> Response:
        page = _PAGES.get(request.path_params["name"].lower())
        if page is None:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        query, body = await _raw_params(request)
        state.record_call(_operation(page, query, body))
        faults = state.current_faults()
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)

        try:
            params = parse_params(query, body, state.charset)
        except UnicodeDecodeError as exc:
            state.record_decode_error(page, exc)
            text, status = undecodable(page), 200
        else:
            text, status = answer(state, page, params)

        if faults.hang:
            # The call has taken effect; now make the client time out.
            await asyncio.sleep(faults.hang_seconds)
        if faults.garbled:
            # Also after the call took effect: an unreadable 200 may hide an
            # accepted send (or reports handed out).
            return Response(GARBLED_BODY, status_code=200, media_type="text/html")
        media = "text/xml" if status == 200 else "text/plain"
        if status == 200 and state.charset.lower() != "utf-8":  # keep the declaration honest
            text = text.replace('encoding="utf-8"', f'encoding="{state.charset}"', 1)
        return Response(
            text.encode(state.charset, errors="replace"),
            status_code=status,
            headers={"content-type": f"{media}; charset={state.charset}"},
        )

    app = Starlette(routes=[Route("/{name}", vendor, methods=["GET", "POST"])])
    return add_control_routes(app, state)

"""Simulator of the ``jinxin`` vendor: 今信 verification / notice SMS.

The protocol: ``docs/vendors/jinxin.md``, written from the vendor's own document,
which wins wherever the two disagree.

Laid out like a moto backend, in three sections:

* state    -- ``JinxinState``: accounts, the enterprise id, balance, recorded
              sends, and the business rules (5-minute ``sendtime``, 100
              numbers, signature, length, blacklisted numbers);
* wire     -- decoding the form (percent-encoded bytes in the configured
              charset, UTF-8 or GBK) and the JSON or XML answers;
* routes   -- ``create_app(state)``: ``sms.aspx`` plus the shared ``/_sim/``
              control routes.

The document's status-code list (附:返回状态码列表) is missing, so the codes
below other than ``00000`` are this simulator's own (``CODES``); their
messages are worded the way such vendors word them, which is what a client
has to classify them by. ``00111`` is the per-number code of the vendor's
XML example, used here for a blacklisted number. Choices where the vendor
document is silent are marked "Choice:".

The document contradicts itself on ``userid``: its table says 由32個英文字母和
阿拉伯數字組成 (32 letters and digits), its own example sends ``userid=12``.
The form is therefore not enforced: a userid is only compared with the
account's configured enterprise id (``10003`` when it differs).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsq.simulator.control import SimState, add_control_routes

__all__ = ["CODES", "JinxinError", "JinxinState", "SendRecord", "create_app", "parse_params", "segments_for"]

# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

SEND = "send"  # the operation name recorded for every sms.aspx call
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

OK = "00000"
BUSY = "10001"
BAD_LOGIN = "10002"
BAD_USERID = "10003"
BAD_SENDTIME = "10004"
TOO_MANY = "10005"
MISSING = "10006"
NO_BALANCE = "10007"
TOO_LONG = "10008"
FORBIDDEN = "10009"
BAD_ENCODING = "10010"
NO_SIGNATURE = "10011"
BAD_EXTNO = "10012"
BLACKLISTED = "00111"  # per number: the code of the vendor's XML example
BAD_NUMBER = "10112"  # per number

CODES = {
    OK: "请求成功",
    BUSY: "系统繁忙,请稍后再试",
    BAD_LOGIN: "账号或密码错误",
    BAD_USERID: "企业ID错误",
    BAD_SENDTIME: "时间戳无效或已过期",
    TOO_MANY: "手机号码数量超过100个",
    MISSING: "缺少必选参数",
    NO_BALANCE: "账户余额不足",
    TOO_LONG: "短信内容超过300个字符",
    FORBIDDEN: "短信内容含有敏感词",
    BAD_ENCODING: "字符编码错误",
    NO_SIGNATURE: "短信内容缺少签名(签名须在内容之前)",
    BAD_EXTNO: "扩展号格式错误",
    BLACKLISTED: "号码在黑名单中",
    BAD_NUMBER: "手机号码格式错误",
}

MAX_NUMBERS = 100  # 每批发送的手机号数量不得超过100个
MAX_CHARS = 300  # Choice: the document gives no maximum; the client's cap
SENDTIME_VALIDITY = 300.0  # 时间戳有效时间为5分钟

_MOBILE = re.compile(r"1[3-9]\d{9}")
# Content: 短信簽名+短信內容 (如【今信科技】您的驗證碼是…): the signature comes first.
_SIGNATURE_FIRST = re.compile(r"^【[^【】]{1,20}】")


def segments_for(content: str) -> int:
    """Billed messages for one number: 70 characters, else 67 per part (UCS-2)."""
    return 1 if len(content) <= 70 else math.ceil(len(content) / 67)


def beijing_now() -> datetime:
    return datetime.now(BEIJING)


class JinxinError(Exception):
    """A refusal: ``code`` is one of ``CODES``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"{code} {CODES[code]}")
        self.code = code


@dataclass
class SendRecord:
    """One accepted send request (answered ``00000``)."""

    username: str
    userid: str
    numbers: list[str]  # accepted numbers, in order
    content: str
    send_time: str | None  # the sendtime stamp as received
    sms_id: str  # the 32-character smsId
    at: float
    failed: dict[str, str] = field(default_factory=dict)  # number -> per-number code (the failList)
    extno: str | None = None
    segments: int = 1  # billed per accepted number


class JinxinState(SimState):
    """In-memory jinxin vendor. Every method takes ``self.lock``.

    Configuration (kept by ``reset()``): ``accounts``, ``userid``, ``format``,
    ``charset``, ``forbidden_words``, ``fail_numbers``, ``sendtime_validity``
    and ``clock`` (both settable, so tests need not wait five minutes).
    Runtime data (cleared by ``reset()``): ``sends``, ``calls``, ``faults``,
    ``refusals``; the balance goes back to its initial value.
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        balance: int = 10_000,
        charset: str = "utf-8",
        format: str = "json",
        userid: str = "12",
        forbidden_words: list[str] | None = None,
        fail_numbers: set[str] | None = None,
        sendtime_validity: float = SENDTIME_VALIDITY,
        clock: Callable[[], datetime] = beijing_now,
    ) -> None:
        super().__init__()
        if format not in ("json", "xml"):
            raise ValueError(f"format must be 'json' or 'xml', not {format!r}")
        if charset.lower().replace("_", "-") not in ("utf-8", "utf8", "gbk"):
            raise ValueError(f"charset must be 'utf-8' or 'gbk', not {charset!r}")  # 编码格式: UTF-8 gbk
        self.accounts = dict(accounts if accounts is not None else {"test": "secret"})
        self.userid = userid
        self.format = format
        self.charset = charset
        self._initial_balance = balance
        self.balance = balance
        self.forbidden_words = list(forbidden_words if forbidden_words is not None else ["法轮功"])
        # Numbers the vendor refuses one by one (failList), as if blacklisted.
        self.fail_numbers = set(fail_numbers or ())
        self.sendtime_validity = sendtime_validity
        self.clock = clock
        self.refusals: list[tuple[str, float]] = []  # (code, at) of every refused call

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.balance = self._initial_balance
            self.refusals.clear()

    def _balance(self) -> int:
        # Choice: a balance fault is a fixed override; sends still draw the
        # real balance down underneath it.
        return self.faults.balance if self.faults.balance is not None else self.balance

    def remaining(self) -> int:
        with self.lock:
            return max(self._balance(), 0)

    def refuse(self, code: str) -> JinxinError:
        with self.lock:
            self.refusals.append((code, time.time()))
        return JinxinError(code)

    def _check_sendtime(self, stamp: str) -> None:
        # 时间戳: 当前系统时间(24小时制),格式"yyyyMMddHHmmss"。时间戳有效时间为5分钟。
        # Choice: a stamp more than 5 minutes ahead is refused too (a clock
        # skewed either way), with the same code.
        if not re.fullmatch(r"\d{14}", stamp):
            raise self.refuse(BAD_SENDTIME)
        try:
            sent = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
        except ValueError:
            raise self.refuse(BAD_SENDTIME) from None
        age = (self.clock() - sent).total_seconds()
        if abs(age) > self.sendtime_validity:
            raise self.refuse(BAD_SENDTIME)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = super().snapshot()
            snap["balance"] = self.balance
            snap["refusals"] = [{"code": c, "at": at} for c, at in self.refusals]
            return snap

    # -- the vendor operation -------------------------------------------

    def send(self, params: dict[str, str]) -> SendRecord:
        """Check and accept one send; raise JinxinError with the refusal code."""
        with self.lock:
            if self.faults.busy:
                raise self.refuse(BUSY)
            required = ("action", "userid", "account", "password", "mobile", "content", "sendtime")
            if params.get("action") != "send" or any(not params.get(k) for k in required):
                raise self.refuse(MISSING)
            user, password = params["account"], params["password"]
            if self.faults.auth_fail or self.accounts.get(user) != password:
                raise self.refuse(BAD_LOGIN)
            if params["userid"] != self.userid:
                raise self.refuse(BAD_USERID)
            self._check_sendtime(params["sendtime"])
            # Choice: empty entries ("a,,b", a trailing comma) are dropped, not counted.
            numbers = [n.strip() for n in params["mobile"].split(",") if n.strip()]
            if not numbers:
                raise self.refuse(MISSING)
            if len(numbers) > MAX_NUMBERS:
                raise self.refuse(TOO_MANY)
            content = params["content"]
            if len(content) > MAX_CHARS:
                raise self.refuse(TOO_LONG)
            if not _SIGNATURE_FIRST.match(content):
                raise self.refuse(NO_SIGNATURE)  # 短信签名+短信内容: a signature at the end is none
            if any(word in content for word in self.forbidden_words):
                raise self.refuse(FORBIDDEN)
            extno = params.get("extno") or None
            if extno is not None and not extno.isdigit():
                raise self.refuse(BAD_EXTNO)
            failed: dict[str, str] = {}
            accepted: list[str] = []
            for number in numbers:
                if not _MOBILE.fullmatch(number):
                    failed[number] = BAD_NUMBER
                elif number in self.fail_numbers or self.faults.refused(number):
                    failed[number] = BLACKLISTED
                else:
                    accepted.append(number)
            segments = segments_for(content)
            cost = segments * len(accepted)
            if cost > self._balance():
                raise self.refuse(NO_BALANCE)
            self.balance -= cost
            record = SendRecord(
                user,
                params["userid"],
                accepted,
                content,
                params["sendtime"],
                uuid.uuid4().hex,
                time.time(),
                failed,
                extno,
                segments,
            )
            self.sends.append(record)
            return record


# ---------------------------------------------------------------------------
# wire protocol
# ---------------------------------------------------------------------------

# An HTML error page with status 200, as a proxy or a crashed ASP.NET page
# might serve: no client can read a code out of it.
GARBLED_BODY = (
    b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/' Application.</h1></body></html>"
)


def parse_params(query: bytes, body: bytes, charset: str) -> dict[str, str]:
    """Decode the query string and form body in ``charset``; raise UnicodeDecodeError.

    Keys are lower-cased: ASP.NET looks form fields up ignoring case, and the
    document itself writes ``Userid``/``userid`` and ``sendtime``/``sendTime``.
    The form body wins over the query string (both carry ``action``).
    """
    params: dict[str, str] = {}
    for raw in (query, body):
        text = raw.decode(charset, errors="strict")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
        params.update((k.lower(), v) for k, v in pairs)
    return params


def answer_json(code: str, record: SendRecord | None, named: bool = True) -> dict[str, Any]:
    if record is None:
        return {"respCode": code, "respDesc": CODES[code]}
    # failCount is typed String in the document. Choice: failList entries
    # carry phone and code like the XML example's <taskID>, plus the text.
    # failList is 可选 (optional): ``named`` False (the refuse_unnamed switch) leaves it
    # out, failCount alone counting the refused numbers.
    answer: dict[str, Any] = {"respCode": OK, "respDesc": CODES[OK], "failCount": str(len(record.failed))}
    if named:
        answer["failList"] = [{"phone": p, "respCode": c, "respDesc": CODES[c]} for p, c in record.failed.items()]
    return {**answer, "smsId": record.sms_id}


def answer_xml(code: str, record: SendRecord | None, remaining: int, charset: str, named: bool = True) -> str:
    # The vendor's example nests the status in <returnsms> (not <returnstatus>);
    # Choice: the smsId of the JSON form rides along as <smsId>, and each
    # number gets a <taskID> with its code, as in the example. ``named`` False
    # (the refuse_unnamed switch): the refused numbers get none, successCounts
    # alone showing that some were.
    lines = [
        f'<?xml version="1.0" encoding="{charset}"?>',
        "<returnsms>",
        f"  <returnsms>{code}</returnsms>",
        f"  <message>{escape(CODES[code])}</message>",
        f"  <remainpoint>{remaining}</remainpoint>",
        f"  <successCounts>{len(record.numbers) if record else 0}</successCounts>",
    ]
    if record is not None:
        lines.append(f"  <smsId>{record.sms_id}</smsId>")
        results = [(n, OK) for n in record.numbers] + (list(record.failed.items()) if named else [])
        for phone, phone_code in results:
            lines.append(
                f"  <taskID>\n    <phone>{escape(phone)}</phone>\n    <returnsms>{phone_code}</returnsms>\n  </taskID>"
            )
    lines.append("</returnsms>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------


def create_app(state: JinxinState) -> Starlette:
    """The jinxin vendor as an ASGI app, with ``/_sim/`` control routes."""

    async def vendor(request: Request) -> Response:
        # IIS matches paths ignoring case.
        if request.path_params["name"].lower() != "sms.aspx":
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        if request.method != "POST":  # 请求方式: POST
            return Response(b"Method Not Allowed", status_code=405, media_type="text/plain")
        state.record_call(SEND)
        faults = state.current_faults()
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)

        query: bytes = request.scope.get("query_string", b"")
        body = await request.body()
        if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            body = b""  # 请求包头: Content-type:application/x-www-form-urlencoded
        record: SendRecord | None = None
        try:
            params = parse_params(query, body, state.charset)
            record = state.send(params)
            code = OK
        except UnicodeDecodeError:
            code = state.refuse(BAD_ENCODING).code
        except JinxinError as err:
            code = err.code

        if faults.hang:
            # The call has taken effect; now make the client time out.
            await asyncio.sleep(faults.hang_seconds)
        if faults.garbled:
            # Also after the call took effect: an unreadable 200 may hide an
            # accepted send, so clients must treat it as ambiguous.
            return Response(GARBLED_BODY, status_code=200, media_type="text/html")
        if state.format == "json":
            text = json.dumps(answer_json(code, record, not faults.refuse_unnamed), ensure_ascii=False)
            ctype = "application/json"
        else:
            text = answer_xml(code, record, state.remaining(), state.charset, not faults.refuse_unnamed)
            ctype = "text/xml"
        return Response(
            text.encode(state.charset, errors="replace"),
            status_code=200,
            headers={"content-type": f"{ctype}; charset={state.charset}"},
        )

    app = Starlette(routes=[Route("/{name}", vendor, methods=["GET", "POST"])])
    return add_control_routes(app, state)

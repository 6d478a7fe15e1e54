"""`jinxin` — 今信 verification / notice SMS (docs/vendors/jinxin.md).

One call, ``POST sms.aspx?action=send`` with a form body; the answer is JSON
or XML depending on a setting of the vendor account. Send only: the document
has no status-report, inbound or balance call.

Account options:

* ``userid`` (required) — the enterprise id (企业ID / ACCOUNT SID). The
  document contradicts itself: its table says 32 letters and digits
  (由32個英文字母和阿拉伯數字組成), its own example sends ``userid=12``.
  So the 32 is not enforced: any 1–32 ASCII letters/digits are accepted
  (a TOML integer too).
* ``format`` (required) — ``"json"`` or ``"xml"``: how the vendor account
  answers. Required rather than defaulted because a wrong guess would make
  every send unreadable, i.e. ambiguous.
* ``extno`` (optional) — the extension port the platform assigned, digits.

Decisions where the vendor's document is silent or ambiguous:

* ``sendtime`` is a freshness stamp (当前系统时间, valid 5 minutes), not a
  schedule. It is taken from the clock (Beijing time, the vendor's clock) in
  ``build_send``, i.e. at the moment of each call, so a retried or long-queued
  chunk carries a fresh one. The document has no signature or hash over it:
  the password travels as is, in the POST body only. ``send_at`` is ignored:
  the vendor cannot schedule, and smsq holds scheduled chunks itself
  (``supports_send_time = False``).
* Field names: the parameter table writes ``Userid``/``Content``/``sendtime``,
  the example ``userid``/``content``/``sendTime``. sms.aspx is an ASP.NET
  page, whose form lookup ignores case, so we send all names in lower case.
  ``action=send`` goes both in the URL (as the request address shows) and in
  the body (as the example shows).
* Charset: UTF-8 by default (the document names it first); GBK (or its
  subset GB2312, sent as GBK) when the account says so. Anything else is refused when the
  provider is built. Answers are decoded with the charset the response's
  Content-Type names, else the account's (gb18030 for the GBK family, a
  superset, so one odd character cannot break a read).
* Signature: the document wants it FIRST (Content: 「短信簽名+短信內容。如
  【今信科技】您的驗證碼是345678,30分鐘輸入有效。」): ``signature_position =
  "start"``. Content with none gets the account's signature in front; a
  signature written at the end is moved to the front when it is the
  account's own (or the account configures none), and refused with a
  ContentError naming both when it differs (``Provider.place_signature``).
* Length: the document gives no maximum. We cap content at 300 characters
  (signature included), the shortest cap among this project's vendors.
* Status codes: only ``00000`` (accepted — not yet delivered) is in the
  document; the code list it refers to (附:返回状态码列表) is missing. Any
  other code is a refusal classified by the words of the vendor's message
  (busy → transient, too frequent → rate_limited, balance, auth, blacklist or
  forbidden words → blocked), else ``invalid_request``, as the spec says; the
  code and the message are kept for the operator. This deliberately departs
  from "unknown code → ambiguous": the document states that ``00000`` alone
  means the request was taken, so every other code is a refusal.
  A stale ``sendtime`` can then only mean a wrong clock (ours, or the
  vendor's); every call is refused alike until it is set right, so it is
  ``auth`` like the other answers about the account (the circuit opens, a
  route moves on), and its message says to check the clock.
* JSON: ``respCode`` may come as a JSON number, which loses leading zeros; a
  number is zero-padded back to five digits. The vendor's message is read
  from ``respDesc`` (or ``message``/``msg``/``desc``) when present.
  ``failList`` is typed "String" and holds "numbers and reasons" with no
  format given; we accept a list of objects (``phone``/``mobile``… with
  ``respCode``/``respDesc``/``reason``…), a list of strings, an object
  ``{mobile: reason}``, JSON text of those, or plain text like
  ``13800138000:黑名单,13900139000:格式错误``. A named number ends ``failed``
  with its reason, and with its own code when the entry carries one
  (``respCode``: ``failed_codes``). When ``failCount`` is more than the numbers
  named, the rest is kept in ``rejected`` and nothing more can be said: jinxin
  has no delivery reports to tell which of the other numbers they were, so
  those stay ``sent`` and their chunk shows the count (store/ledger); when the
  count covers every number not named, all of them failed. Numbers the vendor
  names are matched back to the numbers we sent by their last 11 digits (a
  vendor may write ``86…``).
* XML: the status is read from ``<returnstatus>`` (real answers of this
  family) or a nested ``<returnsms>`` (the vendor's example) — direct children
  of the root only, since ``<taskID>`` holds ``<returnsms>`` too. ``00000``
  or ``Success`` is accepted. Each ``<taskID>`` holding ``<phone>`` and
  ``<returnsms>`` pairs is a per-number result (the example's ``00111``); a
  code other than ``00000`` there is a failed number, that code its own.
  ``<successCounts>`` lower than the numbers sent counts refused numbers too
  (never more than the numbers sent: it may count billed messages, as the
  family's qxs reading says). ``<smsId>`` (or a
  ``<taskID>`` holding only text) is the batch reference. Parsed with
  defusedxml, DTDs, entities and external references refused: an answer that
  carries a DTD is unreadable (a send becomes ambiguous), never expanded.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from defusedxml import ElementTree as SafeET

from .base import BEIJING, RAW_KEEP, Outcome, Provider, SendContext, SendResult, form_body

OK_CODE = "00000"
OK_MESSAGE = (
    "成功: 此步响应只表明客户的短信请求发送成功,不表明短信通道已经发送短信成功 "
    "(request accepted; this does not mean the messages were delivered)"
)

# The only code the document gives. Every other code is classified by its
# message (see REFUSALS), the vendor's words kept.
SEND_CODES: dict[str, tuple[Outcome, str]] = {OK_CODE: (Outcome.OK, OK_MESSAGE)}

# Why each class. An answer about the account (its credentials, its state, its
# balance, the caller's IP) is the same for every call until an operator acts, so it
# is auth or balance: the account's circuit opens, a routed batch moves on to the
# route's next account (tasks/decisions.py TRIPS). An answer about the request (its
# content, its numbers) is blocked or, when no word tells, invalid_request.
#
# Words of a refusal message -> class, checked in this order ("账号余额不足"
# names the account but is about balance). Simplified and traditional forms,
# since the vendor's document is written in traditional characters.
REFUSALS: list[tuple[Outcome, re.Pattern[str], str]] = [
    # The vendor's side: nothing was taken, retried.
    (Outcome.TRANSIENT, re.compile(r"繁忙|系统忙|稍后|稍候|稍後|busy", re.I), "vendor busy"),
    # Called too often: come back later, the account and the request are fine.
    (Outcome.RATE_LIMITED, re.compile(r"频繁|頻繁|过快|過快|频率|頻率"), "called too often"),
    # The account's credit: every later call fails too until it is topped up.
    (Outcome.BALANCE, re.compile(r"余额|餘額|欠费|欠費|点数不足|點數不足|条数不足|條數不足"), "balance too low"),
    # The account: its credentials, its id, its state (locked, disabled), the caller's IP.
    (
        Outcome.AUTH,
        re.compile(
            r"密码|密碼|[账帐賬帳][号號户戶]|用户|用戶|企业ID|企業ID|ACCOUNT ?SID|鉴权|鑒權|认证|認證"
            r"|登录|登錄|登陆|登陸|锁定|鎖定|禁用|停用|(?<![A-Za-z])IP(?![A-Za-z])",
            re.I,
        ),
        "credentials refused",
    ),
    # The request's numbers or content (an account blacklist names the account above).
    (
        Outcome.BLOCKED,
        re.compile(r"黑名单|黑名單|敏感|关键词|關鍵詞|关键字|關鍵字|违禁|違禁|屏蔽|非法词|非法詞"),
        "number or content refused",
    ),
]
# A refused sendtime (时间戳有效时间为5分钟). smsq stamps every call at the moment it is
# made, so only a clock far from Beijing time (this host's, or the vendor's) can be
# refused, and then every call is: auth, the account rests and a route moves on
# instead of failing batch after batch until someone sets the clock right.
STALE_STAMP = re.compile(r"时间戳|時間戳|sendtime|timestamp|过期|過期", re.I)
RATE_LIMIT_RETRY = 60.0  # seconds: the document names no interval

_DIGITS = re.compile(r"\D")
_USERID = re.compile(r"[A-Za-z0-9]{1,32}")
# codec name -> what we send. GB2312 text encodes byte for byte the same in
# GBK, and GBK is the name the vendor knows.
_CHARSETS = {"utf-8": "utf-8", "gbk": "gbk", "gb2312": "gbk"}


class JinxinProvider(Provider):
    name = "jinxin"
    max_numbers = 100  # 每批发送的手机号数量不得超过100个
    max_chars = 300  # not in the document: see the module docstring
    number_separator = ","  # 用英文逗号分开
    default_charset = "utf-8"
    accepts_landline = False  # 手机号码 only
    requires_signature = True
    signature_position = "start"  # Content: 短信簽名+短信內容。如【今信科技】您的驗證碼是345678
    supports_send_time = False  # sendtime is a freshness stamp, not a schedule
    poll_kinds = frozenset()  # send only
    option_keys = frozenset({"userid", "format", "extno"})

    def __init__(self, account, client):
        super().__init__(account, client)
        codec = _codec_name(self.charset)
        if codec not in _CHARSETS:
            raise ValueError(f"account {account.name!r}: jinxin accepts charset utf-8 or gbk, not {self.charset!r}")
        self.wire_charset = _CHARSETS[codec]

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        userid = options.get("userid")
        if userid is None or isinstance(userid, bool) or not _USERID.fullmatch(str(userid)):
            raise ValueError("option 'userid' (the enterprise id, 1-32 letters/digits) is required")
        if options.get("format") not in ("json", "xml"):
            raise ValueError('option \'format\' must be "json" or "xml" (the vendor account\'s answer format)')
        extno = options.get("extno")
        if extno is not None and (isinstance(extno, bool) or not str(extno).isdigit()):
            raise ValueError("option 'extno' must be digits (the extension port the platform assigned)")

    @property
    def answer_format(self) -> str:
        return self.account.options.get("format", "json")

    def now(self) -> datetime:
        """The vendor's clock (Beijing time); tests replace it."""
        return datetime.now(BEIJING)

    # -- send --------------------------------------------------------------
    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        options = self.account.options
        fields = {
            "action": "send",
            "userid": str(options.get("userid", "")),
            "account": self.account.username,
            "password": self.account.password.reveal(),
            "mobile": self.number_separator.join(numbers),
            "content": content,
            # Taken here, per call, never at enqueue time: 时间戳有效时间为5分钟.
            "sendtime": self.now().astimezone(BEIJING).strftime("%Y%m%d%H%M%S"),
        }
        if options.get("extno") is not None:
            fields["extno"] = str(options["extno"])
        body = form_body(fields, self.wire_charset)
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={self.wire_charset}"}
        url = self.account.base_url.rstrip("/") + "/sms.aspx?action=send"
        return self.client.post(url, content=body, headers=headers)

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        text = response.content.decode(_read_charset(response, self.charset), errors="replace")
        return parse_send_body(text, self.answer_format, numbers)


def _codec_name(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return charset


def _read_charset(response: httpx.Response, account_charset: str) -> str:
    charset = response.charset_encoding or account_charset
    # gb18030 is a superset of gbk/gb2312: decode with it.
    return "gb18030" if _codec_name(charset) in ("gbk", "gb2312") else charset


# The parsers are plain functions of the body text so they can be tested over
# every shape without a network.


def parse_send_body(text: str, fmt: str, numbers: list[str]) -> SendResult:
    """Read a send answer in the account's format; ValueError if it cannot be read."""
    stripped = text.strip()
    looks = "xml" if stripped.startswith("<") else "json" if stripped.startswith(("{", "[")) else None
    if looks is not None and looks != fmt:
        raise ValueError(
            f"the answer is {looks.upper()} but the account's format is {fmt!r}; "
            f'set format = "{looks}" to match the vendor account'
        )
    if fmt == "json":
        return parse_send_json(stripped, numbers)
    if fmt == "xml":
        return parse_send_xml(stripped, numbers)
    raise ValueError(f"unknown answer format {fmt!r}")


def parse_send_json(text: str, numbers: list[str]) -> SendResult:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or "respCode" not in data:
        raise ValueError(f"no respCode in answer {text[:80]!r}")
    code = _code(data["respCode"])
    message = _first(data, "respDesc", "message", "msg", "desc")
    if code != OK_CODE:
        return refusal(code, message, text)
    failed = _match_numbers(fail_list(data.get("failList")), numbers)
    codes = _match_numbers(fail_codes(data.get("failList")), numbers)
    fail_count = _count(data.get("failCount"), "failCount")
    sms_id = _first(data, "smsId", "smsid", "SmsId") or None
    return _accepted(numbers, (failed, codes), fail_count, None, sms_id, message, text)


def parse_send_xml(text: str, numbers: list[str]) -> SendResult:
    # A declaration naming gbk cannot be parsed from text by expat; the text is
    # already decoded, so the declaration has nothing left to say.
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except Exception as exc:  # ParseError, or defusedxml refusing a DTD/entity
        raise ValueError(f"not XML: {type(exc).__name__}: {exc}") from None
    status = _child_text(root, "returnstatus")
    if status is None:
        status = _child_text(root, "returnsms")  # the vendor's example nests it so
    if status is None:
        raise ValueError(f"no returnstatus in answer {text[:80]!r}")
    code = OK_CODE if status.lower() == "success" else _code(status)
    message = _child_text(root, "message") or ""
    if code != OK_CODE:
        return refusal(code, message, text)
    failed: dict[str, str] = {}
    batch_ref = _child_text(root, "smsId") or _child_text(root, "smsid")
    for task in root.findall("taskID"):
        phones = [(p.text or "").strip() for p in task.findall("phone")]
        codes = [(c.text or "").strip() for c in task.findall("returnsms")]
        if not phones:  # the classic family's <taskID>id</taskID>
            batch_ref = batch_ref or (task.text or "").strip() or None
            continue
        if len(codes) != len(phones):
            raise ValueError("a <taskID> pairs phones and codes unevenly")
        failed.update({p: f"{c}" for p, c in zip(phones, codes, strict=True) if p and _code(c) != OK_CODE})
    failed.update(fail_list(_child_text(root, "failList")))
    failed = _match_numbers(failed, numbers)
    number_codes = {p: failed[p] for p in failed if _is_code(failed[p])}  # a <taskID>'s code is its reason
    number_codes.update(_match_numbers(fail_codes(_child_text(root, "failList")), numbers))
    fail_count = _count(_child_text(root, "failCount"), "failCount")
    successes = _count(_child_text(root, "successCounts"), "successCounts")
    return _accepted(numbers, (failed, number_codes), fail_count, successes, batch_ref, message, text)


def refusal(code: str, message: str, raw: str) -> SendResult:
    """A code other than 00000: the request was refused; classify it by its words."""
    outcome, reason = Outcome.INVALID_REQUEST, "request refused"
    for candidate, pattern, why in REFUSALS:
        if pattern.search(message or ""):
            outcome, reason = candidate, why
            break
    if outcome is Outcome.INVALID_REQUEST and STALE_STAMP.search(message or ""):
        outcome, reason = Outcome.AUTH, "sendtime refused: check this host's clock against Beijing time"
    text = f"{message} ({reason})" if message else f"vendor code {code} ({reason})"
    return SendResult(
        outcome,
        code=code,
        message=text,
        raw=raw[:RAW_KEEP],
        retry_after=RATE_LIMIT_RETRY if outcome is Outcome.RATE_LIMITED else None,
    )


def _accepted(
    numbers: list[str],
    named: tuple[dict[str, str], dict[str, str]],
    fail_count: int | None,
    successes: int | None,
    batch_ref: str | None,
    message: str,
    raw: str,
) -> SendResult:
    """An accepted answer. ``named``: (failed number -> reason, failed number -> its code).
    Refused: failCount, or the numbers named, or the numbers sent less successCounts
    (when it is no more than them: it may count billed messages), whichever is most."""
    failed, codes = named
    counted = len(numbers) - successes if successes is not None and successes <= len(numbers) else 0
    rejected = max(fail_count or 0, len(failed), counted)
    accepted = successes if successes is not None else max(len(numbers) - rejected, 0)
    note = f"{OK_MESSAGE}; vendor says: {message}" if message else OK_MESSAGE
    if rejected:
        unnamed = f", {rejected - len(failed)} of them not named" if rejected > len(failed) else ""
        note += f"; {rejected} number(s) refused (failCount/failList{unnamed})"
    return SendResult(
        Outcome.OK,
        code=OK_CODE,
        message=note,
        batch_ref=batch_ref,
        accepted=accepted,
        rejected=rejected,
        failed_numbers=failed,
        failed_codes={number: code for number, code in codes.items() if number in failed},
        raw=raw[:RAW_KEEP],
    )


def fail_list(value: Any) -> dict[str, str]:
    """failList in any of the shapes we accept -> {number as the vendor wrote it: reason}."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith(("[", "{")):
            try:
                return fail_list(json.loads(text))
            except json.JSONDecodeError:
                pass
        return _fail_text(text)
    if isinstance(value, dict):
        if _first(value, *_PHONE_KEYS):  # a single entry object
            return fail_list([value])
        return {str(k).strip(): str(v).strip() or "failed" for k, v in value.items()}
    if isinstance(value, list):
        failed: dict[str, str] = {}
        for entry in value:
            if isinstance(entry, dict):
                phone = _first(entry, *_PHONE_KEYS)
                if not phone:
                    raise ValueError(f"failList entry without a number: {entry!r}"[:120])
                reason = " ".join(x for x in (_first(entry, *_CODE_KEYS), _first(entry, *_REASON_KEYS)) if x)
                failed[phone] = reason or "failed"
            elif isinstance(entry, (str, int)):
                failed.update(_fail_text(str(entry)))
            else:
                raise ValueError(f"failList entry of type {type(entry).__name__}")
        return failed
    raise ValueError(f"failList of type {type(value).__name__}")


def fail_codes(value: Any) -> dict[str, str]:
    """The vendor's own code of each failed number, where failList gives one (an entry
    object with ``respCode``/``code``…): {number as the vendor wrote it: code}."""
    if isinstance(value, str) and value.strip().startswith(("[", "{")):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if isinstance(value, dict) and _first(value, *_PHONE_KEYS):
        value = [value]
    if not isinstance(value, list):
        return {}
    entries = [entry for entry in value if isinstance(entry, dict)]
    return {_first(entry, *_PHONE_KEYS): _first(entry, *_CODE_KEYS) for entry in entries if _first(entry, *_CODE_KEYS)}


def _is_code(text: str) -> bool:
    return text.isascii() and text.isdigit()


_PHONE_KEYS = ("phone", "mobile", "number", "tel", "msisdn")
_CODE_KEYS = ("respCode", "code", "status", "returnsms")
_REASON_KEYS = ("respDesc", "reason", "failReason", "desc", "message", "msg")
_ENTRY = re.compile(r"\s*(\+?\d{5,20})\s*(?:[:：=#\-]\s*)?(.*)$", re.S)


def _fail_text(text: str) -> dict[str, str]:
    # "13800138000:黑名单,13900139000:格式错误": entries start with a number; a
    # piece that does not was a separator inside the previous reason.
    failed: dict[str, str] = {}
    last: str | None = None
    pieces = re.split(r"([,;|\n，；])", text)
    for piece, sep in zip(pieces[::2], [""] + pieces[1::2], strict=True):
        match = _ENTRY.match(piece)
        if match:
            last = match.group(1)
            failed[last] = match.group(2).strip() or "failed"
        elif last is not None:
            failed[last] += sep + piece
        elif piece.strip():
            raise ValueError(f"failList text does not start with a number: {text[:80]!r}")
    return failed


def _match_numbers(failed: dict[str, str], numbers: list[str]) -> dict[str, str]:
    """Key failures by the number as we sent it, matched on the last 11 digits."""
    ours = {_DIGITS.sub("", n)[-11:]: n for n in numbers}
    return {ours.get(_DIGITS.sub("", phone)[-11:], phone): reason for phone, reason in failed.items()}


def _code(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"bad status code {value!r}")
    if isinstance(value, int):  # a JSON number lost its leading zeros
        return f"{value:05d}"
    code = str(value).strip()
    if not code:
        raise ValueError("empty status code")
    return code


def _count(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"bad {name} {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"bad {name} {text[:20]!r}")
    return int(text)


def _first(data: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def _child_text(root: Any, tag: str) -> str | None:
    child = root.find(tag)  # direct children only
    if child is None:
        return None
    return (child.text or "").strip()

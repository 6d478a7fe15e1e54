"""`linkws` — Lingkai LinkWS (docs/vendors/linkws.md).

The same four operations over two transports; the account picks one with the
option ``transport``:

* ``"soap"`` (default): SOAP 1.1 to ``LinkWS.asmx`` through zeep, with the WSDL
  shipped in ``providers/wsdl/linkws.wsdl`` (ASP.NET conventions; the vendor
  publishes none). UTF-8, so any character can be sent.
* ``"http"``: plain HTTP POST to ``ws/BatchSend2.aspx``, ``ws/Get.aspx``,
  ``ws/SelSum.aspx`` and ``ws/NotSend.aspx``. The platform encoding is GB2312
  (平台编码:GB2312): the form carries percent-encoded GB2312 bytes, and content
  GB2312 cannot carry is refused before any call.

Both transports end in the same thing, the operation's bare return value as
text, so one set of parsers (plain functions of that text) serves both.

Decisions where the vendor's document is silent or ambiguous:

* ``base_url`` is the root of the vendor's site, e.g. ``https://HOST:PORT/``;
  the SOAP address is ``base_url + ws/LinkWS.asmx`` and the HTTP endpoints are
  ``base_url + ws/<Name>.aspx``. The vendor hands out the full ``.asmx``
  address, so a base_url ending in ``ws/`` or ``ws/LinkWS.asmx`` is accepted
  too and cut back to the root.
* The wire charset follows the transport (GB2312 for http, UTF-8 for soap);
  an account ``charset`` setting cannot change what the vendor decodes, so it
  is not consulted. HTTP answers are decoded as gb18030, a superset of GB2312,
  so one odd character cannot make an already handed-out body unreadable.
* We POST (the vendor takes GET or POST) so the password never sits in a URL.
  ``Cell`` (option ``cell``, digits or empty) and ``SendTime`` (empty = now)
  are always sent, as the parameter table lists them.
* Signature: the document wants it at the END (-7 提交信息末尾未加簽名,請添加
  中文的企業簽名【 】): ``signature_position = "end"``. Content with none gets
  the account's signature appended; a signature written at the start is moved
  to the end when it is the account's own (or the account configures none),
  and refused with a ContentError naming both when it differs from the
  account's (``Provider.place_signature``).
* Numbers are de-duplicated inside a call (提交短信前請過濾掉重復號碼).
* ``SendTime``: a ``send_at`` is formatted in Beijing time, ``yyyyMMddHHmmss``.
  A time that has passed, or is less than a minute away, is sent as empty
  (send now): the vendor would refuse it for good with -10 (定時時間不能小于
  系統當前時間) when its clock runs a little ahead. smsq's workers give no
  ``send_at``: they call at a scheduled chunk's time, so ``SendTime`` goes empty
  (``supports_send_time`` in providers/base.py says why).
* The table prints some codes with an en dash (``–1``); answers are read with
  any dash normalised to ``-``.
* ``-101`` (調用接口速度太快) is listed for the polls only; the codes are one
  vendor-wide space, so a ``-101`` on a send is read as "too fast, not
  accepted": rate_limited, come back in 30 s.
* ``-2`` (其他錯誤) is transient: retried a bounded number of times by the caller.
* ``-11`` (屏蔽手機號碼, blocked number) refuses the whole call: a BatchSend2 of
  500 numbers holding one blocked number answers -11 and sends none of them.
  It is marked ``refused_whole`` (providers/base.py) because it qualifies on
  every count: the answer is the whole call's (one return value, no batch id,
  nothing charged), it is caused by a number in it (the code names a number
  class, not the content or the account), and it names none — the number
  shows up only in NotSend (最近1小時內屏蔽的手機號碼) a poll later. So smsq may
  send the others again: it fails the numbers NotSend already put on the
  account's blocked list, and finds the others by sending halves
  (tasks/narrowing.py). No other BatchSend2 code qualifies: -9 (numbers empty)
  is about the call, not one number in it.
* Get records ``MOBILE#CONTENT#TIME#EXT`` are split from the left for MOBILE and
  from the right for TIME and EXT, so a ``#`` inside CONTENT survives. A ``||``
  inside content looks like a record separator; a piece that does not start
  with ``digits#`` and hold three ``#`` is glued back onto the previous record.
* The TIME of an inbound message has no documented format: the usual ASP.NET
  renderings are tried and read as Beijing time (naive datetime); an unknown
  format gives ``received_at=None`` rather than dropping a message the vendor
  will never hand out again. The vendor gives no message id: ``vendor_id=None``.
* SOAP content must be XML 1.0: control characters other than tab and line
  breaks cannot be sent that way and are refused in ``prepare_content``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
from lxml import etree

from . import soap
from .base import (
    BEIJING,
    Account,
    ContentError,
    Inbound,
    Outcome,
    Provider,
    ProviderError,
    SendContext,
    SendResult,
    classify,
    form_body,
)

TNS = "http://tempuri.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
BINDING = "{http://tempuri.org/}LinkWSSoap"
RETRY_AFTER = 30.0  # 調用接口速度太快(大于30s)
SCHEDULE_MARGIN = timedelta(minutes=1)  # closer than this, a schedule is sent as "now"

# Why each code has its class. An answer about the account (its registration, its
# password, its blacklisting, the caller's IP, its balance) is the same for every call
# until an operator acts, so it is auth or balance: the account's circuit opens, a routed
# batch moves on to the route's next account (tasks/decisions.py TRIPS). An answer about
# the request (its schedule, signature, content, numbers) is invalid_request or blocked:
# this chunk fails and the account goes on sending.

# BatchSend2 answers other than a positive batch id; the vendor's wording kept.
SEND_CODES: dict[str, tuple[Outcome, str]] = {
    # The account does not exist at the vendor.
    "-1": (Outcome.AUTH, "賬號未注冊 (account not registered)"),
    # No cause given: retried a bounded number of times, like a busy vendor.
    "-2": (Outcome.TRANSIENT, "其他錯誤 (other error)"),
    # The credentials: calling again with them is how accounts get locked.
    "-3": (Outcome.AUTH, "帳號或密碼錯誤 (wrong account or password)"),
    # The account's credit: every later call fails too until it is topped up.
    "-5": (Outcome.BALANCE, "余額不足,請充值 (balance insufficient)"),
    # -6, -10: the request's SendTime (smsq's workers send it empty: "now").
    "-6": (Outcome.INVALID_REQUEST, "定時發送時間不是有效的時間格式 (SendTime is not a valid time)"),
    # The request's content: the provider puts the signature at the end; content the caller
    # signed otherwise is refused before the call.
    "-7": (Outcome.INVALID_REQUEST, "提交信息末尾未加簽名,請添加中文的企業簽名【 】 (signature missing at the end)"),
    # -8, -9: the request's content and numbers.
    "-8": (Outcome.INVALID_REQUEST, "發送內容需在1到300字之間 (content must be 1-300 characters)"),
    "-9": (Outcome.INVALID_REQUEST, "發送號碼為空 (numbers empty)"),
    "-10": (Outcome.INVALID_REQUEST, "定時時間不能小于系統當前時間 (SendTime earlier than now)"),
    # The request's numbers: a blocked handset, not the account.
    "-11": (Outcome.BLOCKED, "屏蔽手機號碼 (blocked number)"),
    # -100, -103: the caller's IP, the same for every call from this host.
    "-100": (Outcome.AUTH, "IP黑名單 (IP blacklisted)"),
    # The vendor's 30 s rule: not an error of the account nor the request, come back later.
    "-101": (Outcome.RATE_LIMITED, "調用接口速度太快(大于30s) (called faster than once per 30 s)"),
    # The account is blacklisted: nothing goes out until the vendor lifts it.
    "-102": (Outcome.AUTH, "賬號黑名單 (account blacklisted)"),
    "-103": (Outcome.AUTH, "IP未導白 (IP not whitelisted)"),
}

# BatchSend2 codes that refuse the whole call over a number in it, naming none (see the
# module docstring): the rest of the call may be sent again.
REFUSED_FOR_A_NUMBER = frozenset({"-11"})

# Errors of Get, SelSum and NotSend (the same list for the three), classed as on a send.
POLL_CODES: dict[str, tuple[Outcome, str]] = {
    "-1": (Outcome.AUTH, "賬號未注冊 (account not registered)"),
    "-2": (Outcome.TRANSIENT, "其他錯誤 (other error)"),
    "-3": (Outcome.AUTH, "密碼錯誤 (wrong password)"),
    "-100": (Outcome.AUTH, "IP黑名單 (IP blacklisted)"),
    "-101": (Outcome.RATE_LIMITED, "調用接口速度太快(大于30s) (called faster than once per 30 s)"),
    "-102": (Outcome.AUTH, "賬號黑名單 (account blacklisted)"),
    "-103": (Outcome.AUTH, "IP未導白 (IP not whitelisted)"),
}

OPERATIONS = {"send": "BatchSend2", "inbound": "Get", "balance": "SelSum", "blocked": "NotSend"}
STRING_RESULTS = {"Get", "NotSend"}  # xs:string results: ASP.NET omits a null one
TRANSPORTS = ("soap", "http")

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_DASHES = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2212": "-", "\uff0d": "-"})
_CODE = re.compile(r"-\d+")
_RECORD_START = re.compile(r"\+?\d{3,20}#")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d %H:%M",
    "%Y%m%d%H%M%S",
)


class LinkwsProvider(Provider):
    name = "linkws"
    max_numbers = 500  # 建议500个号码 per call
    max_chars = 300  # -8 發送內容需在1到300字之間
    number_separator = ","
    default_charset = "utf-8"  # the default transport, soap
    supports_send_time = True  # SendTime yyyyMMddHHmmss
    signature_position = "end"  # -7 提交信息末尾未加簽名,請添加中文的企業簽名【 】
    poll_kinds = frozenset({"inbound", "balance", "blocked"})
    # Get, SelSum and NotSend each answer -101 inside 30 s; read as one window
    # per account shared by the three, the safe reading.
    poll_families = {"inbound": "linkws-query", "balance": "linkws-query", "blocked": "linkws-query"}
    # Get: 每次最多取50條,超過50條下次取 -- a full page means more wait: poll again after the window.
    page_sizes = {"inbound": 50}
    option_keys = frozenset({"transport", "cell"})

    def __init__(self, account: Account, client: httpx.Client | None):
        super().__init__(account, client)
        self.validate_options(account.options)
        # zeep client and service, built on first SOAP call (the producer makes
        # providers without a client just to check content).
        self._zeep: Any = None
        self._service: Any = None

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        transport = options.get("transport", "soap")
        if transport not in TRANSPORTS:
            raise ValueError(f'transport must be "soap" or "http", not {transport!r}')
        cell = options.get("cell", "")
        if not isinstance(cell, str) or not (cell == "" or (cell.isascii() and cell.isdigit())):
            raise ValueError(f"cell (extension number) must be a quoted string of digits or empty, not {cell!r}")

    @property
    def transport(self) -> str:
        return self.account.options.get("transport", "soap")

    @property
    def charset(self) -> str:
        return "gb2312" if self.transport == "http" else "utf-8"

    # -- content -----------------------------------------------------------
    def prepare_content(self, content: str) -> str:
        content = super().prepare_content(content)
        if self.transport == "soap" and (bad := _NOT_XML.search(content)):
            raise ContentError(
                f"control character U+{ord(bad.group()):04X} at position {bad.start()} "
                f"cannot be sent over SOAP (account {self.account.name!r})"
            )
        return content

    def check_charset(self, content: str) -> None:
        try:
            super().check_charset(content)
        except ContentError as exc:
            raise ContentError(
                f'{exc}; the linkws http transport is GB2312 only, transport = "soap" sends UTF-8'
            ) from None

    # -- addresses -----------------------------------------------------------
    def _root(self) -> str:
        url = self.account.base_url.split("?", 1)[0].rstrip("/")
        for tail in ("/ws/linkws.asmx", "/ws"):
            if url.lower().endswith(tail):
                url = url[: -len(tail)]
                break
        return url + "/"

    def _soap(self) -> Any:
        if self._service is None:
            self._zeep = soap.soap_client("linkws.wsdl", self.client)
            self._service = soap.service(self._zeep, BINDING, self._root() + "ws/LinkWS.asmx")
        return self._service

    def _call(self, operation: str, **fields: str) -> httpx.Response:
        """One vendor call on the account's transport; transport errors propagate."""
        params = {"CorpID": self.account.username, "Pwd": self.account.password.reveal(), **fields}
        if self.transport == "soap":
            service = self._soap()
            with self._zeep.settings(raw_response=True):
                return getattr(service, operation)(**params)
        try:
            body = form_body(params, "gb2312")
        except UnicodeEncodeError:
            # Say which field, never its value (it may be the password).
            bad = next(k for k, v in params.items() if not _encodes(v, "gb2312"))
            raise ValueError(f"{bad} cannot be encoded in GB2312") from None
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=gb2312"}
        return self.client.post(f"{self._root()}ws/{operation}.aspx", content=body, headers=headers)

    def _text(self, body: str | bytes, operation: str) -> str:
        """The operation's bare return value out of a body of this transport."""
        if self.transport == "soap":
            return soap_result(body, operation)
        if isinstance(body, bytes):
            body = body.decode("gb18030", errors="replace")
        return body.strip()

    # -- send --------------------------------------------------------------
    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        send_time = ""  # empty = send now
        if send_at is not None:
            local = send_at.astimezone(BEIJING) if send_at.tzinfo else send_at.replace(tzinfo=BEIJING)
            if local > datetime.now(BEIJING) + SCHEDULE_MARGIN:
                send_time = local.strftime("%Y%m%d%H%M%S")  # e.g. 20060912152435
        return self._call(
            "BatchSend2",
            Mobile=",".join(dict.fromkeys(numbers)),
            Content=content,
            Cell=self.account.options.get("cell", ""),
            SendTime=send_time,
        )

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        result = parse_send_text(self._text(response.content, "BatchSend2"))
        if result.outcome is Outcome.OK:
            result.accepted = len(set(numbers))
        return result

    # -- polls -------------------------------------------------------------
    def fetch(self, kind: str) -> str:
        if kind not in self.poll_kinds:
            return super().fetch(kind)
        response = self.guarded(lambda: self._call(OPERATIONS[kind]))
        if self.transport == "soap":
            return response.text
        return response.content.decode("gb18030", errors="replace").strip()

    def parse_inbound(self, body: str) -> list[Inbound]:
        return parse_inbound_text(self._text(body, "Get"))

    def parse_balance(self, body: str) -> int:
        return parse_balance_text(self._text(body, "SelSum"))

    def parse_blocked(self, body: str) -> list[str]:
        return parse_blocked_text(self._text(body, "NotSend"))


def _encodes(value: str, charset: str) -> bool:
    try:
        value.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


# -- SOAP envelopes ---------------------------------------------------------


def soap_result(body: str | bytes, operation: str) -> str:
    """``<operation>Result`` out of a SOAP 1.1 response envelope, as text.

    Parsed with entities unresolved, no network and no DTD; a DOCTYPE is refused.
    A journaled body is text: its XML declaration (which may name a charset
    the text no longer is in) is dropped before parsing."""
    if isinstance(body, str):
        body = _XML_DECL.sub("", body, count=1).encode("utf-8")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not a SOAP envelope: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise ValueError("SOAP answer with a DTD refused")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body") if root.tag == f"{{{SOAP_ENV}}}Envelope" else None
    if soap_body is None:
        raise ValueError(f"not a SOAP 1.1 envelope: root element {root.tag!r}")
    fault = soap_body.find(f"{{{SOAP_ENV}}}Fault")
    if fault is not None:
        raise ValueError(f"SOAP fault: {fault.findtext('faultstring') or ''}"[:200])
    wrapper = soap_body.find(f"{{{TNS}}}{operation}Response")
    if wrapper is None:
        raise ValueError(f"no {operation}Response in the SOAP answer")
    result = wrapper.find(f"{{{TNS}}}{operation}Result")
    if result is None:
        if operation in STRING_RESULTS:
            return ""  # a null string result: nothing to hand out
        raise ValueError(f"no {operation}Result in the SOAP answer")
    return result.text or ""


# -- parsers: plain functions of the bare return value -------------------------


def _normalise(text: str) -> str:
    return text.strip().translate(_DASHES)


def parse_send_text(text: str) -> SendResult:
    text = _normalise(text)
    if text.isascii() and text.isdigit() and int(text) > 0:
        return SendResult(Outcome.OK, code=text, message="提交成功 (accepted)", batch_ref=str(int(text)), raw=text)
    if not (text == "0" or _CODE.fullmatch(text)):
        raise ValueError(f"unexpected answer {text[:80]!r}")
    code = "0" if text == "0" else str(int(text))
    result = classify(SEND_CODES, code, text)
    if result.outcome is Outcome.RATE_LIMITED:
        result.retry_after = RETRY_AFTER
    # -11 屏蔽手機號碼: the whole call refused over a number it does not name (module docstring).
    result.refused_whole = code in REFUSED_FOR_A_NUMBER
    return result


def _poll_error(text: str) -> None:
    if _CODE.fullmatch(text):
        code = str(int(text))
        outcome, message = POLL_CODES.get(code, (Outcome.TRANSIENT, f"unknown vendor code {code}"))
        raise ProviderError(outcome, message, code=code, raw=text)


def parse_balance_text(text: str) -> int:
    text = _normalise(text)
    _poll_error(text)
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"unexpected balance answer {text[:80]!r}")
    return int(text)


def parse_blocked_text(text: str) -> list[str]:
    text = _normalise(text)
    _poll_error(text)
    numbers = [n.strip() for n in text.split(",") if n.strip()]
    for number in numbers:
        if not (number.isascii() and number.lstrip("+").isdigit()):
            raise ValueError(f"unexpected blocked number {number[:40]!r}")
    return list(dict.fromkeys(numbers))


def parse_vendor_time(text: str) -> datetime | None:
    """A vendor time as a naive Beijing datetime; None when its format is unknown."""
    text = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def parse_inbound_text(text: str) -> list[Inbound]:
    """``||MOBILE#CONTENT#TIME#EXT||…``; empty when there are no messages."""
    text = text.strip()
    _poll_error(_normalise(text))
    if not text:
        return []
    if not text.startswith("||"):
        raise ValueError(f"unexpected inbound answer {text[:80]!r}")
    text = text[2:]
    if text.endswith("||"):
        text = text[:-2]
    records: list[str] = []
    for piece in text.split("||"):
        if records and not (_RECORD_START.match(piece) and piece.count("#") >= 3):
            records[-1] += "||" + piece  # a "||" that was inside the content
        else:
            records.append(piece)
    messages = []
    for record in records:
        mobile, sep, rest = record.partition("#")
        fields = rest.rsplit("#", 2)
        if not sep or len(fields) != 3 or not mobile.strip():
            raise ValueError(f"malformed inbound record {record[:80]!r}")
        content, when, ext = fields
        messages.append(
            Inbound(
                mobile=mobile.strip(),
                content=content,
                vendor_id=None,
                received_at=parse_vendor_time(when),
                extra=ext.strip() or None,
            )
        )
    return messages

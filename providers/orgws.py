"""`orgws` — organisation-code SMS WebService (docs/vendors/orgws.md).

SOAP 1.1 through zeep, against the WSDL smsq ships (``providers/wsdl/orgws.wsdl``:
namespace ``http://tempuri.org/``, document/literal wrapped, binding
``ServiceSoap``). Every call carries ``Id`` (the organisation code, account
option ``org_id``), ``Name`` and ``Psw``. Requests go out as UTF-8 XML; zeep
builds them, and the answers are read here from the raw body (``raw_response``)
so polls can be journaled before they are parsed.

Decisions where the vendor's document is silent or ambiguous:

* Service address: the account's ``base_url`` *is* the SOAP endpoint (the full
  ``.asmx`` URL the vendor hands out, e.g. ``http://sms.example.cn/Service.asmx``)
  and is posted to as written; nothing is appended. A trailing ``?wsdl`` (people
  paste the WSDL link) is dropped. The WSDL is never fetched from the vendor.
* Numbers per call: the hard limit is 1000, the vendor recommends 100; we send
  100 (``max_numbers``), so one failed or ambiguous call puts fewer numbers in
  doubt.
* Timestamp: the document makes it "seconds since 1970-01-01 00:00:00 to the
  send time" (时间戳,从1970-01-01 00:00:00 到要现在发送时间隔的秒数, an ``int``)
  and says every call of one batch carries the same one (同批次短信，时间戳要
  相同): the vendor groups calls by it, and a vendor that checks it is fresh
  would refuse one far from the time of the call. So it is the batch's send
  second (its creation, or its ``send_at`` when scheduled), identical for
  every chunk and retry of the batch, whichever worker sends it, and
  different for two batches of one account: the second of a batch created in
  the same second as another takes the next free second. smsq claims it when
  it stores the batch (``batch_stamp = True``; store/stamps.py, a unique key
  per account and second) and hands it to every call as ``SendContext.stamp``.
  A retry an hour later carries the batch's stamp, an hour old: the document
  asks for one value per batch, and says nothing of an age it refuses. A
  call without a stamp uses the batch's creation second (a batch stored
  before smsq kept stamps), else the current time (an operator's one-off
  send). The epoch is the Unix one (UTC); the document does not say. An
  ``int`` on the wire: good until 2038.
* Content length: "at most 3 SMS lengths" is read as 3 x 67 = 201 characters
  (the UCS-2 rule for concatenated SMS, the same rule as ``base.segments``),
  counted in UTF-16 code units as a .NET server and the handset count them (an
  emoji takes two). Characters XML 1.0 cannot carry (control characters other
  than tab/CR/LF) are refused up front: zeep could not serialise them.
* Charset: SOAP here is always UTF-8 on the wire. An account ``charset`` only
  narrows which characters the content check lets through.
* A ``send_at`` uses SendTimer (``DateTime`` ``yyyy-MM-dd HH:mm:ss``, Beijing
  time). The vendor refuses a time not later than its own clock (-12), so a
  ``send_at`` less than ``SCHEDULE_MARGIN`` seconds ahead is sent now with
  SendMessage instead of failing on clock skew. SendTimer has no ``Ext``: a
  scheduled send of an account with an ``ext`` option would go out without the
  extension sub-number. smsq's workers give no ``send_at``: they call at a
  scheduled chunk's time with SendMessage (or SendMessageExt, so the ``ext``
  is kept); ``supports_send_time`` in providers/base.py says why.
* SendState: ``FailPhone`` lists numbers that failed, ``;``-separated; they are
  reported per number in ``failed_numbers``. With State 1 they end ``failed``
  at once, the rest ``sent``; their code is ``refused``, as the vendor gives
  none per number (store/ledger). For State -13 it holds the
  forbidden keyword(s) instead, which go into the message. ``Id`` (the vendor's
  batch id) becomes ``batch_ref``; there are no per-number ids.
* State -10 (发送失败: 号码错误, send failed: number error) refuses the whole call
  over numbers in it, and is marked ``refused_whole`` (providers/base.py): State is
  the call's (a call that is sent answers 1 even when some of its numbers fail,
  and lists those in FailPhone), 发送失败 says none of it was sent, and 号码错误
  puts the cause in its numbers, not in the content or the account. FailPhone
  (返回发送失败的号码) names the offenders when the vendor fills it: they fail,
  and smsq sends the rest again; when it names none, smsq finds them by sending
  halves (tasks/narrowing.py), which a refusal that took nothing makes safe.
  No other State qualifies: -7 (numbers empty) is about the call, -13 names
  keywords of the content.
* The UserLogin codes (0, -2, -3, -4, -30) apply to every operation, and all
  are ``auth``: each is about the account, not the request, so the account
  needs an operator, not a retry. -2 (帐户信息错误: 调用的参数有为空值) too: the
  parameters it can find empty are the credentials (an empty Message or Phone
  has its own -5 and -7), so it answers every call the same until the
  account's configuration is fixed. Why each code has its class is written
  next to the code tables. An empty UserLogin/GetBalance result ("空值 调用接口
  失败") is transient.
* A SOAP Fault in a 200 answer to a send is unreadable (ambiguous: the vendor
  may have acted on it); in a poll it is transient. The parsers match element
  local names, so a vendor that answers in another namespace is still read.
* The vendor has no per-interval poll rule and no reports or inbound: the only
  poll is the balance.
* Signature: the document says nothing of one (Message is "短信内容", limited
  only to 3 SMS lengths; no State code refuses a missing signature). Chinese
  carriers require one, so smsq still requires a 【signature】, accepted at
  either end (``signature_position = "either"``); content with none gets the
  account's signature appended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from lxml import etree

from .base import BEIJING, Account, ContentError, Outcome, Provider, ProviderError, SendContext, SendResult, classify
from .numbers import normalise
from .soap import service, soap_client

BINDING = "{http://tempuri.org/}ServiceSoap"
SCHEDULE_MARGIN = 30  # seconds: closer than this, a scheduled send goes out now
MAX_EXT_DIGITS = 6

# Why each code has its class. An answer about the account (its credentials, its
# state, its configuration, its balance) is the same for every call until an operator
# acts, so it is auth or balance: the account's circuit opens, a routed batch moves on
# to the route's next account (tasks/decisions.py TRIPS). An answer about the request
# (its content, its numbers, its schedule) is invalid_request or blocked: this chunk
# fails and the account goes on sending.

# UserLogin's answers, which "apply to every other operation" (其他值 参考UserLogin()返回值说明).
# Keys are the vendor's codes; the Chinese is the vendor's own wording. Each is about
# the account, none about the request: auth.
LOGIN_CODES: dict[str, tuple[Outcome, str]] = {
    # The vendor disabled the account: nothing goes out until it is enabled again.
    "0": (Outcome.AUTH, "帐户处于禁止使用状态 (account disabled)"),
    # 帐户信息错误, "account information wrong": the parameters it can find empty are the
    # account's (Id, Name, Psw; an empty Message or Phone has its own -5 and -7). smsq
    # never sends them empty (org_id, username are required, the password is the
    # account's secret), so it means the account's configuration or its secret store,
    # and every call answers it until that is fixed.
    "-2": (Outcome.AUTH, "帐户信息错误: 调用的参数有为空值 (account information wrong: a parameter is empty)"),
    # The credentials: calling again with them is how accounts get locked.
    "-3": (Outcome.AUTH, "用户或密码错误: 机构代码、用户名或密码错误 (wrong org code, name or password)"),
    # The kind of account: an agent or group account can never use the web service.
    "-4": (
        Outcome.AUTH,
        "不是普通帐户: 该帐户不能使用Web Service 接口模式 "
        "(not a normal account: agent/group accounts cannot use the web service)",
    ),
    # The account is bound to other caller IPs: every call from this host is refused.
    "-30": (Outcome.AUTH, "非绑定IP: 访问IP非法 (caller IP is not bound to the account)"),
}

# SendState.State of SendMessage, SendTimer and SendMessageExt.
SEND_CODES: dict[str, tuple[Outcome, str]] = {
    "1": (Outcome.OK, "发送短信成功 (sent)"),
    # The document says only "send failed", with no cause: retried, like a busy vendor.
    "-1": (Outcome.TRANSIENT, "发送失败 (send failed)"),
    # -5, -6, -7: the request's content or numbers; the next chunk may be fine.
    "-5": (Outcome.INVALID_REQUEST, "发送短信内容为空 (content empty)"),
    "-6": (Outcome.INVALID_REQUEST, "短信内容过长: 不能超过3条短信的长度 (content longer than 3 SMS)"),
    "-7": (Outcome.INVALID_REQUEST, "发送号码为空 (numbers empty)"),
    # The account's credit: every later call fails too until it is topped up, although a
    # smaller call might still fit (the vendor does not say how much is left).
    "-8": (Outcome.BALANCE, "余额不足 (balance insufficient)"),
    # The vendor's side failed to take the data in: nothing was sent, retried.
    "-9": (Outcome.TRANSIENT, "接收数据失败 (the vendor failed to receive the data)"),
    # The request's numbers (FailPhone names them).
    "-10": (Outcome.INVALID_REQUEST, "发送失败: 号码错误 (send failed: number error)"),
    # SendTimer only, the request's DateTime (smsq's workers never send one).
    "-11": (
        Outcome.INVALID_REQUEST,
        "定时发送时间或格式错误 (schedule time or format wrong, 2010-03-08 10:20:00)",
    ),
    "-12": (
        Outcome.INVALID_REQUEST,
        "定时发送时间失败: 定时时间必须大于当前调用时间 (schedule time not later than now)",
    ),
    # The request's content (FailPhone names the keyword).
    "-13": (Outcome.BLOCKED, "内容信息含关键字 (content contains a forbidden keyword)"),
    # Reserved for clients; should the vendor ever send it, nobody knows what happened.
    "-100": (Outcome.AMBIGUOUS, "客户端获取状态失败(系统预留) (client failed to get the state, reserved)"),
    **LOGIN_CODES,
}

# States that refuse the whole call over numbers in it (see the module docstring).
REFUSED_FOR_A_NUMBER = frozenset({"-10"})

UPDATE_PSW_CODES: dict[str, tuple[Outcome, str]] = {
    "1": (Outcome.OK, "修改密码成功 (password changed)"),
    # The operator's own call (`smsq password`) failed; it says nothing of sends.
    "-1": (Outcome.INVALID_REQUEST, "修改密码失败 (password change failed)"),
    **LOGIN_CODES,
}

EMPTY_RESULT = "调用接口失败 (empty answer: the call failed)"
FAILED_NUMBER = "发送失败的号码 (the vendor reports this number failed)"


class OrgwsProvider(Provider):
    name = "orgws"
    max_numbers = 100  # vendor: at most 1000 per call, 100 recommended
    max_chars = 201  # 3 SMS lengths at 67 UCS-2 characters each
    number_separator = ";"
    default_charset = "utf-8"
    accepts_landline = False
    requires_signature = True
    signature_position = "either"  # the document is silent on a signature
    supports_send_time = True  # SendTimer
    batch_stamp = True  # Timestamp: the batch's send second, unique per account (module docstring)
    poll_kinds = frozenset({"balance"})
    poll_families: ClassVar[dict[str, str]] = {}  # one poll kind, and the vendor has no interval rule
    option_keys = frozenset({"org_id", "ext"})

    def __init__(self, account: Account, client: httpx.Client):
        super().__init__(account, client)
        self.validate_options(account.options)
        self.org_id: int = account.options["org_id"]
        ext = account.options.get("ext")
        self.ext: str | None = None if ext is None else str(ext)
        # The WSDL is parsed once per account; the provider is cached per account.
        self._zeep = soap_client("orgws.wsdl", client)
        self._service = service(self._zeep, BINDING, service_address(account.base_url))

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        org_id = options.get("org_id")
        if org_id is None:
            raise ValueError("option 'org_id' (the vendor's organisation code, an integer) is required")
        # bool is an int subclass: `org_id = true` is a mistake, not 1.
        if not isinstance(org_id, int) or isinstance(org_id, bool) or not 0 < org_id < 2**31:
            raise ValueError("option 'org_id' must be a positive integer (the vendor's organisation code)")
        ext = options.get("ext")
        if ext is not None:
            text = str(ext) if isinstance(ext, int) and not isinstance(ext, bool) and ext >= 0 else ext
            if not isinstance(text, str) or not (text.isascii() and text.isdigit() and len(text) <= MAX_EXT_DIGITS):
                raise ValueError(f"option 'ext' must be 1 to {MAX_EXT_DIGITS} digits (extension sub-number)")

    # -- content ---------------------------------------------------------
    def prepare_content(self, content: str) -> str:
        content = super().prepare_content(content)
        # .NET and the handset count UTF-16 code units: an emoji is two.
        units = len(content.encode("utf-16-le", "surrogatepass")) // 2
        if units > self.max_chars:
            raise ContentError(
                f"content is {units} characters counted as SMS count them (an emoji is two; "
                f"signature included); {self.name} accepts at most {self.max_chars}"
            )
        for i, ch in enumerate(content):
            if not _xml_char(ch):
                raise ContentError(f"character U+{ord(ch):04X} at position {i} cannot travel in XML; remove it")
        return content

    # -- calls -------------------------------------------------------------
    def _credentials(self) -> dict[str, Any]:
        return {"Id": self.org_id, "Name": self.account.username, "Psw": self.account.password.reveal()}

    def _call(self, operation: str, **params: Any) -> httpx.Response:
        """One SOAP call through zeep; the raw httpx.Response comes back (transport errors propagate)."""
        with self._zeep.settings(raw_response=True):
            return getattr(self._service, operation)(**params)

    def _poll_call(self, operation: str, **params: Any) -> httpx.Response:
        """A non-send call with transport errors and HTTP status classified, as ``poll_request`` does."""
        return self.guarded(lambda: self._call(operation, **params))

    # -- send --------------------------------------------------------------
    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        params = {
            **self._credentials(),
            "Message": content,
            "Phone": ";".join(numbers),
            "Timestamp": batch_timestamp(context),
        }
        when = schedule_text(send_at)
        if when is not None:
            return self._call("SendTimer", DateTime=when, **params)
        if self.ext is not None:
            return self._call("SendMessageExt", Ext=self.ext, **params)
        return self._call("SendMessage", **params)

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        return parse_send_xml(response.text, numbers)

    # -- polls -------------------------------------------------------------
    def fetch(self, kind: str) -> str:
        if kind not in self.poll_kinds:
            return super().fetch(kind)
        return self._poll_call("GetBalance", **self._credentials()).text

    def parse_balance(self, body: str) -> int:
        return parse_balance_xml(body).balance

    # -- operator calls ------------------------------------------------------
    def login(self) -> int:
        """Check the account (UserLogin); return the vendor's account id. Raises ProviderError."""
        return parse_login_xml(self._poll_call("UserLogin", **self._credentials()).text)

    def update_password(self, new: str) -> None:
        """Change the account's password at the vendor (UpdatePsw). Raises ProviderError.

        The configured password is not changed here: put the new one in the
        account's secret store next. Neither password is logged or shown."""
        if not isinstance(new, str) or not new:
            raise ValueError("the new password must be a non-empty string")
        response = self._poll_call(
            "UpdatePsw", Id=self.org_id, Name=self.account.username, OldPsw=self.account.password.reveal(), NewPsw=new
        )
        parse_update_psw_xml(response.text)


def service_address(base_url: str) -> str:
    """The SOAP endpoint: the account's base_url as written, minus a pasted ``?wsdl``."""
    url = base_url.strip()
    if url.lower().endswith("?wsdl"):
        url = url[: -len("?wsdl")]
    return url


def batch_timestamp(context: SendContext) -> int:
    """The Timestamp of the call: the batch's stamp (its send second, unique per account,
    the same for every chunk and retry; see the module docstring). Without one, the
    batch's creation second (stored before smsq kept stamps), else now."""
    if context.stamp is not None:
        return context.stamp
    created = context.batch_created_at
    if created is None:
        return int(time.time())
    if created.tzinfo is None:  # SendContext carries naive UTC
        created = created.replace(tzinfo=UTC)
    return int(created.timestamp())


def schedule_text(send_at: datetime | None, now: float | None = None) -> str | None:
    """SendTimer's DateTime (Beijing time), or None for "send now" (absent, or too close to now)."""
    if send_at is None:
        return None
    # A naive send_at is taken as Beijing time already.
    send_at = send_at.astimezone(BEIJING) if send_at.tzinfo else send_at.replace(tzinfo=BEIJING)
    if send_at.timestamp() - (time.time() if now is None else now) < SCHEDULE_MARGIN:
        return None
    return send_at.strftime("%Y-%m-%d %H:%M:%S")


# -- parsers: plain functions of the body text -------------------------------

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, encoding="utf-8")


@dataclass(frozen=True)
class BalanceState:
    balance: int  # messages still available
    sended: int  # messages sent/used
    state: int  # > 0: the account id
    totaled: int  # total recharged


def _xml_char(ch: str) -> bool:
    c = ord(ch)
    return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


class SoapFault(ValueError):
    """A soap:Fault where an answer was expected."""


def _result(text: str, operation: str | tuple[str, ...]) -> etree._Element | None:
    """The ``<OpResult>`` element of a ``<OpResponse>``, None if the answer has none.

    Raises ValueError for anything that is not a SOAP 1.1 answer of ``operation``."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    try:
        root = etree.fromstring(text.strip().encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise ValueError("answer carries a DOCTYPE; refused")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise ValueError(f"not a SOAP 1.1 envelope: <{root.tag!s}>")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        raise ValueError("SOAP envelope without a Body")
    children = [c for c in body if isinstance(c.tag, str)]
    if not children:
        raise ValueError("empty SOAP Body")
    first = children[0]
    if first.tag == f"{{{SOAP_ENV}}}Fault":
        raise SoapFault(f"SOAP fault: {(first.findtext('faultstring') or '').strip()[:200]}")
    ops = (operation,) if isinstance(operation, str) else operation
    if _local(first) not in {f"{op}Response" for op in ops}:
        raise ValueError(f"unexpected answer element <{_local(first)}>")
    for child in first:
        if _local(child) == f"{_local(first)[: -len('Response')]}Result":
            return child
    return None


def _field(parent: etree._Element, name: str) -> etree._Element | None:
    for child in parent:
        if _local(child) == name:
            return child
    return None


def _int(parent: etree._Element, name: str) -> int:
    number = _optional_int(parent, name)
    if number is None:
        raise ValueError(f"answer without {name}")
    return number


def _optional_int(parent: etree._Element, name: str) -> int | None:
    el = _field(parent, name)
    text = (el.text or "").strip() if el is not None else ""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} is not an integer: {text[:40]!r}") from None


def _is_nil(el: etree._Element) -> bool:
    return el.get("{http://www.w3.org/2001/XMLSchema-instance}nil") in ("true", "1")


SEND_OPERATIONS = ("SendMessage", "SendTimer", "SendMessageExt")


def parse_send_xml(text: str, numbers: list[str]) -> SendResult:
    """A SendState answer of SendMessage/SendTimer/SendMessageExt. ValueError if unreadable."""
    result_el = _result(text, SEND_OPERATIONS)
    if result_el is None or _is_nil(result_el):
        raise ValueError("answer without a SendState")
    state = str(_int(result_el, "State"))
    batch_id = _optional_int(result_el, "Id")
    fail_el = _field(result_el, "FailPhone")
    fail = (fail_el.text or "").strip() if fail_el is not None else ""
    result = classify(SEND_CODES, state, text)
    if state == "-13":
        # For -13 FailPhone holds the forbidden keyword(s), not numbers.
        if fail:
            result.message = f"{result.message}: {fail}"
        return result
    reason = result.message if result.outcome is not Outcome.OK and result.message else FAILED_NUMBER
    failed = _failed_numbers(fail, numbers, reason)
    result.failed_numbers = failed
    # -10 发送失败: 号码错误: the whole call refused over its numbers (module docstring).
    result.refused_whole = state in REFUSED_FOR_A_NUMBER
    if result.outcome is Outcome.OK:
        result.batch_ref = str(batch_id) if batch_id else None
        result.rejected = len(failed)
        result.accepted = len([n for n in numbers if n not in failed])
        if failed:
            result.message = f"{result.message}; {len(failed)} number(s) failed"
    return result


def _failed_numbers(fail: str, numbers: list[str], reason: str) -> dict[str, str]:
    """FailPhone's ``;``-separated numbers, spelled as we sent them where they can be matched."""
    sent = set(numbers)
    failed: dict[str, str] = {}
    for raw in fail.split(";"):
        raw = raw.strip()
        if not raw:
            continue
        mobile, _ = normalise(raw)
        failed[mobile if mobile in sent else raw] = reason
    return failed


def _poll_error(code: int, codes: dict[str, tuple[Outcome, str]], text: str) -> ProviderError:
    outcome, message = codes.get(str(code), (Outcome.TRANSIENT, f"unknown vendor code {code}"))
    return ProviderError(outcome, message, code=str(code), raw=text)


def _poll_result(text: str, operation: str) -> etree._Element:
    try:
        result_el = _result(text, operation)
    except SoapFault as exc:
        raise ProviderError(Outcome.TRANSIENT, str(exc), raw=text) from None
    if result_el is None or _is_nil(result_el):
        raise ProviderError(Outcome.TRANSIENT, EMPTY_RESULT, raw=text)
    return result_el


def parse_balance_xml(text: str) -> BalanceState:
    """GetBalance's BalanceState; ProviderError for a vendor code, ValueError if unreadable."""
    result_el = _poll_result(text, "GetBalance")
    state = _int(result_el, "State")
    if state <= 0:
        raise _poll_error(state, LOGIN_CODES, text)
    return BalanceState(
        balance=_int(result_el, "Balance"),
        sended=_int(result_el, "Sended"),
        state=state,
        totaled=_int(result_el, "Totaled"),
    )


def _int_result(result_el: etree._Element) -> int:
    text = (result_el.text or "").strip()
    if not text:
        raise ProviderError(Outcome.TRANSIENT, EMPTY_RESULT)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"result is not an integer: {text[:40]!r}") from None


def parse_login_xml(text: str) -> int:
    """UserLogin's answer: the account id (> 0); ProviderError for a vendor code."""
    code = _int_result(_poll_result(text, "UserLogin"))
    if code <= 0:
        raise _poll_error(code, LOGIN_CODES, text)
    return code


def parse_update_psw_xml(text: str) -> None:
    """UpdatePsw's answer: 1 changed; ProviderError otherwise."""
    code = _int_result(_poll_result(text, "UpdatePsw"))
    if code != 1:
        raise _poll_error(code, UPDATE_PSW_CODES, text)

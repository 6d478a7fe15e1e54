"""`qxs` — 企业信使 operations platform, the ``sms.aspx`` XML family (docs/vendors/qxs.md:
the vendor's document is an OCR so garbled that the page gives the reading implemented here).

Form POSTs, XML answers, three pages: ``sms.aspx`` (``action=send``, ``overage``,
``checkkeyword``), ``statusApi.aspx`` (delivery reports) and ``callApi.aspx``
(inbound), each ``action=query``. Every request carries ``userid`` (the
enterprise id from the vendor console), ``account`` and ``password``.

Decisions where the vendor's document is silent or ambiguous:

* Numbers per call: the document gives none. 100 is the norm of this protocol
  family, so ``max_numbers = 100``.
* Content length: the document gives none either. We cap at 300 characters
  (signature included), the smallest cap among our vendors that state one: a
  longer text would be refused with a message we cannot know in advance.
* Charset: the platform is UTF-8 for requests and answers. The account's
  ``charset`` is honoured all the same (the family has GBK deployments), but
  only UTF-8 is exercised.
* ``sendTime`` is always sent, empty for "now", exactly as the vendor's own
  example does (``…&sendTime=&checkcontent=1``): ASP.NET pages of this age
  often dereference a form field without checking that it is there. smsq's
  workers always send it empty: they call at a scheduled chunk's time
  (``supports_send_time`` in providers/base.py says why).
* ``checkcontent`` defaults to 1 here although the vendor's default is 0:
  with the check on, a forbidden word is refused at once with the word named
  (``包含非法字符：…`` -> blocked) instead of the message silently dying later.
  Set ``checkcontent = false`` on the account to send unchecked.
* Status words: the family writes ``Faild`` and, on ``overage``, ``Sucess``.
  Both misspellings and the correct ``Failed``/``Success`` are accepted, in any
  case; any other status word makes the answer unreadable (a send becomes
  ambiguous). Failure *messages* are the vendor's codes: they are matched after
  NFKC normalisation (full-width ``：，`` become ``:,``; ``Sql``/``sql`` are one)
  and by the distinctive phrase, so trailing punctuation does not matter.
  Unknown failure messages on a send are ambiguous, never retried blindly.
* ``successCounts`` is "提交成功短信数", which may count billed messages rather
  than numbers: it is kept as ``accepted``, and ``rejected`` (numbers sent less
  successCounts) is derived only when successCounts is no more than the numbers
  sent; a larger one counts billed messages and says nothing of refusals. Either
  way successCounts is at least the numbers taken, so the count of refused
  numbers read from it is never more than the true one. The vendor names no
  failed numbers and gives no per-number ids; ``taskID`` is the batch reference
  that delivery reports carry back (report = taskid + mobile). So when some were
  refused, the reports tell which numbers were taken, and the numbers no report
  places within ``SMSQ_REPORT_WAIT`` end ``failed`` (store/ledger).
* Reports and inbound messages carry ``taskid``, which the document calls
  "同一批任务ID" (the same id for a whole batch). A report's ``vendor_id`` is that
  taskid (report = taskid + mobile). An inbound message's taskid is no message
  id (several replies share it), so ``Inbound.vendor_id`` is None and the store
  keys inbound by account + mobile + time + content; the taskid stays in the
  journaled body.
* ``statusNum`` (how many reports to hand out) is a family extension the
  document does not list; it is sent only when the account sets ``status_num``.
* Times (``receivetime``) are Beijing time and become naive datetimes. Besides
  the documented ``yyyy-MM-dd HH:mm:ss`` we read the zh-CN .NET default
  ``yyyy/M/d H:mm:ss``; a time we cannot read becomes None rather than losing a
  report or message that has already been handed out.
* Poll errors: ``<errorstatus><error>N</error><remark>…</remark></errorstatus>``
  with N in 1..4. Code 3 ("该用户不允许查看状态报告", also printed on the inbound
  page) is a permission of the account, so it is classed auth.
* "用户名或密码不能为空" (send message, poll error 1) is ``auth``: the credentials
  it finds empty are the account's, which smsq always sends, so it means the
  account's configuration is broken and answers every call the same until an
  operator fixes it. Why each answer has its class is written next to the tables. A poll answered
  in the send style (``returnstatus``/``message``) is classified by the message.
* Balance: ``overage`` is the number of messages *used* and ``sendTotal`` the
  total bought (prepaid only), so a prepaid balance is ``sendTotal - overage``.
  A postpaid account (``payinfo`` 后付费) has no balance: ``math.inf``.
* No poll interval is documented, so no poll families are shared; the base
  30 s between polls of one kind stays as our own courtesy.
* The document says account names must be ASCII; a non-ASCII one is sent as
  is and the vendor's login failure (auth) says the rest.
* XML is parsed with defusedxml: DTDs, entities and external references are refused.
* Signature: the document (as far as the OCR shows) says nothing of one:
  ``content`` is "短信的内容", and no failure message names a signature.
  Chinese carriers require one, so smsq still requires a 【signature】,
  accepted at either end (``signature_position = "either"``); content with
  none gets the account's signature appended.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException

from .base import (
    BEIJING,
    RAW_KEEP,
    Inbound,
    Outcome,
    Provider,
    ProviderError,
    Report,
    SendContext,
    SendResult,
    form_body,
)

# Why each answer has its class. An answer about the account (its credentials, its
# permissions, its balance) is the same for every call until an operator acts, so it is
# auth or balance: the account's circuit opens, a routed batch moves on to the route's
# next account (tasks/decisions.py TRIPS). An answer about the request (its content, its
# numbers) is invalid_request or blocked: this chunk fails and the account goes on.

# Answers of sms.aspx (send, overage, checkkeyword) are messages, not numbers.
# (phrase to look for after normalisation, outcome, the vendor's words + English).
# Order matters: more specific phrases first.
MESSAGES: list[tuple[str, Outcome, str]] = [
    # 提交的用户名或密码为空: the account's credentials, never the request's (smsq requires a
    # username and sends the account's password), so a broken configuration or secret
    # store; every call answers it until that is fixed.
    ("用户名或密码不能为空", Outcome.AUTH, "用户名或密码不能为空 (account or password empty)"),
    # The credentials: calling again with them is how accounts get locked.
    ("用户名或密码错误", Outcome.AUTH, "用户名或密码错误 (wrong account or password)"),
    # The request's content; the next message may be clean.
    ("sql注入", Outcome.INVALID_REQUEST, "发送内容包含sql注入字符 (content contains SQL-injection characters)"),
    # The request's numbers and content.
    ("短信号码不能为空", Outcome.INVALID_REQUEST, "短信号码不能为空 (numbers empty)"),
    ("短信内容不能为空", Outcome.INVALID_REQUEST, "短信内容不能为空 (content empty)"),
    # The request's content: the words are named.
    ("包含非法字符", Outcome.BLOCKED, "包含非法字符 (content contains forbidden words)"),
    # 当支付方式为预付费时,检查到账户余额不足: the account's credit; a smaller call might still
    # fit, but every later one fails too until it is topped up.
    ("大于您当前余额", Outcome.BALANCE, "对不起，您当前要发送的量大于您当前余额 (prepaid balance too low)"),
    # 其他数据库操作方面的错误: the vendor refused, nothing was sent.
    ("其他错误", Outcome.TRANSIENT, "其他错误 (other error, e.g. the vendor's database)"),
]

# <errorstatus><error>N</error> of statusApi.aspx and callApi.aspx.
POLL_ERRORS: dict[str, tuple[Outcome, str]] = {
    # As the send message of the same words: the account's credentials are empty.
    "1": (Outcome.AUTH, "用户名或密码不能为空 (account or password empty)"),
    "2": (Outcome.AUTH, "用户名或密码错误 (wrong account or password)"),
    # The credentials were accepted; the account lacks this endpoint's permission. Not
    # `auth`: that would open the account's circuit and hold its sends, which work.
    "3": (Outcome.INVALID_REQUEST, "该用户不允许查看状态报告 (this account may not query reports)"),
    # The document does not say which parameter. A poll sends only the login, smsq's
    # own action=query and the account's status_num; kept invalid_request, as for an
    # <errorstatus> answer to a send (not documented), where the request may be the cause.
    "4": (Outcome.INVALID_REQUEST, "参数不正确 (invalid parameters)"),
}

# Record status of a status report: 10 发送成功, 20 发送失败.
REPORT_STATUS: dict[str, tuple[bool | None, str]] = {
    "10": (True, "发送成功 (delivered)"),
    "20": (False, "发送失败 (failed)"),
}

# The family's spellings first (sic), then the dictionary ones.
SUCCESS_WORDS = frozenset({"sucess", "success"})
FAILURE_WORDS = frozenset({"faild", "failed"})

CLEAN_PHRASES = ("未包含非法字符", "没有包含屏蔽词", "没有包含非法字符", "未包含屏蔽词")
POSTPAID = "后付费"

ENDPOINTS = {
    "send": "sms.aspx",
    "balance": "sms.aspx",
    "keywords": "sms.aspx",
    "reports": "statusApi.aspx",
    "inbound": "callApi.aspx",
}
ACTIONS = {"send": "send", "balance": "overage", "keywords": "checkkeyword", "reports": "query", "inbound": "query"}

_USERID_RE = re.compile(r"[A-Za-z0-9]{1,64}")
_EXTNO_RE = re.compile(r"\d{1,20}")


class QxsProvider(Provider):
    name = "qxs"
    max_numbers = 100  # not stated by the vendor: the protocol family's norm
    max_chars = 300  # not stated by the vendor: see the module docstring
    number_separator = ","
    default_charset = "utf-8"
    supports_send_time = True  # sendTime yyyy-MM-dd HH:mm:ss
    signature_position = "either"  # the document is silent on a signature
    poll_kinds = frozenset({"reports", "inbound", "balance"})
    # userid: enterprise id (required); checkcontent: ask the vendor to check
    # forbidden words on send (default true); extno: extension digits;
    # status_num: statusNum, reports per poll.
    option_keys = frozenset({"userid", "checkcontent", "extno", "status_num"})

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        userid = options.get("userid")
        if userid is None or userid == "":
            raise ValueError("userid (the enterprise id shown in the vendor console) is required")
        # The family's ids are numbers (userid=12) or, on newer platforms, letters and digits.
        as_int = isinstance(userid, int) and not isinstance(userid, bool) and userid >= 0
        if not as_int and not (isinstance(userid, str) and _USERID_RE.fullmatch(userid)):
            raise ValueError(f"userid must be the enterprise id, digits or letters, not {userid!r}")
        check = options.get("checkcontent", True)
        if not isinstance(check, bool) and check not in (0, 1):
            raise ValueError(f"checkcontent must be true or false, not {check!r}")
        extno = options.get("extno")
        if extno is not None and (isinstance(extno, bool) or not _EXTNO_RE.fullmatch(str(extno))):
            raise ValueError(f"extno must be 1 to 20 digits, not {extno!r}")
        num = options.get("status_num")
        if num is not None and (isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 1000):
            raise ValueError(f"status_num must be a whole number from 1 to 1000, not {num!r}")

    # -- wire helpers ----------------------------------------------------
    def _url(self, what: str) -> str:
        return self.account.base_url.rstrip("/") + "/" + ENDPOINTS[what]

    def _post(self, what: str, fields: dict[str, str], *, poll: bool) -> httpx.Response:
        opts = self.account.options
        data = {
            "action": ACTIONS[what],
            "userid": str(opts.get("userid", "")),
            "account": self.account.username,
            "password": self.account.password.reveal(),
            **fields,
        }
        body = form_body(data, self.charset)
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={self.charset}"}
        if poll:
            return self.poll_request("POST", self._url(what), content=body, headers=headers)
        return self.client.post(self._url(what), content=body, headers=headers)

    def _text(self, response: httpx.Response) -> str:
        return response.content.decode(self.charset, errors="replace")

    # -- send --------------------------------------------------------------
    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        opts = self.account.options
        fields = {
            "mobile": ",".join(numbers),
            "content": content,
            "sendTime": format_send_time(send_at),
            "checkcontent": "1" if opts.get("checkcontent", True) else "0",
        }
        if opts.get("extno") is not None:
            fields["extno"] = str(opts["extno"])
        return self._post("send", fields, poll=False)

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        return parse_send_xml(self._text(response), len(numbers))

    # -- polls -------------------------------------------------------------
    def fetch(self, kind: str) -> str:
        if kind not in self.poll_kinds:
            return super().fetch(kind)
        fields = {}
        if kind == "reports" and self.account.options.get("status_num") is not None:
            fields["statusNum"] = str(self.account.options["status_num"])
        return self._text(self._post(kind, fields, poll=True))

    def parse_reports(self, body: str) -> list[Report]:
        return parse_reports_xml(body)

    def parse_inbound(self, body: str) -> list[Inbound]:
        return parse_inbound_xml(body)

    def parse_balance(self, body: str) -> float:
        return parse_balance_xml(body)

    # -- for operators -----------------------------------------------------
    def check_keywords(self, content: str) -> list[str]:
        """Ask the vendor which forbidden words ``content`` holds ([] = clean).

        The content is checked as given (no signature is added). Raises
        ProviderError for vendor errors and transport failures."""
        response = self._post("keywords", {"content": content}, poll=True)
        return parse_keyword_xml(self._text(response))


def format_send_time(send_at: datetime | None) -> str:
    """sendTime: empty for "now", else yyyy-MM-dd HH:mm:ss on the vendor's (Beijing) clock."""
    if send_at is None:
        return ""
    if send_at.tzinfo is not None:
        send_at = send_at.astimezone(BEIJING)
    return send_at.strftime("%Y-%m-%d %H:%M:%S")


# -- parsing: plain functions of the body text, testable without a network --

_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.S)


def _root(text: str) -> Element:
    """Parse a ``<returnsms>`` answer safely; ValueError for anything else."""
    # The declaration names an encoding, but we already hold text: drop it
    # (and a BOM) so the parser does not try to decode again.
    cleaned = _DECLARATION.sub("", text.lstrip("\ufeff"), count=1)
    try:
        root = SafeET.fromstring(cleaned, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not a readable XML answer ({exc}): {text[:80]!r}") from None
    if root.tag.lower() != "returnsms":
        raise ValueError(f"unexpected XML root <{root.tag}>: {text[:80]!r}")
    return root


def _fields(element: Element) -> dict[str, str]:
    """Child element texts by lower-cased tag (the family writes taskID and taskid).

    Texts are stripped, except ``content``: a reply's spaces are the sender's."""
    return {
        child.tag.lower(): (child.text or "") if child.tag.lower() == "content" else (child.text or "").strip()
        for child in element
    }


def _norm(message: str) -> str:
    return unicodedata.normalize("NFKC", message).strip().lower()


def lookup_message(message: str) -> tuple[str, Outcome, str] | None:
    """The MESSAGES row a vendor message belongs to, or None."""
    norm = _norm(message)
    for phrase, outcome, text in MESSAGES:
        if phrase in norm:
            return phrase, outcome, text
    return None


def _classified(message: str) -> tuple[str, Outcome, str]:
    found = lookup_message(message)
    if found is None:
        return message[:64], Outcome.AMBIGUOUS, f"unknown vendor message {message!r}"
    phrase, outcome, text = found
    if outcome is Outcome.BLOCKED:  # keep the words the vendor named
        text = f"{text}: {message.strip()}"
    return phrase, outcome, text


def parse_send_xml(text: str, sent: int) -> SendResult:
    root = _root(text)
    error = _errorstatus(root)  # not documented for sends; read all the same
    if error is not None:
        code, outcome, meaning = error
        return SendResult(outcome, code=code, message=meaning, raw=text[:RAW_KEEP])
    fields = _fields(root)
    status = fields.get("returnstatus", "").lower()
    message = fields.get("message", "")
    if status in SUCCESS_WORDS:
        counts = fields.get("successcounts", "")
        accepted = int(counts) if counts.isdigit() else None
        rejected = sent - accepted if accepted is not None and accepted <= sent else None
        remain = fields.get("remainpoint", "")
        note = f"; {remain} left" if remain else ""
        if rejected:  # which ones, the vendor does not say: delivery reports place the others
            note += f"; successCounts {accepted} of {sent} numbers: {rejected} refused"
        return SendResult(
            Outcome.OK,
            code=fields.get("returnstatus"),
            message=f"{message or 'ok'} (accepted{note})",
            batch_ref=fields.get("taskid") or None,
            accepted=accepted,
            rejected=rejected,
            raw=text[:RAW_KEEP],
        )
    if status in FAILURE_WORDS:
        code, outcome, meaning = _classified(message)
        return SendResult(outcome, code=code, message=meaning, raw=text[:RAW_KEEP])
    raise ValueError(f"unexpected returnstatus {fields.get('returnstatus')!r}")


def _errorstatus(root: Element) -> tuple[str, Outcome, str] | None:
    """(code, outcome, meaning) of an ``<errorstatus>`` answer, else None."""
    for element in root.iter():
        if element.tag.lower() == "errorstatus":
            fields = _fields(element)
            code, remark = fields.get("error", ""), fields.get("remark", "")
            # An unknown code means nothing was handed out: try again later.
            outcome, meaning = POLL_ERRORS.get(code, (Outcome.TRANSIENT, f"unknown vendor error {code!r}"))
            detail = f" [{remark}]" if remark and remark not in meaning else ""
            return code, outcome, meaning + detail
    return None


def _raise_errorstatus(root: Element, text: str) -> None:
    error = _errorstatus(root)
    if error is not None:
        code, outcome, meaning = error
        raise ProviderError(outcome, meaning, code=code, raw=text[:RAW_KEEP])


def _raise_message(root: Element, text: str) -> None:
    """A poll answered the sms.aspx way (returnstatus Faild + message)."""
    fields = _fields(root)
    if fields.get("returnstatus", "").lower() in FAILURE_WORDS:
        message = fields.get("message", "")
        # An unknown message here handed nothing out: try again later.
        code, outcome, meaning = message[:64], Outcome.TRANSIENT, f"unknown vendor message {message!r}"
        found = lookup_message(message)
        if found is not None:
            code, outcome, meaning = found
        raise ProviderError(outcome, meaning, code=code, raw=text[:RAW_KEEP])


def _poll_items(text: str, tag: str) -> list[dict[str, str]]:
    root = _root(text)
    _raise_errorstatus(root, text)
    _raise_message(root, text)
    return [_fields(child) for child in root if child.tag.lower() == tag]


_TIME_RE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?(?:\.\d+)?")


def parse_time(value: str) -> datetime | None:
    """A vendor time (Beijing) as a naive datetime; None when absent or unreadable."""
    match = _TIME_RE.fullmatch(value.strip())
    if not match:
        return None
    try:
        year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def parse_reports_xml(text: str) -> list[Report]:
    reports = []
    for item in _poll_items(text, "statusbox"):
        mobile, status = item.get("mobile", ""), item.get("status", "")
        if not mobile or not status:
            raise ValueError(f"status report without mobile or status: {item!r}")
        # A status the document does not define settles nothing: kept, not guessed.
        delivered, meaning = REPORT_STATUS.get(status, (None, f"unknown status {status}"))
        errorcode = item.get("errorcode", "")
        reports.append(
            Report(
                vendor_id=item.get("taskid") or None,
                mobile=mobile,
                delivered=delivered,
                code=status,
                message=f"{meaning} {errorcode}" if errorcode else meaning,
                reported_at=parse_time(item.get("receivetime", "")),
            )
        )
    return reports


def parse_inbound_xml(text: str) -> list[Inbound]:
    messages = []
    for item in _poll_items(text, "callbox"):
        mobile = item.get("mobile", "")
        if not mobile:
            raise ValueError(f"inbound message without mobile: {item!r}")
        # taskid is the batch id, shared by replies: no message id (docstring).
        messages.append(
            Inbound(
                mobile=mobile,
                content=item.get("content", ""),
                vendor_id=None,
                received_at=parse_time(item.get("receivetime", "")),
            )
        )
    return messages


def parse_balance_xml(text: str) -> float:
    root = _root(text)
    _raise_errorstatus(root, text)
    _raise_message(root, text)
    fields = _fields(root)
    status = fields.get("returnstatus", "").lower()
    if status and status not in SUCCESS_WORDS:
        raise ValueError(f"unexpected returnstatus {fields.get('returnstatus')!r}")
    if POSTPAID in fields.get("payinfo", ""):
        return math.inf  # billed afterwards: nothing to run out of
    try:
        used, total = float(fields["overage"]), float(fields["sendtotal"])
    except (KeyError, ValueError):
        raise ValueError(f"balance answer without overage/sendTotal: {text[:120]!r}") from None
    return total - used


def parse_keyword_xml(text: str) -> list[str]:
    """Words the vendor found in the content, [] when clean; ProviderError for errors."""
    root = _root(text)
    _raise_errorstatus(root, text)
    message = _fields(root).get("message", "")
    norm = _norm(message)
    # "未包含非法字符" contains "包含非法字符": look for the clean answers first.
    if any(phrase in norm for phrase in CLEAN_PHRASES):
        return []
    found = lookup_message(message)
    if found is None:
        raise ValueError(f"unexpected keyword-check answer {message[:80]!r}")
    phrase, outcome, meaning = found
    if outcome is not Outcome.BLOCKED:
        raise ProviderError(outcome, meaning, code=phrase, raw=text[:RAW_KEEP])
    words = re.split(r"[:：]", message, maxsplit=1)[1:]
    listed = [w for w in re.split(r"[,，、;；|\s]+", words[0] if words else "") if w]
    # No word named: still not clean, so hand the operator the vendor's words.
    return listed or [message.strip()]

"""`dxt` — 企业短信通 HTTP text interface (docs/vendors/dxt.md).

Plain HTTP; every answer is short pipe-delimited text. Decisions where the
vendor's document is silent or ambiguous:

* Charset: the document names none. Classic ASP gateways of this kind decode
  GB2312/GBK, so the charset is an account setting (``charset``), default
  ``gbk``. Bodies are *decoded* as gb18030 when the account says gb2312/gbk,
  since gb18030 is a superset and a stray character must not break a poll.
* We POST (the vendor accepts GET or POST) so the password never sits in a URL,
  where proxies and access logs would keep it.
* ``d`` in ``0|a|b|d`` is read as a comma-separated list of SMSIDs, one per
  accepted number (原文: "每个SMSID用英文逗号分开,SMSID的个数是本次提交成功的号码数").
* ``b`` is the count of numbers the vendor refused (处理失败的号码个数,一般为号码
  长度不对等): it is kept as ``rejected``. The document names neither the refused
  numbers nor an order of the SMSIDs, so when ``b`` > 0 the ids cannot be paired
  with the numbers: zipping them in the order sent would give a refused number an
  accepted one's id and shift every id after it. Nor can smsq tell the refused
  ones by length: it sends only numbers it checked itself (11-digit mobiles,
  10-12 digit fixed-line numbers), and which lengths the gateway disputes it does
  not say. So the ids stay on the chunk (``batch_ref``, all of them) and no number
  gets one at send time; each delivery report (``SMSID;MOBILE;STATUS``) ties an
  id to its number. The numbers no report places within ``SMSQ_REPORT_WAIT`` are
  taken for the refused ones and end ``failed`` (store/ledger); when ``a`` is 0,
  every number was refused and fails at once. With ``b`` = 0 the ids pair with
  the numbers in the order sent, as the vendor's one-number example does.
* Inbound ``ID;MOBILE;CONTENT``: the vendor's own example writes ``ID,MOBILE``
  (``2|133,13798361236;我回复一条``), so both separators are accepted between
  id and mobile. CONTENT is the rest of the record: it may hold ``;`` and
  ``,``. A ``|`` inside content cannot be told apart from the record separator;
  we split on every ``|`` and, when the record count says fewer records than
  pieces, glue the surplus pieces back onto the preceding content.
* ``send_time`` (``yyyyMMddHHmmss``) is sent when ``send_at`` is given; smsq's
  workers give none: they call at a scheduled chunk's time (``supports_send_time``
  in providers/base.py says why).
* A bare ``-1`` from the report/inbound endpoints is the error "user does not
  exist"; a *record* status ``-1`` means "no report received yet".
* Signature: the document says nothing of one (send_content is "需要发送的短信
  内容" and no code refuses a missing signature). Chinese carriers require one,
  so smsq still requires a 【signature】, accepted at either end
  (``signature_position = "either"``); content with none gets the account's
  signature appended.
"""

from __future__ import annotations

import re
from datetime import datetime

import httpx

from .base import Inbound, Outcome, Provider, ProviderError, Report, SendContext, SendResult, classify, form_body

# Why each code has its class. An answer about the account (its login, its lock, its
# balance) is the same for every call until an operator acts, so it is auth or balance:
# the account's circuit opens, a routed batch moves on to the route's next account
# (tasks/decisions.py TRIPS). An answer about the request (its numbers, its content) is
# invalid_request or blocked: this chunk fails and the account goes on sending.

# Send answers other than "0|a|b|d". Keys are the vendor's codes; the Chinese
# text is the vendor's own wording, kept for operators.
SEND_CODES: dict[str, tuple[Outcome, str]] = {
    # -1, -2: the request's numbers and content.
    "-1": (Outcome.INVALID_REQUEST, "缺少接收的目标号码 (missing numbers)"),
    "-2": (Outcome.INVALID_REQUEST, "缺少短信内容 (missing content)"),
    # The request's content (the word is named after the "|").
    "-3": (Outcome.BLOCKED, "短信内容非法,含有禁发关键词 (content contains a forbidden word)"),
    # The request's size. We never send more than 100 numbers; a -4 means our chunking is
    # broken, which no operator action on the account would fix.
    "-4": (Outcome.INVALID_REQUEST, "每次请求条数大于最大允许条数100条 (more than 100 numbers in one request)"),
    # The account's login: calling again with a wrong password is how it gets locked (-10).
    "-7": (Outcome.AUTH, "用户登入信息验证失败(一般为密码错误) (login failed, usually a wrong password)"),
    # The request's content length.
    "-8": (Outcome.INVALID_REQUEST, "短信内容长度超过规定最大字符长度335个字符 (content longer than 335 characters)"),
    # The account's credit. "for this request": a smaller call might fit, but every later
    # call fails too until it is topped up.
    "-9": (Outcome.BALANCE, "帐户当前余额不足发送本次请求的条数 (balance too low for this request)"),
    # The account is locked: nothing goes out until the vendor unlocks it.
    "-10": (Outcome.AUTH, "帐号已被锁定 (account locked)"),
    # The vendor's side: nothing was taken, retried.
    "-99": (Outcome.TRANSIENT, "系统忙,无法受理此次请求 (system busy)"),
}

# b of "0|a|b|d", the vendor's words.
REFUSED_COUNT = "个号码处理失败,一般为号码长度不对等 (number(s) refused, usually of a wrong length)"

# Errors of the report and inbound endpoints: the account (-1, -7) or the vendor's side (-3).
POLL_CODES: dict[str, tuple[Outcome, str]] = {
    "-1": (Outcome.AUTH, "用户不存在 (user does not exist)"),
    "-3": (Outcome.TRANSIENT, "系统忙,请稍候再试 (system busy, try later)"),
    "-7": (Outcome.AUTH, "帐号登录验证失败 (login failed)"),
}

# Errors of the balance endpoint: both about the account.
BALANCE_CODES: dict[str, tuple[Outcome, str]] = {
    "-1": (Outcome.AUTH, "帐户不存在 (account does not exist)"),
    "-7": (Outcome.AUTH, "用户登入信息验证失败 (login failed)"),
}

# Record status of a status report: -1 no report yet, 10 delivered, 20 failed.
REPORT_STATUS = {
    "-1": (None, "未收到状态报告 (no report received yet)"),
    "10": (True, "发送成功 (delivered)"),
    "20": (False, "发送失败 (failed)"),
}

_PHONE_RE = re.compile(r"(?:\+?86)?(?:1\d{10}|0\d{9,11})")

ENDPOINTS = {
    "send": "sendsms_txt.asp",
    "reports": "get_report_txt.asp",
    "inbound": "get_receive_message_txt.asp",
    "balance": "Get_Account_Balance.asp",
}


class DxtProvider(Provider):
    name = "dxt"
    max_numbers = 100  # hard limit: the vendor answers -4 above it
    max_chars = 335  # -8 above it
    number_separator = ","
    default_charset = "gbk"
    accepts_landline = True  # 小灵通 numbers with area code, e.g. 075580808080
    signature_position = "either"  # the document is silent on a signature
    supports_send_time = True  # send_time yyyyMMddHHmmss
    poll_kinds = frozenset({"reports", "inbound", "balance"})
    page_sizes = {"reports": 100, "inbound": 50}  # 最大返回100条 / 最大返回50条

    # -- wire helpers ----------------------------------------------------
    @property
    def wire_charset(self) -> str:
        return self.charset

    @property
    def read_charset(self) -> str:
        # gb18030 is a superset of gb2312/gbk: decode with it so one odd
        # character cannot make a fetched (and already handed-out) body unreadable.
        return "gb18030" if self.charset.lower().replace("-", "") in ("gb2312", "gbk") else self.charset

    def _url(self, endpoint: str) -> str:
        return self.account.base_url.rstrip("/") + "/" + ENDPOINTS[endpoint]

    def _form(self, **fields: str) -> tuple[bytes, dict[str, str]]:
        data = {"us_name": self.account.username, "us_pwd": self.account.password.reveal(), **fields}
        body = form_body(data, self.wire_charset)
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={self.wire_charset}"}
        return body, headers

    def _text(self, response: httpx.Response) -> str:
        return response.content.decode(self.read_charset, errors="replace").strip()

    # -- send --------------------------------------------------------------
    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        fields = {"send_phone": ",".join(numbers), "send_content": content}
        if send_at is not None:
            fields["send_time"] = send_at.strftime("%Y%m%d%H%M%S")  # 14 digits, e.g. 20100903112030
        body, headers = self._form(**fields)
        return self.client.post(self._url("send"), content=body, headers=headers)

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        return parse_send_text(self._text(response))

    # -- polls -------------------------------------------------------------
    def fetch(self, kind: str) -> str:
        if kind not in self.poll_kinds:
            return super().fetch(kind)
        body, headers = self._form()
        response = self.poll_request("POST", self._url(kind), content=body, headers=headers)
        return self._text(response)

    def parse_reports(self, body: str) -> list[Report]:
        return parse_reports_text(body)

    def parse_inbound(self, body: str) -> list[Inbound]:
        return parse_inbound_text(body)

    def parse_balance(self, body: str) -> int:
        return parse_balance_text(body)


# The parsers are plain functions of the body text so they can be tested over
# every code without a network.


def parse_send_text(text: str) -> SendResult:
    text = text.strip()
    if text.startswith("0|"):
        parts = text.split("|")
        if len(parts) < 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f"malformed success answer {text[:80]!r}")
        accepted, rejected = int(parts[1]), int(parts[2])
        ids = [i.strip() for i in (parts[3] if len(parts) > 3 else "").split(",") if i.strip()]
        message = "提交短信成功 (accepted)"
        if rejected:  # b: which numbers, the vendor does not say (module docstring)
            message += f"; {rejected} {REFUSED_COUNT}"
        return SendResult(
            Outcome.OK,
            code="0",
            message=message,
            vendor_ids=ids,
            batch_ref=",".join(ids) or None,
            accepted=accepted,
            rejected=rejected,
            raw=text,
        )
    code, _, detail = text.partition("|")
    if code == "-3":
        # "-3|禁发词": the forbidden word follows the bar; keep it for the operator.
        result = classify(SEND_CODES, code, text)
        result.message = f"{result.message}: {detail}" if detail else result.message
        return result
    if not _is_code(code) or detail:
        raise ValueError(f"unexpected answer {text[:80]!r}")
    return classify(SEND_CODES, code, text)


def _is_code(text: str) -> bool:
    return text.startswith("-") and text[1:].isdigit()


def _poll_error(text: str, codes: dict[str, tuple[Outcome, str]]) -> None:
    if _is_code(text):
        outcome, message = codes.get(text, (Outcome.TRANSIENT, f"unknown vendor code {text}"))
        raise ProviderError(outcome, message, code=text, raw=text)


def _records(text: str, codes: dict[str, tuple[Outcome, str]]) -> tuple[int, list[str]]:
    text = text.strip()
    _poll_error(text, codes)
    head, _, rest = text.partition("|")
    if not head.isdigit():
        raise ValueError(f"unexpected answer {text[:80]!r}")
    count = int(head)
    if count == 0:
        return 0, []
    return count, rest.split("|")


def parse_reports_text(text: str) -> list[Report]:
    count, pieces = _records(text, POLL_CODES)
    reports = []
    for piece in pieces:
        if not piece.strip():
            continue
        fields = piece.strip().split(";")
        if len(fields) != 3:
            raise ValueError(f"malformed report record {piece[:80]!r}")
        smsid, mobile, status = (f.strip() for f in fields)
        # A status the document does not define settles nothing: kept, not guessed.
        delivered, message = REPORT_STATUS.get(status, (None, f"unknown status {status}"))
        reports.append(Report(vendor_id=smsid, mobile=mobile, delivered=delivered, code=status, message=message))
    if len(reports) != count:
        raise ValueError(f"answer announces {count} reports but holds {len(reports)}")
    return reports


def parse_inbound_text(text: str) -> list[Inbound]:
    count, pieces = _records(text, POLL_CODES)
    if not pieces:
        return []
    # Re-glue pieces that were a '|' inside content: a record starts with an
    # id and a mobile; anything else continues the previous content.
    records: list[str] = []
    for piece in pieces:
        if records and (len(records) >= count or not _starts_record(piece)):
            records[-1] += "|" + piece
        else:
            records.append(piece)
    messages = []
    for record in records:
        head, sep, content = record.partition(";")
        if "," in head:  # "ID,MOBILE;CONTENT" — the vendor's own example
            msg_id, _, mobile = head.partition(",")
        else:  # "ID;MOBILE;CONTENT" — the text of the document
            msg_id = head
            mobile, sep, content = content.partition(";")
        if not sep or not msg_id.strip() or not mobile.strip():
            raise ValueError(f"malformed inbound record {record[:80]!r}")
        messages.append(Inbound(mobile=mobile.strip(), content=content, vendor_id=msg_id.strip()))
    if len(messages) != count:
        raise ValueError(f"answer announces {count} messages but holds {len(messages)}")
    return messages


def _starts_record(piece: str) -> bool:
    """Does this piece look like "ID,MOBILE;…" or "ID;MOBILE;…" with a real phone number?"""
    head = piece.split(";", 1)[0]
    msg_id, comma, mobile = head.partition(",")
    if not comma:
        parts = piece.split(";", 2)
        if len(parts) < 3:
            return False
        msg_id, mobile = parts[0], parts[1]
    return msg_id.strip().isdigit() and bool(_PHONE_RE.fullmatch(mobile.strip()))


def parse_balance_text(text: str) -> int:
    text = text.strip()
    _poll_error(text, BALANCE_CODES)
    if not text.isdigit():
        raise ValueError(f"unexpected balance answer {text[:80]!r}")
    return int(text)

"""The provider contract: what every vendor module fills in, and the outcome taxonomy.

A provider is pure: it builds requests, talks HTTP through the ``httpx.Client``
it is handed (one pool per account, owned by the caller), parses responses and
knows its vendor's codes. It never touches Celery or the database.

The send call is fixed here (``Provider.send``); a vendor module fills in the
hooks ``build_send`` and ``parse_send``. Transport failures are classified once,
here, because they mean the same thing for every vendor:

* the request never left (connect refused, connect/pool timeout) -> ``transient``
* the request left and no usable answer came back (read timeout, connection
  dropped mid-response, a 200 whose body cannot be parsed) -> ``ambiguous``:
  the vendor may have accepted it, so it must never be resent automatically.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import quote_plus

import httpx

RAW_KEEP = 2000  # characters of a vendor body kept on record
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")  # the vendors' clock (no DST)


class Outcome(str, enum.Enum):
    OK = "ok"
    INVALID_REQUEST = "invalid_request"  # permanent: fix the input
    # The account, not the request: wrong or empty credentials, a locked or disabled account,
    # a caller IP it refuses, its configuration; every call is answered alike until an
    # operator acts, so its circuit opens (tasks/decisions.py).
    AUTH = "auth"
    BALANCE = "balance"  # not enough credit
    BLOCKED = "blocked"  # number or content refused (forbidden word, blacklist)
    RATE_LIMITED = "rate_limited"  # come back after the vendor's interval
    TRANSIENT = "transient"  # busy / 5xx / connect error: retry with backoff
    AMBIGUOUS = "ambiguous"  # may have been accepted: never resend blindly


class Secret:
    """A credential that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Account:
    """One configured vendor account, as a provider sees it."""

    name: str
    provider: str
    base_url: str
    username: str
    password: Secret = field(repr=False)
    charset: str | None = None
    signature: str | None = None
    rate_limit: float = 10.0  # vendor calls per second, across all workers
    timeout: float = 15.0  # seconds for one vendor call (connect and read)
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific keys


@dataclass(frozen=True)
class SendContext:
    """Where a call sits in its batch, for vendors that need it (orgws reuses one
    Timestamp for every chunk and retry of a batch; a vendor may want a serial)."""

    batch_id: int = 0
    chunk_seq: int = 0
    attempt: int = 1
    batch_created_at: datetime | None = None  # naive UTC
    # The batch's stamp at this account (``Provider.batch_stamp``): Unix seconds, its send
    # second made unique among the account's batches when the batch was stored. None: none.
    stamp: int | None = None


@dataclass
class SendResult:
    """What one vendor send call came to."""

    outcome: Outcome
    code: str | None = None  # vendor code as sent ("0", "-7", ...)
    message: str | None = None  # what the code means, vendor's words kept
    vendor_ids: list[str] = field(default_factory=list)  # per accepted number, in order
    batch_ref: str | None = None  # the vendor's batch/serial reference, if any
    accepted: int | None = None
    # Numbers the vendor refused in an answer that took the rest of the call: how many
    # (its count: dxt b, jinxin failCount, qxs numbers sent less successCounts), and the
    # ones it names (orgws FailPhone, jinxin failList) with why, and their own code when
    # it gives one (jinxin's per-number respCode).
    rejected: int | None = None
    failed_numbers: dict[str, str] = field(default_factory=dict)  # mobile -> reason
    # The vendor refused the whole call over some number(s) in it and took none of it
    # (linkws -11, orgws -10: the provider modules say why each code qualifies).
    # ``failed_numbers`` holds those it named, if any. smsq fails the offenders and
    # sends the rest again; when none is named it finds them by sending halves
    # (tasks/narrowing.py), which is safe only because a refusal took nothing.
    refused_whole: bool = False
    failed_codes: dict[str, str] = field(default_factory=dict)  # mobile -> the vendor's code for it
    retry_after: float | None = None  # seconds, for rate_limited
    raw: str = ""  # the vendor's body (truncated), for operators

    def __repr__(self) -> str:  # bodies stay out of reprs
        return f"SendResult({self.outcome.value}, code={self.code!r}, accepted={self.accepted})"

    @property
    def unnamed_refusals(self) -> int:
        """Numbers the vendor says it refused beyond those it names: which ones, only a
        delivery report for each of the others can tell."""
        return max((self.rejected or 0) - len(self.failed_numbers), 0)


@dataclass(frozen=True)
class Report:
    """A delivery report for one number."""

    vendor_id: str | None  # the vendor's message/batch id the report refers to; None: it names none
    mobile: str
    delivered: bool | None  # None: the vendor says "no report yet"
    code: str  # vendor status code, as sent
    message: str = ""
    reported_at: datetime | None = None


@dataclass(frozen=True)
class Inbound:
    """A message a handset sent to the account."""

    mobile: str
    content: str
    vendor_id: str | None = None  # None when the vendor gives no id
    received_at: datetime | None = None
    extra: str | None = None  # extension / sub-port, when the vendor gives one


class ProviderError(Exception):
    """A vendor call that did not succeed, classified. Never carries credentials."""

    def __init__(self, outcome: Outcome, message: str, *, code: str | None = None, raw: str = ""):
        super().__init__(message)
        self.outcome = outcome
        self.code = code
        self.raw = raw[:RAW_KEEP]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.outcome.value}, code={self.code!r}, {str(self)!r})"


class ContentError(ValueError):
    """Content the account cannot send (no signature, too long, charset cannot carry it)."""


def segments(content: str) -> int:
    """Billed SMS count: 70 characters fit one message, longer ones go in 67s (UCS-2)."""
    n = len(content)
    return 1 if n <= 70 else math.ceil(n / 67)


SIGNATURE_RE = re.compile(r"^【[^【】]{1,20}】|【[^【】]{1,20}】$")  # a signature at either end
SIGNATURE_AT_START = re.compile(r"^(【[^【】]{1,20}】)\s*(.*)$", re.S)
SIGNATURE_AT_END = re.compile(r"^(.*?)\s*(【[^【】]{1,20}】)$", re.S)
# Where a vendor's document wants the 【signature】: "start", "end", or "either"
# when the document does not say.
SIGNATURE_POSITIONS = ("start", "end", "either")


class Provider:
    """Base class of the vendor modules. Subclasses set the class facts and fill the hooks."""

    name: ClassVar[str]
    max_numbers: ClassVar[int]  # numbers per send call
    max_chars: ClassVar[int]  # characters of content the vendor accepts
    number_separator: ClassVar[str] = ","
    default_charset: ClassVar[str] = "utf-8"
    accepts_landline: ClassVar[bool] = False  # fixed-line numbers with area code
    requires_signature: ClassVar[bool] = True
    # Where the vendor's document puts the 【signature】 (see place_signature).
    signature_position: ClassVar[str] = "either"
    # The vendor's send call takes a time to send at (dxt send_time, linkws SendTime, orgws
    # SendTimer, qxs sendTime). smsq's workers never pass one: a scheduled chunk waits in
    # smsq's database and the vendor is called at its time (tasks/relay.py), so that
    # `smsq cancel` stops it until then (no vendor can call a scheduled send back), its
    # status says "scheduled", and a vendor clock ahead of ours cannot refuse it
    # (linkws -10, orgws -12). ``send(send_at=...)`` is for callers of a provider itself.
    supports_send_time: ClassVar[bool] = False
    # The vendor groups a batch's calls by a number that must be the send time in seconds
    # and unique among the account's batches (orgws Timestamp): smsq claims one when it
    # stores a batch of such an account (store/stamps.py), and every chunk and retry of
    # the batch gets it as ``SendContext.stamp``.
    batch_stamp: ClassVar[bool] = False
    poll_kinds: ClassVar[frozenset[str]] = frozenset()  # inbound, reports, blocked, balance
    # Poll kinds that share one vendor rate window (linkws: Get/SelSum/NotSend
    # share the 30 s rule). Kinds not listed are each their own family.
    poll_families: ClassVar[dict[str, str]] = {}
    min_poll_interval: ClassVar[float] = 30.0  # seconds between calls of one family
    page_sizes: ClassVar[dict[str, int]] = {}  # most items one poll returns; a full page polls again
    option_keys: ClassVar[frozenset[str]] = frozenset()  # provider-specific account keys

    def __init__(self, account: Account, client: httpx.Client | None):
        self.account = account
        self._client = client  # None: made only to check content (prepare_content), never to call

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError(f"this {self.name} provider was made without an HTTP client: it checks content only")
        return self._client

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> None:
        """Check the provider-specific account keys; raise ValueError naming the key."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} account={self.account.name!r}>"

    @property
    def charset(self) -> str:
        return self.account.charset or self.default_charset

    # -- content ---------------------------------------------------------
    def prepare_content(self, content: str) -> str:
        """Return the content as it will be sent, or raise ContentError saying why not."""
        if content is None or not content.strip():
            raise ContentError("content is empty")
        content = content.strip()
        if self.requires_signature:
            content = self.place_signature(content)
        if len(content) > self.max_chars:
            raise ContentError(
                f"content is {len(content)} characters (signature included); "
                f"{self.name} accepts at most {self.max_chars}"
            )
        self.check_charset(content)
        return content

    def place_signature(self, content: str) -> str:
        """Put the 【signature】 where the vendor's document wants it (``signature_position``).

        * Content already signed where the vendor wants it is kept as written.
        * Content with no 【…】 at either end gets the account's ``signature``
          (in front for "start", at the end for "end" and "either").
        * Content signed at the other end only: the signature is moved when it is
          surely the signature (the account's own, or the account configures
          none); a different 【…】 than the account's is refused, since it may be
          part of the text and the vendor would refuse or mis-sign the message.
        """
        position = self.signature_position
        signed_start, signed_end = SIGNATURE_AT_START.match(content), SIGNATURE_AT_END.match(content)
        if (signed_start and position != "end") or (signed_end and position != "start"):
            return content
        sig = self.account.signature
        if position == "start" and signed_end:
            found, rest = signed_end.group(2), signed_end.group(1)
        elif position == "end" and signed_start:
            found, rest = signed_start.group(1), signed_start.group(2)
        else:  # no 【…】 at either end
            if not sig:
                where = {"start": "at its start", "end": "at its end"}.get(position, "at its start or end")
                raise ContentError(
                    f"content has no signature in 【】 (e.g. 【某某科技】) {where}, "
                    f"and account {self.account.name!r} has no 'signature' configured"
                )
            return sig + content if position == "start" else content + sig
        wanted, other = ("first", "end") if position == "start" else ("last", "start")
        if sig and found != sig:
            raise ContentError(
                f"{self.name} wants the signature {wanted}, but the content has {found} at its {other} "
                f"and account {self.account.name!r} signs with {sig}: put the signature {wanted}, "
                f"or leave it out to have {sig} added"
            )
        return found + rest if position == "start" else rest + found

    def check_charset(self, content: str) -> None:
        try:
            content.encode(self.charset)
        except UnicodeEncodeError as exc:
            bad = content[exc.start : exc.end]
            raise ContentError(
                f"character {bad!r} (U+{ord(bad[0]):04X}) at position {exc.start} cannot be sent "
                f"in {self.charset} (account {self.account.name!r}); remove it or use a UTF-8 account"
            ) from None

    # -- sending ---------------------------------------------------------
    def send(
        self, numbers: list[str], content: str, send_at: datetime | None = None, context: SendContext | None = None
    ) -> SendResult:
        """One vendor call for at most ``max_numbers`` numbers. Never raises for vendor answers.

        ``send_at`` is an aware datetime in Beijing time (the vendors' clock) or None (now:
        what smsq's workers pass, see ``supports_send_time``)."""
        if not numbers:
            raise ValueError("no numbers to send to")
        if len(numbers) > self.max_numbers:
            raise ValueError(f"{len(numbers)} numbers in one {self.name} call; the limit is {self.max_numbers}")
        try:
            response = self.build_send(numbers, content, send_at, context or SendContext())
        except httpx.TransportError as exc:
            return transport_failure(exc)
        if response.status_code >= 500:
            return SendResult(
                Outcome.TRANSIENT,
                code=f"HTTP {response.status_code}",
                message="vendor server error",
                raw=response.text[:RAW_KEEP],
            )
        if response.status_code in (401, 403):
            return SendResult(
                Outcome.AUTH,
                code=f"HTTP {response.status_code}",
                message="vendor refused the credentials",
                raw=response.text[:RAW_KEEP],
            )
        if response.status_code >= 400:
            return SendResult(
                Outcome.INVALID_REQUEST,
                code=f"HTTP {response.status_code}",
                message="vendor refused the request",
                raw=response.text[:RAW_KEEP],
            )
        try:
            result = self.parse_send(response, numbers)
        except Exception as exc:  # a 200 we cannot read: it may have been accepted
            return SendResult(
                Outcome.AMBIGUOUS, code=None, message=f"unreadable vendor answer: {exc}", raw=safe_text(response)
            )
        if not result.raw:
            result.raw = safe_text(response)
        return result

    def build_send(
        self, numbers: list[str], content: str, send_at: datetime | None, context: SendContext
    ) -> httpx.Response:
        """Make the vendor call; return its response (transport errors propagate)."""
        raise NotImplementedError

    def parse_send(self, response: httpx.Response, numbers: list[str]) -> SendResult:
        raise NotImplementedError

    # -- polls: fetch the raw body first (it is journaled), parse it second --
    def fetch(self, kind: str) -> str:
        """Call the vendor's poll endpoint ``kind``; return the body text. Raises ProviderError."""
        raise ProviderError(Outcome.INVALID_REQUEST, f"{self.name} has no {kind!r} poll")

    def parse_reports(self, body: str) -> list[Report]:
        raise NotImplementedError

    def parse_inbound(self, body: str) -> list[Inbound]:
        raise NotImplementedError

    def parse_balance(self, body: str) -> float:
        """Remaining messages (or money, as the vendor counts it)."""
        raise NotImplementedError

    def parse_blocked(self, body: str) -> list[str]:
        """Numbers the vendor refuses to send to."""
        raise NotImplementedError

    def poll_family(self, kind: str) -> str:
        return self.poll_families.get(kind, kind)

    def poll_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A poll call with the transport errors classified (no automatic resend here)."""
        return self.guarded(lambda: self.client.request(method, url, **kwargs))

    @staticmethod
    def guarded(call: Callable[[], httpx.Response]) -> httpx.Response:
        """Make a non-send call; turn transport errors and HTTP errors into ProviderError."""
        try:
            response = call()
        except httpx.TransportError as exc:
            result = transport_failure(exc)
            raise ProviderError(result.outcome, result.message or "transport error") from None
        if response.status_code >= 500:
            raise ProviderError(
                Outcome.TRANSIENT,
                f"vendor server error HTTP {response.status_code}",
                code=f"HTTP {response.status_code}",
                raw=response.text,
            )
        if response.status_code in (401, 403):
            # As on a send: the vendor (or its gateway) refused us, and a poll's refusal opens
            # the account's circuit as a send's does, so that no endpoint keeps knocking.
            raise ProviderError(
                Outcome.AUTH,
                f"vendor refused the credentials HTTP {response.status_code}",
                code=f"HTTP {response.status_code}",
                raw=response.text,
            )
        if response.status_code >= 400:
            raise ProviderError(
                Outcome.INVALID_REQUEST,
                f"vendor refused the request HTTP {response.status_code}",
                code=f"HTTP {response.status_code}",
                raw=response.text,
            )
        return response


def transport_failure(exc: httpx.TransportError) -> SendResult:
    """Classify an httpx failure: did the request possibly reach the vendor?"""
    never_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
    if isinstance(exc, never_sent):
        return SendResult(Outcome.TRANSIENT, message=f"vendor unreachable: {type(exc).__name__}")
    # ReadTimeout, WriteTimeout, RemoteProtocolError, ReadError...: the request was
    # (at least partly) sent, so the vendor may have acted on it.
    return SendResult(Outcome.AMBIGUOUS, message=f"no answer after the request was sent: {type(exc).__name__}")


def safe_text(response: httpx.Response) -> str:
    try:
        return response.text[:RAW_KEEP]
    except Exception:
        return repr(response.content[:RAW_KEEP])


def classify(codes: Mapping[str, tuple[Outcome, str]], code: str, raw: str = "") -> SendResult:
    """Look a vendor code up in a module's code table; an unknown code is ambiguous on send."""
    if code in codes:
        outcome, message = codes[code]
        return SendResult(outcome, code=code, message=message, raw=raw[:RAW_KEEP])
    return SendResult(Outcome.AMBIGUOUS, code=code, message=f"unknown vendor code {code!r}", raw=raw[:RAW_KEEP])


_NUMBER_LIST = re.compile(r"[0-9,]*")


def form_body(fields: Mapping[str, str], charset: str) -> bytes:
    """``urlencode(fields, encoding=charset, errors="strict")`` as ASCII bytes, the same
    bytes, made quicker for the field that carries the numbers: urlencode quotes a
    value byte by byte in Python (0.3 ms for 100 numbers, about 6 % of a chunk's CPU
    in the worker), and digits and commas need nothing but the comma quoted."""

    def quoted(value: object) -> str:
        value = value if isinstance(value, str) else str(value)  # as urlencode does
        if _NUMBER_LIST.fullmatch(value):
            return value.replace(",", "%2C")
        return quote_plus(value, encoding=charset, errors="strict")

    return "&".join(quote_plus(str(key)) + "=" + quoted(value) for key, value in fields.items()).encode("ascii")

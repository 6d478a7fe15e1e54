"""Unit tests of the linkws provider: parsers, request building on both transports, outcomes.

Pure: no network. HTTP goes through ``httpx.MockTransport`` (zeep included: it
posts through the account's httpx client), which is also how transport faults
are forced.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from smsq.providers.base import BEIJING, Account, ContentError, Outcome, ProviderError, Secret, SendResult
from smsq.providers.linkws import (
    LinkwsProvider,
    parse_balance_text,
    parse_blocked_text,
    parse_inbound_text,
    parse_send_text,
    parse_vendor_time,
    soap_result,
)

from .conftest import POLL_TRANSPORT_FAULTS, TRANSPORT_FAULTS, raising
from .conftest import Recorder as VendorRecorder

BASE_URL = "http://vendor.test/"
PASSWORD = "pw-L1nk-778899"
SIG = "【某某科技】"
CONTENT = "您的验证码是1234,请勿泄露。【某某科技】"
TNS = "http://tempuri.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TRANSPORTS = ["soap", "http"]


def make_account(
    transport: str | None = "soap",
    signature: str | None = SIG,
    name: str = "t",
    base_url: str = BASE_URL,
    password: str = PASSWORD,
    **options,
) -> Account:
    if transport is not None:
        options["transport"] = transport
    return Account(
        name=name,
        provider="linkws",
        base_url=base_url,
        username="corp01",
        password=Secret(password),
        signature=signature,
        options=options,
    )


def envelope(operation: str, value: str | None) -> bytes:
    result = "" if value is None else f"<{operation}Result>{value}</{operation}Result>"
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        f'<{operation}Response xmlns="{TNS}">{result}</{operation}Response></soap:Body></soap:Envelope>'
    ).encode()


def vendor_reply(transport: str, operation: str, value: str) -> httpx.Response:
    """What the vendor answers on ``transport`` when the operation returns ``value``."""
    if transport == "soap":
        return httpx.Response(
            200, content=envelope(operation, value), headers={"content-type": "text/xml; charset=utf-8"}
        )
    return httpx.Response(200, content=value.encode("gb2312"), headers={"content-type": "text/html; charset=gb2312"})


def operation_of(request: httpx.Request) -> str:
    action = request.headers.get("soapaction")
    if action:
        return action.strip('"').rsplit("/", 1)[1]
    return request.url.path.rsplit("/", 1)[1].removesuffix(".aspx")


def answering(value: str):
    """A reply where the vendor's operation returns ``value``, on the transport the request came by."""

    def reply(request: httpx.Request) -> httpx.Response:
        transport = "soap" if "soapaction" in request.headers else "http"
        return vendor_reply(transport, operation_of(request), value)

    return reply


class Recorder(VendorRecorder):
    charset = "gb2312"

    def default_reply(self, request):
        return answering("1001")(request)


def make_provider(handler, transport: str | None = "soap", **account_kw) -> LinkwsProvider:
    account = make_account(transport, **account_kw)
    return LinkwsProvider(account, httpx.Client(transport=httpx.MockTransport(handler)))


# ---------------------------------------------------------------------------
# class facts and options
# ---------------------------------------------------------------------------


def test_class_facts():
    assert LinkwsProvider.max_numbers == 500
    assert LinkwsProvider.max_chars == 300
    assert LinkwsProvider.supports_send_time is True
    assert LinkwsProvider.poll_kinds == {"inbound", "balance", "blocked"}
    families = {LinkwsProvider.poll_families[k] for k in LinkwsProvider.poll_kinds}
    assert families == {"linkws-query"}  # one 30 s window for Get, SelSum and NotSend
    assert LinkwsProvider.option_keys == {"transport", "cell"}


@pytest.mark.parametrize("transport, charset", [("soap", "utf-8"), ("http", "gb2312"), (None, "utf-8")])
def test_charset_follows_transport(transport, charset):
    assert make_provider(Recorder(), transport).charset == charset


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"transport": "soap"},
        {"transport": "http"},
        {"cell": ""},
        {"cell": "0123"},
        {"transport": "http", "cell": "8"},
    ],
)
def test_validate_options_accepts(options):
    """Options it accepts make an account whose sends go through."""
    LinkwsProvider.validate_options(options)
    recorder = Recorder()
    rest = {key: value for key, value in options.items() if key != "transport"}
    result = make_provider(recorder, options.get("transport"), **rest).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.OK
    assert recorder.calls == 1


@pytest.mark.parametrize(
    "options, key",
    [
        ({"transport": "SOAP"}, "transport"),
        ({"transport": "ftp"}, "transport"),
        ({"transport": 1}, "transport"),
        ({"cell": "12a"}, "cell"),
        ({"cell": 12}, "cell"),
        ({"cell": " 1"}, "cell"),
        ({"cell": "１２"}, "cell"),  # full-width digits
    ],
)
def test_validate_options_refuses(options, key):
    with pytest.raises(ValueError) as info:
        LinkwsProvider.validate_options(options)
    assert key in str(info.value)


# ---------------------------------------------------------------------------
# parse_send_text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, batch", [("12345", "12345"), ("1", "1"), (" 987654321\r\n", "987654321"), ("007", "7")])
def test_parse_send_success(body, batch):
    result = parse_send_text(body)
    assert result.outcome is Outcome.OK
    assert result.batch_ref == batch
    assert result.vendor_ids == []  # the vendor gives one id per call, not per number


SEND_CODE_TABLE = [
    ("-1", Outcome.AUTH, "賬號未注冊"),
    ("-2", Outcome.TRANSIENT, "其他錯誤"),
    ("-3", Outcome.AUTH, "帳號或密碼錯誤"),
    ("-5", Outcome.BALANCE, "余額不足"),
    ("-6", Outcome.INVALID_REQUEST, "定時發送時間不是有效的時間格式"),
    ("-7", Outcome.INVALID_REQUEST, "提交信息末尾未加簽名"),
    ("-8", Outcome.INVALID_REQUEST, "發送內容需在1到300字之間"),
    ("-9", Outcome.INVALID_REQUEST, "發送號碼為空"),
    ("-10", Outcome.INVALID_REQUEST, "定時時間不能小于系統當前時間"),
    ("-11", Outcome.BLOCKED, "屏蔽手機號碼"),
    ("-100", Outcome.AUTH, "IP黑名單"),
    ("-102", Outcome.AUTH, "賬號黑名單"),
    ("-103", Outcome.AUTH, "IP未導白"),
]


@pytest.mark.parametrize("code, outcome, vendor_text", SEND_CODE_TABLE, ids=[c[0] for c in SEND_CODE_TABLE])
def test_parse_send_codes(code, outcome, vendor_text):
    result = parse_send_text(code)
    assert result.outcome is outcome
    assert result.code == code
    assert vendor_text in result.message
    assert result.batch_ref is None


@pytest.mark.parametrize("body, code", [("–7", "-7"), ("−3", "-3"), ("-07", "-7"), (" -11 ", "-11")])
def test_parse_send_dash_and_padding_variants(body, code):
    assert parse_send_text(body).code == code


@pytest.mark.parametrize("code", [c[0] for c in SEND_CODE_TABLE])
def test_only_minus_11_is_a_whole_call_refused_over_a_number_it_does_not_name(code):
    # 屏蔽手機號碼: one blocked number refuses all 500 and none is named, so the rest may go again.
    result = parse_send_text(code)
    assert result.refused_whole is (code == "-11")
    assert result.failed_numbers == {}
    assert parse_send_text("1001").refused_whole is False


def test_parse_send_too_fast_is_rate_limited():
    result = parse_send_text("-101")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after == 30


@pytest.mark.parametrize("body", ["0", "-4", "-99", "-104"])
def test_parse_send_unknown_code_is_ambiguous(body):
    assert parse_send_text(body).outcome is Outcome.AMBIGUOUS


MALFORMED_SEND = ["", "abc", "<html>junk", "1.5", "12|3", "--3", "+5", "١٢٣"]


@pytest.mark.parametrize("body", MALFORMED_SEND)
def test_parse_send_malformed_raises(body):
    with pytest.raises(ValueError):
        parse_send_text(body)


# ---------------------------------------------------------------------------
# poll parsers
# ---------------------------------------------------------------------------

POLL_CODE_TABLE = [
    ("-1", Outcome.AUTH),
    ("-2", Outcome.TRANSIENT),
    ("-3", Outcome.AUTH),
    ("-100", Outcome.AUTH),
    ("-101", Outcome.RATE_LIMITED),
    ("-102", Outcome.AUTH),
    ("-103", Outcome.AUTH),
    ("-77", Outcome.TRANSIENT),  # undocumented: retried, not guessed at
]


@pytest.mark.parametrize(
    "parse", [parse_inbound_text, parse_balance_text, parse_blocked_text], ids=["Get", "SelSum", "NotSend"]
)
@pytest.mark.parametrize("code, outcome", POLL_CODE_TABLE, ids=[c[0] for c in POLL_CODE_TABLE])
def test_poll_codes(parse, code, outcome):
    with pytest.raises(ProviderError) as info:
        parse(code)
    assert info.value.outcome is outcome
    assert info.value.code == code


T = datetime(2024, 5, 6, 7, 8, 9)


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param("", [], id="empty"),
        pytest.param(
            "||13812345678#收到,谢谢#2024-05-06 07:08:09#01", [("13812345678", "收到,谢谢", T, "01")], id="one"
        ),
        pytest.param(
            "||13812345678#好#2024-05-06 07:08:09#||13519876543#不要#2024-05-06 07:08:09#",
            [("13812345678", "好", T, None), ("13519876543", "不要", T, None)],
            id="two-no-ext",
        ),
        pytest.param(
            "||13812345678#价格#100#元#2024-05-06 07:08:09#8",
            [("13812345678", "价格#100#元", T, "8")],
            id="hash-in-content",
        ),
        pytest.param("||13812345678##2024-05-06 07:08:09#", [("13812345678", "", T, None)], id="empty-content"),
        pytest.param(
            "||13812345678#a||b#2024-05-06 07:08:09#||13519876543#c#2024-05-06 07:08:09#",
            [("13812345678", "a||b", T, None), ("13519876543", "c", T, None)],
            id="bars-in-content",
        ),
        pytest.param("||13812345678#x#2024-05-06 07:08:09#||", [("13812345678", "x", T, None)], id="trailing-bars"),
        pytest.param("||13812345678#x#2024/5/6 7:08:09#", [("13812345678", "x", T, None)], id="aspnet-zh-time"),
        pytest.param("||13812345678#x#20240506070809#", [("13812345678", "x", T, None)], id="14-digit-time"),
        pytest.param("||13812345678#x#yesterday#", [("13812345678", "x", None, None)], id="unknown-time-kept"),
        pytest.param(
            "||13812345678# 前后 空格 #2024-05-06 07:08:09# 9 ",
            [("13812345678", " 前后 空格 ", T, "9")],
            id="content-spaces-kept",
        ),
    ],
)
def test_parse_inbound(body, expected):
    messages = parse_inbound_text(body)
    assert [(m.mobile, m.content, m.received_at, m.extra) for m in messages] == expected
    assert all(m.vendor_id is None for m in messages)  # the vendor gives no message id


@pytest.mark.parametrize("body", ["13812345678#x#t#e", "||13812345678#x#t", "||13812345678", "||#x#t#e", "<html>junk"])
def test_parse_inbound_malformed(body):
    with pytest.raises(ValueError):
        parse_inbound_text(body)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-06 07:08:09", T),
        ("2024/05/06 07:08:09", T),
        ("2024-05-06T07:08:09", T),
        ("2024-05-06 07:08:09.250", T.replace(microsecond=250000)),
        ("2024-05-06 07:08", T.replace(second=0)),
        ("", None),
        ("06/05/2024", None),
    ],
)
def test_parse_vendor_time_is_naive_beijing(text, expected):
    assert parse_vendor_time(text) == expected


@pytest.mark.parametrize("body, expected", [("12345", 12345), ("0", 0), (" 7\r\n", 7)])
def test_parse_balance(body, expected):
    assert parse_balance_text(body) == expected


@pytest.mark.parametrize("body", ["", "abc", "12.5", "<html>junk", "1,2"])
def test_parse_balance_junk(body):
    with pytest.raises(ValueError):
        parse_balance_text(body)


@pytest.mark.parametrize(
    "body, expected",
    [
        ("", []),
        (
            "1300000001,13000000002,13000000003,13000000004",  # the vendor's example, typo included
            ["1300000001", "13000000002", "13000000003", "13000000004"],
        ),
        ("13800138000", ["13800138000"]),
        (" 13800138000 , 13900139000,\r\n", ["13800138000", "13900139000"]),
        ("13800138000,13800138000", ["13800138000"]),
    ],
)
def test_parse_blocked(body, expected):
    assert parse_blocked_text(body) == expected


@pytest.mark.parametrize("body", ["abc", "<html>junk", "13800138000;13900139000", "1380013800x"])
def test_parse_blocked_junk(body):
    with pytest.raises(ValueError):
        parse_blocked_text(body)


# ---------------------------------------------------------------------------
# SOAP envelopes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, operation, expected",
    [
        (envelope("BatchSend2", "1001"), "BatchSend2", "1001"),
        (envelope("SelSum", "-101"), "SelSum", "-101"),
        (envelope("Get", "||13800138000#a &lt;b&gt; &amp; c#t#"), "Get", "||13800138000#a <b> & c#t#"),
        (envelope("Get", ""), "Get", ""),
        (envelope("NotSend", None), "NotSend", ""),  # ASP.NET omits a null string
        (envelope("Get", "你好").decode("utf-8"), "Get", "你好"),  # journaled text
        (envelope("Get", "你好").decode("utf-8").replace("utf-8", "gb2312"), "Get", "你好"),
    ],
    ids=["int", "code", "escaped", "empty-string", "null-string", "text", "text-declaring-gb2312"],
)
def test_soap_result(body, operation, expected):
    assert soap_result(body, operation) == expected


FAULT = (
    f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault><faultcode>soap:Server</faultcode>'
    f"<faultstring>Server was unable to process request.</faultstring></soap:Fault></soap:Body>"
    f"</soap:Envelope>"
).encode()
ENTITY_BOMB = (
    f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><SelSumResponse xmlns="{TNS}">'
    f"<SelSumResult>&b;</SelSumResult></SelSumResponse></soap:Body></soap:Envelope>"
).encode()


@pytest.mark.parametrize(
    "body, operation",
    [
        (FAULT, "SelSum"),
        (ENTITY_BOMB, "SelSum"),
        (envelope("SelSum", None), "SelSum"),  # an int result cannot be null
        (envelope("Get", "x"), "SelSum"),  # the answer of another operation
        (b"<html><body>Service Unavailable</body></html>", "Get"),
        (b"12345", "SelSum"),
        (b"", "Get"),
    ],
    ids=["fault", "dtd", "missing-int", "other-operation", "html", "bare-text", "empty"],
)
def test_soap_result_unreadable(body, operation):
    with pytest.raises(ValueError):
        soap_result(body, operation)


# ---------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------


def test_http_send_request():
    recorder = Recorder()
    provider = make_provider(recorder, "http", cell="0123")
    result = provider.send(["13800138000", "13900139000"], CONTENT)
    assert result.outcome is Outcome.OK and result.batch_ref == "1001" and result.accepted == 2
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "ws/BatchSend2.aspx"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded; charset=gb2312"
    assert PASSWORD not in str(request.url)
    assert recorder.form() == {
        "CorpID": ["corp01"],
        "Pwd": [PASSWORD],
        "Mobile": ["13800138000,13900139000"],
        "Content": [CONTENT],
        "Cell": ["0123"],
        "SendTime": [""],
    }
    # percent-encoded GB2312 bytes, not UTF-8
    assert urllib.parse.quote_plus(CONTENT, encoding="gb2312") in request.content.decode("ascii")
    assert urllib.parse.quote_plus(CONTENT, encoding="utf-8") not in request.content.decode("ascii")


def test_soap_send_request():
    recorder = Recorder()
    content = "您好😀 <&> 【某某科技】"
    provider = make_provider(recorder, "soap", cell="7")
    result = provider.send(["13800138000", "13900139000"], content)
    assert result.outcome is Outcome.OK and result.batch_ref == "1001"
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "ws/LinkWS.asmx"
    assert request.headers["soapaction"] == '"http://tempuri.org/BatchSend2"'
    assert request.headers["content-type"] == "text/xml; charset=utf-8"
    assert PASSWORD not in str(request.url)
    assert "您好😀 &lt;&amp;&gt;".encode() in request.content  # UTF-8, XML-escaped
    assert recorder.soap() == (
        "BatchSend2",
        {
            "CorpID": "corp01",
            "Pwd": PASSWORD,
            "Mobile": "13800138000,13900139000",
            "Content": content,
            "Cell": "7",
            "SendTime": "",
        },
    )


@pytest.mark.parametrize(
    "base_url, asmx, aspx",
    [
        ("http://vendor.test", "http://vendor.test/ws/LinkWS.asmx", "http://vendor.test/ws/BatchSend2.aspx"),
        ("https://h:8443/", "https://h:8443/ws/LinkWS.asmx", "https://h:8443/ws/BatchSend2.aspx"),
        ("https://h/ws/", "https://h/ws/LinkWS.asmx", "https://h/ws/BatchSend2.aspx"),
        ("https://h/ws/LinkWS.asmx", "https://h/ws/LinkWS.asmx", "https://h/ws/BatchSend2.aspx"),
        ("https://h/sms/ws/linkws.asmx?wsdl", "https://h/sms/ws/LinkWS.asmx", "https://h/sms/ws/BatchSend2.aspx"),
        ("https://h/sms/", "https://h/sms/ws/LinkWS.asmx", "https://h/sms/ws/BatchSend2.aspx"),
    ],
)
def test_base_url_is_the_site_root(base_url, asmx, aspx):
    for transport, expected in (("soap", asmx), ("http", aspx)):
        recorder = Recorder()
        make_provider(recorder, transport, base_url=base_url).send(["13800138000"], CONTENT)
        assert str(recorder.requests[0].url) == expected


UTC = UTC


SOON = datetime.now(BEIJING) + timedelta(seconds=30)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "send_at, expected",
    [
        pytest.param(None, "", id="immediate"),
        pytest.param(datetime(2096, 9, 12, 15, 24, 35, tzinfo=BEIJING), "20960912152435", id="vendor-example"),
        pytest.param(datetime(2099, 1, 2, 3, 4, 5, tzinfo=BEIJING), "20990102030405", id="zero-padded"),
        pytest.param(datetime(2099, 1, 1, 18, 30, tzinfo=UTC), "20990102023000", id="utc-to-beijing"),
        pytest.param(datetime(2099, 1, 2, 3, 4, 5), "20990102030405", id="naive-is-beijing"),
        pytest.param(datetime(2006, 9, 12, 15, 24, 35, tzinfo=BEIJING), "", id="past-sent-now"),
        pytest.param(SOON, "", id="under-a-minute-sent-now"),
    ],
)
def test_send_time(transport, send_at, expected):
    recorder = Recorder()
    make_provider(recorder, transport).send(["13800138000"], CONTENT, send_at=send_at)
    sent = recorder.form()["SendTime"][0] if transport == "http" else recorder.soap()[1]["SendTime"]
    assert sent == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("count, calls", [(500, 1), (501, 0), (1200, 0)])
def test_send_number_limit(transport, count, calls):
    recorder = Recorder()
    numbers = [f"138{i:08d}" for i in range(count)]
    provider = make_provider(recorder, transport)
    if calls:
        assert provider.send(numbers, CONTENT).outcome is Outcome.OK
        sent = recorder.form()["Mobile"][0] if transport == "http" else recorder.soap()[1]["Mobile"]
        assert sent == ",".join(numbers)
    else:
        with pytest.raises(ValueError):
            provider.send(numbers, CONTENT)
    assert recorder.calls == calls


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_duplicates_are_filtered_before_submitting(transport):
    recorder = Recorder()
    result = make_provider(recorder, transport).send(["13800138000", "13900139000", "13800138000"], CONTENT)
    sent = recorder.form()["Mobile"][0] if transport == "http" else recorder.soap()[1]["Mobile"]
    assert sent == "13800138000,13900139000"
    assert result.accepted == 2


POLLS = [
    ("inbound", "Get", "||13800138000#收到#2024-05-06 07:08:09#", "parse_inbound"),
    ("balance", "SelSum", "888", "parse_balance"),
    ("blocked", "NotSend", "13800138000,13900139000", "parse_blocked"),
]


@pytest.mark.parametrize("kind, operation, value, parse", POLLS, ids=[p[0] for p in POLLS])
def test_http_poll_request(kind, operation, value, parse):
    recorder = Recorder(lambda request: vendor_reply("http", operation, value))
    provider = make_provider(recorder, "http")
    body = provider.fetch(kind)
    assert body == value  # GB2312 on the wire, text here
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}ws/{operation}.aspx"
    assert PASSWORD not in str(request.url)
    assert recorder.form() == {"CorpID": ["corp01"], "Pwd": [PASSWORD]}
    assert getattr(provider, parse)(body)


@pytest.mark.parametrize("kind, operation, value, parse", POLLS, ids=[p[0] for p in POLLS])
def test_soap_poll_request(kind, operation, value, parse):
    recorder = Recorder(lambda request: vendor_reply("soap", operation, value))
    provider = make_provider(recorder, "soap")
    body = provider.fetch(kind)
    assert body == envelope(operation, value).decode("utf-8")  # the whole envelope is journaled
    (request,) = recorder.requests
    assert str(request.url) == BASE_URL + "ws/LinkWS.asmx"
    assert request.headers["soapaction"] == f'"http://tempuri.org/{operation}"'
    assert recorder.soap() == (operation, {"CorpID": "corp01", "Pwd": PASSWORD})
    assert getattr(provider, parse)(body)


def test_http_answer_is_read_leniently_as_gb18030():
    # "镕" is GBK/GB18030 but not GB2312: a stray one must not break a handed-out body.
    value = "||13800138000#朱镕基#2024-05-06 07:08:09#"
    recorder = Recorder(lambda request: httpx.Response(200, content=value.encode("gb18030")))
    provider = make_provider(recorder, "http")
    (message,) = provider.parse_inbound(provider.fetch("inbound"))
    assert message.content == "朱镕基"


def test_unknown_poll_kind():
    with pytest.raises(ProviderError) as info:
        make_provider(Recorder()).fetch("reports")
    assert info.value.outcome is Outcome.INVALID_REQUEST


# ---------------------------------------------------------------------------
# Transport faults and HTTP status, through Provider.send and fetch
# ---------------------------------------------------------------------------

SEND_FAULTS = [
    *TRANSPORT_FAULTS,
    pytest.param(lambda r: httpx.Response(500, content=FAULT), Outcome.TRANSIENT, id="http-500-fault"),
    pytest.param(lambda r: httpx.Response(200, content=FAULT), Outcome.AMBIGUOUS, id="fault-in-200"),
    pytest.param(answering("-2"), Outcome.TRANSIENT, id="other-error"),
    pytest.param(answering("-5"), Outcome.BALANCE, id="balance"),
    pytest.param(answering("-4"), Outcome.AMBIGUOUS, id="unknown-code"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reply, outcome", SEND_FAULTS)
def test_send_fault_outcome(transport, reply, outcome):
    recorder = Recorder(reply)
    result = make_provider(recorder, transport).send(["13800138000"], CONTENT)
    assert isinstance(result, SendResult)
    assert result.outcome is outcome
    assert recorder.calls == 1  # the provider never resends by itself
    assert PASSWORD not in (result.message or "") + result.raw + repr(result)


POLL_FAULTS = [
    *POLL_TRANSPORT_FAULTS,
    pytest.param(lambda r: httpx.Response(500, content=FAULT), Outcome.TRANSIENT, id="http-500-fault"),
    pytest.param(answering("-3"), Outcome.AUTH, id="wrong-password"),
    pytest.param(answering("-101"), Outcome.RATE_LIMITED, id="too-fast"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["inbound", "balance", "blocked"])
@pytest.mark.parametrize("reply, outcome", POLL_FAULTS)
def test_poll_fault_outcome(transport, kind, reply, outcome):
    recorder = Recorder(reply)
    provider = make_provider(recorder, transport)
    with pytest.raises(ProviderError) as info:
        getattr(provider, f"parse_{kind}")(provider.fetch(kind))
    assert info.value.outcome is outcome
    assert recorder.calls == 1
    assert PASSWORD not in repr(info.value) + str(info.value) + info.value.raw


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_poll_garbled_body_is_unreadable(transport):
    recorder = Recorder(lambda request: httpx.Response(200, text="<html>junk</html>"))
    provider = make_provider(recorder, transport)
    with pytest.raises(ValueError):
        provider.parse_balance(provider.fetch("balance"))


# ---------------------------------------------------------------------------
# prepare_content
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param("您的验证码是1234", "您的验证码是1234" + SIG, id="signature-appended"),
        pytest.param("  您的验证码是1234 \n", "您的验证码是1234" + SIG, id="stripped-then-signed"),
        pytest.param(SIG + "您的验证码是1234", "您的验证码是1234" + SIG, id="own-signature-moved-to-end"),
        pytest.param(SIG + " 您好 ", "您好" + SIG, id="own-signature-moved-spaces-dropped"),
        pytest.param("您的验证码是1234【测试】", "您的验证码是1234【测试】", id="at-end-kept"),
        pytest.param("【活动】您好【测试】", "【活动】您好【测试】", id="both-ends-kept"),
        pytest.param("【某某科技】", "【某某科技】", id="signature-only"),
        pytest.param("好" * 294 + SIG, "好" * 294 + SIG, id="300-characters"),
        pytest.param(SIG + "好" * 294, "好" * 294 + SIG, id="300-characters-moved"),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prepare_content(transport, content, expected):
    assert make_provider(Recorder(), transport).prepare_content(content) == expected


@pytest.mark.parametrize(
    "content, expected",
    [("【A】x", "x【A】"), ("x【A】", "x【A】"), ("【A】", "【A】"), ("【B】a【A】", "【B】a【A】")],
)
def test_without_an_account_signature_a_leading_one_is_moved_to_the_end(content, expected):
    assert make_provider(Recorder(), "soap", signature=None).prepare_content(content) == expected


@pytest.mark.parametrize(
    "content, transport, account_kw, fragments",
    [
        pytest.param("您好", "soap", {"signature": None, "name": "shop"}, ["'shop'", "signature"], id="no-signature"),
        pytest.param("a【A】b", "soap", {"signature": None}, ["no signature", "at its end"], id="bracket-inside"),
        pytest.param(
            "【测试】您好",
            "http",
            {"name": "shop"},
            ["linkws wants the signature last", "【测试】 at its start", "'shop'", SIG],
            id="other-signature-at-start",
        ),
        pytest.param("好" * 295 + SIG, "soap", {}, ["301", "300"], id="301-characters"),
        pytest.param("好" * 295, "http", {}, ["301", "300"], id="301-with-appended-signature"),
        pytest.param("你好😀", "http", {}, ["😀", "U+1F600", "gb2312", "soap"], id="emoji-http"),
        pytest.param("朱镕基", "http", {}, ["镕", "gb2312"], id="gbk-only-character-http"),
        pytest.param("你好\x07", "soap", {}, ["U+0007", "SOAP"], id="control-character-soap"),
        pytest.param("", "soap", {}, ["empty"], id="empty"),
        pytest.param(None, "http", {}, ["empty"], id="none"),
    ],
)
def test_prepare_content_refused(content, transport, account_kw, fragments):
    with pytest.raises(ContentError) as info:
        make_provider(Recorder(), transport, **account_kw).prepare_content(content)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_prepare_content_without_a_client():
    # The producer checks content with a provider that has no HTTP client.
    provider = LinkwsProvider(make_account("soap"), None)
    assert provider.prepare_content(SIG + "你好😀") == "你好😀" + SIG


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def test_non_gb2312_password_is_refused_without_showing_it():
    provider = make_provider(Recorder(), "http", password="pässwörd😀")
    with pytest.raises(ValueError) as info:
        provider.send(["13800138000"], CONTENT)
    assert "Pwd" in str(info.value)
    assert "😀" not in str(info.value) and "pässwörd" not in str(info.value)


def _shown_results() -> list[SendResult]:
    results = [parse_send_text("1001"), parse_send_text("-3")]
    for transport in TRANSPORTS:
        results.append(make_provider(Recorder(raising(httpx.ReadTimeout)), transport).send(["13800138000"], CONTENT))
    return results


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(lambda: repr(make_account()), id="repr-account"),
        pytest.param(lambda: repr(make_provider(Recorder())), id="repr-provider"),
        pytest.param(lambda: repr(vars(make_provider(Recorder()))), id="provider-attributes"),
        pytest.param(lambda: " ".join(repr(r) + (r.message or "") for r in _shown_results()), id="send-results"),
    ],
)
def test_password_not_shown(show):
    assert PASSWORD not in show()


def test_zeep_service_holds_no_password():
    provider = make_provider(Recorder())
    provider.send(["13800138000"], CONTENT)
    assert PASSWORD not in repr(vars(provider)) + repr(provider._service) + repr(provider._zeep)

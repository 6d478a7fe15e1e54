"""Unit tests of the orgws provider: SOAP answer parsers, requests zeep builds, outcome classification.

Pure: no network. HTTP goes through ``httpx.MockTransport`` (zeep posts through
the account's httpx client), which is also how transport faults are forced.
"""

from __future__ import annotations

import calendar
import logging
import time
from datetime import UTC, datetime

import httpx
import pytest

from smsq.providers.base import BEIJING, Account, ContentError, Outcome, ProviderError, Secret, SendContext, SendResult
from smsq.providers.orgws import (
    LOGIN_CODES,
    SEND_CODES,
    OrgwsProvider,
    batch_timestamp,
    parse_balance_xml,
    parse_login_xml,
    parse_send_xml,
    parse_update_psw_xml,
    schedule_text,
    service_address,
)

from .conftest import POLL_TRANSPORT_FAULTS, TRANSPORT_FAULTS, raising
from .conftest import Recorder as VendorRecorder

BASE_URL = "http://vendor.test/Service.asmx"
PASSWORD = "pw-Org-55721"
NEW_PASSWORD = "pw-New-99110"
SIG = "【某某科技】"
ORG_ID = 10001
TNS = "http://tempuri.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CONTENT = "【某某科技】您的验证码是1234,请勿泄露。"
NUMBERS = ["13800138000", "13900139000", "13700137000"]


def make_account(
    options=None, base_url: str = BASE_URL, charset: str | None = None, signature: str | None = SIG
) -> Account:
    return Account(
        name="t",
        provider="orgws",
        base_url=base_url,
        username="u",
        password=Secret(PASSWORD),
        charset=charset,
        signature=signature,
        options={"org_id": ORG_ID} if options is None else options,
    )


def envelope(operation: str, result: str) -> str:
    """An ASP.NET-style answer: <OpResponse><OpResult>result</OpResult></OpResponse>."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soap:Body><{operation}Response xmlns="{TNS}"><{operation}Result>{result}</{operation}Result>'
        f"</{operation}Response></soap:Body></soap:Envelope>"
    )


def send_state(state: int, batch_id: int = 0, fail: str | None = None, operation: str = "SendMessage") -> str:
    fail_el = f"<FailPhone>{fail}</FailPhone>" if fail is not None else ""
    return envelope(operation, f"{fail_el}<Id>{batch_id}</Id><State>{state}</State>")


def balance_state(state: int, balance: int = 0) -> str:
    return envelope(
        "GetBalance", f"<Balance>{balance}</Balance><Sended>5</Sended><State>{state}</State><Totaled>100</Totaled>"
    )


class Recorder(VendorRecorder):
    def default_reply(self, request):
        return xml_response(send_state(1, 7001))


def xml_response(text: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=text.encode("utf-8"), headers={"content-type": "text/xml; charset=utf-8"})


def make_provider(handler=None, **account_kw) -> OrgwsProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler or Recorder()))
    return OrgwsProvider(make_account(**account_kw), client)


CTX = SendContext(batch_id=5, chunk_seq=0, attempt=1, batch_created_at=datetime(2025, 3, 8, 2, 20, 0))


# ---------------------------------------------------------------------------
# parse_send_xml
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["SendMessage", "SendTimer", "SendMessageExt"])
def test_parse_send_success(operation):
    result = parse_send_xml(send_state(1, 7001, operation=operation), NUMBERS)
    assert result.outcome is Outcome.OK
    assert (result.code, result.batch_ref) == ("1", "7001")
    assert (result.accepted, result.rejected) == (3, 0)
    assert result.failed_numbers == {}
    assert result.vendor_ids == []  # one batch id, none per number
    assert "发送短信成功" in result.message


@pytest.mark.parametrize(
    "fail, failed",
    [
        pytest.param("13900139000", ["13900139000"], id="one"),
        pytest.param("13900139000;13700137000", ["13900139000", "13700137000"], id="two"),
        pytest.param("13900139000;", ["13900139000"], id="trailing-separator"),
        pytest.param(" 13900139000 ; 13700137000 ", ["13900139000", "13700137000"], id="spaces"),
        pytest.param("+8613900139000", ["13900139000"], id="vendor-spelling-matched-to-ours"),
        pytest.param("", [], id="empty"),
    ],
)
def test_parse_send_fail_phone_is_per_number(fail, failed):
    result = parse_send_xml(send_state(1, 7001, fail), NUMBERS)
    assert result.outcome is Outcome.OK
    assert list(result.failed_numbers) == failed
    assert (result.accepted, result.rejected) == (3 - len(failed), len(failed))


@pytest.mark.parametrize(
    "state, outcome, vendor_text",
    [
        (-1, Outcome.TRANSIENT, "发送失败"),
        (-5, Outcome.INVALID_REQUEST, "发送短信内容为空"),
        (-6, Outcome.INVALID_REQUEST, "短信内容过长"),
        (-7, Outcome.INVALID_REQUEST, "发送号码为空"),
        (-8, Outcome.BALANCE, "余额不足"),
        (-9, Outcome.TRANSIENT, "接收数据失败"),
        (-10, Outcome.INVALID_REQUEST, "号码错误"),
        (-11, Outcome.INVALID_REQUEST, "定时发送时间或格式错误"),
        (-12, Outcome.INVALID_REQUEST, "定时时间必须大于当前调用时间"),
        (-13, Outcome.BLOCKED, "内容信息含关键字"),
        (-100, Outcome.AMBIGUOUS, "客户端获取状态失败"),
        (0, Outcome.AUTH, "帐户处于禁止使用状态"),
        (-2, Outcome.AUTH, "调用的参数有为空值"),  # the account's parameters: every call alike
        (-3, Outcome.AUTH, "机构代码、用户名或密码错误"),
        (-4, Outcome.AUTH, "不是普通帐户"),
        (-30, Outcome.AUTH, "非绑定IP"),
    ],
)
def test_parse_send_state_codes(state, outcome, vendor_text):
    result = parse_send_xml(send_state(state), NUMBERS)
    assert result.outcome is outcome
    assert result.code == str(state)
    assert vendor_text in result.message
    assert result.batch_ref is None


def test_every_spec_code_is_in_the_tables():
    assert set(SEND_CODES) == {
        "1",
        "-1",
        "-5",
        "-6",
        "-7",
        "-8",
        "-9",
        "-10",
        "-11",
        "-12",
        "-13",
        "-100",
        "0",
        "-2",
        "-3",
        "-4",
        "-30",
    }
    assert set(LOGIN_CODES) == {"0", "-2", "-3", "-4", "-30"}


@pytest.mark.parametrize("keywords", ["法轮功", "代开发票;六合彩"])
def test_parse_send_minus_13_keywords_go_in_the_message_not_the_numbers(keywords):
    result = parse_send_xml(send_state(-13, fail=keywords), NUMBERS)
    assert result.outcome is Outcome.BLOCKED
    assert keywords in result.message
    assert result.failed_numbers == {}


def test_parse_send_minus_10_names_the_bad_numbers():
    result = parse_send_xml(send_state(-10, fail="12345"), ["12345"])
    assert result.outcome is Outcome.INVALID_REQUEST
    assert list(result.failed_numbers) == ["12345"]
    assert result.refused_whole  # 发送失败: 号码错误: the others may be sent again


@pytest.mark.parametrize("fail", ["13900139000", ""])
def test_parse_send_minus_10_refuses_the_whole_call_named_or_not(fail):
    result = parse_send_xml(send_state(-10, fail=fail), NUMBERS)
    assert (result.outcome, result.refused_whole) == (Outcome.INVALID_REQUEST, True)
    assert list(result.failed_numbers) == ([fail] if fail else [])


@pytest.mark.parametrize("state", [1, -1, -5, -7, -8, -9, -11, -12, -13, -100, 0, -2, -3, -30])
def test_no_other_state_is_a_whole_call_refused_over_a_number(state):
    assert parse_send_xml(send_state(state, 7001 if state == 1 else 0), NUMBERS).refused_whole is False


@pytest.mark.parametrize("state", [2, 1001, -99, -14])
def test_parse_send_unknown_state_is_ambiguous(state):
    result = parse_send_xml(send_state(state), NUMBERS)
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.code == str(state)


def test_parse_send_accepts_other_namespaces_and_prefixes():
    text = (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><x:SendMessageResponse xmlns:x="urn:other">'
        f"<x:SendMessageResult><x:Id>9</x:Id><x:State>1</x:State></x:SendMessageResult>"
        f"</x:SendMessageResponse></s:Body></s:Envelope>"
    )
    assert parse_send_xml(text, NUMBERS).batch_ref == "9"


MALFORMED_SEND = [
    pytest.param("", id="empty"),
    pytest.param("<html><body>Runtime Error</body></html>", id="html"),
    pytest.param("1", id="bare-code"),
    pytest.param("<soap:Envelope xmlns:soap='x'>", id="truncated"),
    pytest.param('<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body/></Envelope>', id="soap-1.2"),
    pytest.param(f'<soap:Envelope xmlns:soap="{SOAP_ENV}"/>', id="no-body"),
    pytest.param(f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body/></soap:Envelope>', id="empty-body"),
    pytest.param(envelope("GetBalance", "<State>1</State>"), id="other-operation"),
    pytest.param(envelope("SendMessage", "<Id>1</Id>"), id="no-state"),
    pytest.param(envelope("SendMessage", "<Id>1</Id><State>ok</State>"), id="state-not-int"),
    pytest.param(
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><SendMessageResponse xmlns="{TNS}"/>'
        f"</soap:Body></soap:Envelope>",
        id="no-result",
    ),
    pytest.param(
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault><faultcode>soap:Server'
        f"</faultcode><faultstring>boom</faultstring></soap:Fault></soap:Body></soap:Envelope>",
        id="fault-in-a-200",
    ),
    pytest.param(
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "1">]>'
        + envelope("SendMessage", "<Id>1</Id><State>&e;</State>").split("?>", 1)[1],
        id="doctype",
    ),
]


@pytest.mark.parametrize("body", MALFORMED_SEND)
def test_parse_send_malformed_raises(body):
    with pytest.raises(ValueError):
        parse_send_xml(body, NUMBERS)


@pytest.mark.parametrize("body", MALFORMED_SEND)
def test_send_malformed_answer_is_ambiguous(body):
    recorder = Recorder(lambda request: xml_response(body))
    result = make_provider(recorder).send(["13800138000"], CONTENT, context=CTX)
    assert result.outcome is Outcome.AMBIGUOUS
    assert recorder.calls == 1


# ---------------------------------------------------------------------------
# balance, login, password change
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("balance", [0, 1, 987654])
def test_parse_balance(balance):
    state = parse_balance_xml(balance_state(1001, balance))
    assert (state.balance, state.sended, state.state, state.totaled) == (balance, 5, 1001, 100)
    assert make_provider().parse_balance(balance_state(1001, balance)) == balance


POLL_ERRORS = [
    (0, Outcome.AUTH, "帐户处于禁止使用状态"),
    (-2, Outcome.AUTH, "调用的参数有为空值"),  # the account's parameters: every call alike
    (-3, Outcome.AUTH, "机构代码、用户名或密码错误"),
    (-4, Outcome.AUTH, "不是普通帐户"),
    (-30, Outcome.AUTH, "非绑定IP"),
    (-77, Outcome.TRANSIENT, "unknown vendor code -77"),
]


@pytest.mark.parametrize("state, outcome, vendor_text", POLL_ERRORS)
def test_parse_balance_codes(state, outcome, vendor_text):
    with pytest.raises(ProviderError) as info:
        parse_balance_xml(balance_state(state))
    assert (info.value.outcome, info.value.code) == (outcome, str(state))
    assert vendor_text in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(envelope("GetBalance", "").replace("<GetBalanceResult></GetBalanceResult>", ""), id="no-result"),
        pytest.param(
            envelope("GetBalance", "").replace("<GetBalanceResult>", '<GetBalanceResult xsi:nil="true">'),
            id="nil-result",
        ),
        pytest.param(
            f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault><faultcode>soap:Server'
            f"</faultcode><faultstring>x</faultstring></soap:Fault></soap:Body></soap:Envelope>",
            id="fault",
        ),
    ],
)
def test_parse_balance_empty_answer_is_transient(body):
    with pytest.raises(ProviderError) as info:
        parse_balance_xml(body)
    assert info.value.outcome is Outcome.TRANSIENT


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("<html>junk</html>", id="html"),
        pytest.param(envelope("GetBalance", "<State>1001</State>"), id="no-balance"),
        pytest.param(
            envelope("GetBalance", "<Balance>x</Balance><Sended>0</Sended><State>1</State><Totaled>0</Totaled>"),
            id="balance-not-int",
        ),
        pytest.param(send_state(1), id="send-answer"),
    ],
)
def test_parse_balance_junk(body):
    with pytest.raises(ValueError):
        parse_balance_xml(body)


@pytest.mark.parametrize("account_id", [1, 1001])
def test_parse_login(account_id):
    assert parse_login_xml(envelope("UserLogin", str(account_id))) == account_id


@pytest.mark.parametrize("code, outcome, vendor_text", POLL_ERRORS)
def test_parse_login_codes(code, outcome, vendor_text):
    with pytest.raises(ProviderError) as info:
        parse_login_xml(envelope("UserLogin", str(code)))
    assert (info.value.outcome, info.value.code) == (outcome, str(code))
    assert vendor_text in str(info.value)


def test_parse_login_empty_value_is_call_failed():
    with pytest.raises(ProviderError) as info:
        parse_login_xml(envelope("UserLogin", ""))
    assert info.value.outcome is Outcome.TRANSIENT
    assert "调用接口失败" in str(info.value)


@pytest.mark.parametrize(
    "code, outcome",
    [
        (-1, Outcome.INVALID_REQUEST),
        (-3, Outcome.AUTH),
        (0, Outcome.AUTH),
        (-30, Outcome.AUTH),
        (-2, Outcome.AUTH),
        (5, Outcome.TRANSIENT),
    ],
)
def test_parse_update_psw_codes(code, outcome):
    assert parse_update_psw_xml(envelope("UpdatePsw", "1")) is None
    with pytest.raises(ProviderError) as info:
        parse_update_psw_xml(envelope("UpdatePsw", str(code)))
    assert (info.value.outcome, info.value.code) == (outcome, str(code))


# ---------------------------------------------------------------------------
# Requests zeep builds
# ---------------------------------------------------------------------------


def test_send_message_request():
    recorder = Recorder()
    result = make_provider(recorder).send(NUMBERS, CONTENT, context=CTX)
    assert result.outcome is Outcome.OK and result.batch_ref == "7001"
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL
    assert PASSWORD not in str(request.url)
    assert request.headers["soapaction"] == '"http://tempuri.org/SendMessage"'
    assert request.headers["content-type"] == "text/xml; charset=utf-8"
    assert request.content.decode("utf-8")  # UTF-8 on the wire
    assert CONTENT.encode("utf-8") in request.content
    assert recorder.soap() == (
        "SendMessage",
        {
            "Id": str(ORG_ID),
            "Name": "u",
            "Psw": PASSWORD,
            "Message": CONTENT,
            "Phone": "13800138000;13900139000;13700137000",
            "Timestamp": str(batch_timestamp(CTX)),
        },
    )


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("【测试】a<b>&c;d'e\"f", id="xml-metacharacters"),
        pytest.param("【测试】第一行\n第二行", id="newline"),
        pytest.param("【测试】]]><![CDATA[x", id="cdata-lookalike"),
        pytest.param("【测试】价格:￥100,折扣「八折」😀", id="full-width-and-emoji"),
    ],
)
def test_send_content_survives_the_envelope(content):
    recorder = Recorder()
    make_provider(recorder).send(["13800138000"], content, context=CTX)
    assert recorder.soap()[1]["Message"] == content


@pytest.mark.parametrize(
    "base_url, address",
    [
        ("http://vendor.test/Service.asmx", "http://vendor.test/Service.asmx"),
        ("http://vendor.test/ws/Sms.asmx?wsdl", "http://vendor.test/ws/Sms.asmx"),
        ("http://vendor.test/ws/Sms.asmx?WSDL", "http://vendor.test/ws/Sms.asmx"),
        ("https://vendor.test:8443/", "https://vendor.test:8443/"),
    ],
)
def test_service_address_is_the_base_url(base_url, address):
    assert service_address(base_url) == address
    recorder = Recorder()
    make_provider(recorder, base_url=base_url).send(["13800138000"], CONTENT, context=CTX)
    assert str(recorder.requests[0].url) == address


def test_timestamp_is_the_batch_stamp_for_every_chunk_and_retry_of_a_batch():
    recorder = Recorder()
    provider = make_provider(recorder)
    created = datetime(2025, 3, 8, 2, 20, 0, 987654)
    for seq, attempt in [(0, 1), (1, 1), (2, 1), (1, 2), (1, 3)]:
        provider.send(["13800138000"], CONTENT, context=SendContext(5, seq, attempt, created, NOW + 1))
    stamps = [recorder.soap(i)[1]["Timestamp"] for i in range(recorder.calls)]
    assert stamps == [str(NOW + 1)] * 5


def test_two_batches_created_in_the_same_second_send_the_stamps_they_took():
    recorder = Recorder()
    provider = make_provider(recorder)
    created = datetime(2025, 3, 8, 2, 20, 0, 100)
    for batch_id, stamp in ((41, NOW), (42, NOW + 1)):  # the second took the next free second
        provider.send(["13800138000"], CONTENT, context=SendContext(batch_id, 0, 1, created, stamp))
    assert [int(recorder.soap(i)[1]["Timestamp"]) for i in range(2)] == [NOW, NOW + 1]


NOW = calendar.timegm((2025, 3, 8, 2, 20, 0))


def test_the_provider_asks_for_a_stamp_per_batch():
    assert OrgwsProvider.batch_stamp


@pytest.mark.parametrize(
    "created",
    [
        pytest.param(datetime(2025, 3, 8, 2, 20, 0), id="naive-utc"),
        pytest.param(datetime(2025, 3, 8, 10, 20, 0, tzinfo=BEIJING), id="aware-beijing"),
        pytest.param(datetime(2025, 3, 8, 2, 20, 0, 999999), id="microseconds-dropped"),
    ],
)
def test_a_batch_without_a_stamp_sends_its_creation_second(created):
    # stored before smsq kept stamps: still one value for every call of the batch
    assert batch_timestamp(SendContext(7, 0, 1, created)) == NOW
    assert batch_timestamp(SendContext(7, 3, 2, created, None)) == NOW


def test_batch_timestamp_without_a_batch_is_now():
    assert abs(batch_timestamp(SendContext()) - time.time()) < 2


@pytest.mark.parametrize(
    "send_at, expected",
    [
        pytest.param(datetime(2030, 3, 8, 10, 20, 0, tzinfo=BEIJING), "2030-03-08 10:20:00", id="vendor-example-form"),
        pytest.param(datetime(2030, 1, 2, 3, 4, 5, tzinfo=BEIJING), "2030-01-02 03:04:05", id="zero-padded"),
        pytest.param(datetime(2030, 3, 8, 2, 20, 0, tzinfo=UTC), "2030-03-08 10:20:00", id="utc-to-beijing"),
        pytest.param(datetime(2030, 3, 8, 10, 20, 0), "2030-03-08 10:20:00", id="naive-is-beijing"),
    ],
)
def test_send_timer_request(send_at, expected):
    recorder = Recorder(lambda request: xml_response(send_state(1, 7001, operation="SendTimer")))
    result = make_provider(recorder).send(NUMBERS, CONTENT, send_at=send_at, context=CTX)
    assert result.outcome is Outcome.OK
    operation, params = recorder.soap()
    assert operation == "SendTimer"
    assert recorder.requests[0].headers["soapaction"] == '"http://tempuri.org/SendTimer"'
    assert params["DateTime"] == expected
    assert params["Timestamp"] == str(batch_timestamp(CTX))
    assert params["Phone"] == ";".join(NUMBERS)


@pytest.mark.parametrize("ahead, operation", [(5, "SendMessage"), (29, "SendMessage"), (31, "SendTimer")])
def test_schedule_too_close_to_now_is_sent_now(ahead, operation):
    now = time.time()
    send_at = datetime.fromtimestamp(now + ahead, BEIJING)
    assert (schedule_text(send_at, now) is None) == (operation == "SendMessage")


@pytest.mark.parametrize("ext", ["123", "000001", 42])
def test_send_message_ext_request(ext):
    recorder = Recorder(lambda request: xml_response(send_state(1, 7001, operation="SendMessageExt")))
    result = make_provider(recorder, options={"org_id": ORG_ID, "ext": ext}).send(NUMBERS, CONTENT, context=CTX)
    assert result.outcome is Outcome.OK
    operation, params = recorder.soap()
    assert operation == "SendMessageExt"
    assert recorder.requests[0].headers["soapaction"] == '"http://tempuri.org/SendMessageExt"'
    assert params["Ext"] == str(ext)
    assert params["Timestamp"] == str(batch_timestamp(CTX))


def test_scheduled_send_of_an_ext_account_uses_send_timer():
    recorder = Recorder(lambda request: xml_response(send_state(1, 7001, operation="SendTimer")))
    provider = make_provider(recorder, options={"org_id": ORG_ID, "ext": "12"})
    provider.send(NUMBERS, CONTENT, send_at=datetime(2030, 1, 1, 8, 0, tzinfo=BEIJING), context=CTX)
    operation, params = recorder.soap()
    assert operation == "SendTimer" and "Ext" not in params


@pytest.mark.parametrize("count, calls", [(100, 1), (101, 0), (1000, 0)])
def test_send_number_limit(count, calls):
    recorder = Recorder()
    provider = make_provider(recorder)
    numbers = [f"138{i:08d}" for i in range(count)]
    if calls:
        assert provider.send(numbers, CONTENT, context=CTX).outcome is Outcome.OK
        assert recorder.soap()[1]["Phone"] == ";".join(numbers)
    else:
        with pytest.raises(ValueError):
            provider.send(numbers, CONTENT, context=CTX)
    assert recorder.calls == calls


@pytest.mark.parametrize(
    "kind, method, operation, body",
    [
        ("balance", "fetch", "GetBalance", balance_state(1001, 888)),
        (None, "login", "UserLogin", envelope("UserLogin", "1001")),
    ],
)
def test_poll_and_login_requests(kind, method, operation, body):
    recorder = Recorder(lambda request: xml_response(body))
    provider = make_provider(recorder)
    answer = provider.fetch(kind) if kind else provider.login()
    assert answer == (body if kind else 1001)
    if kind:
        assert provider.parse_balance(answer) == 888
    (request,) = recorder.requests
    assert request.headers["soapaction"] == f'"http://tempuri.org/{operation}"'
    assert PASSWORD not in str(request.url)
    assert recorder.soap() == (operation, {"Id": str(ORG_ID), "Name": "u", "Psw": PASSWORD})


def test_update_password_request():
    recorder = Recorder(lambda request: xml_response(envelope("UpdatePsw", "1")))
    assert make_provider(recorder).update_password(NEW_PASSWORD) is None
    assert recorder.soap() == (
        "UpdatePsw",
        {"Id": str(ORG_ID), "Name": "u", "OldPsw": PASSWORD, "NewPsw": NEW_PASSWORD},
    )


@pytest.mark.parametrize("kind", ["reports", "inbound", "blocked"])
def test_no_other_polls(kind):
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make_provider(recorder).fetch(kind)
    assert info.value.outcome is Outcome.INVALID_REQUEST
    assert recorder.calls == 0


def test_class_facts():
    assert OrgwsProvider.max_numbers == 100
    assert OrgwsProvider.max_chars == 201
    assert OrgwsProvider.number_separator == ";"
    assert OrgwsProvider.supports_send_time is True
    assert OrgwsProvider.poll_kinds == {"balance"}
    assert OrgwsProvider.option_keys == {"org_id", "ext"}


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, key",
    [
        pytest.param({}, "org_id", id="missing"),
        pytest.param({"org_id": None}, "org_id", id="none"),
        pytest.param({"org_id": "10001"}, "org_id", id="string"),
        pytest.param({"org_id": 10001.0}, "org_id", id="float"),
        pytest.param({"org_id": True}, "org_id", id="bool"),
        pytest.param({"org_id": 0}, "org_id", id="zero"),
        pytest.param({"org_id": -5}, "org_id", id="negative"),
        pytest.param({"org_id": 2**31}, "org_id", id="beyond-int32"),
        pytest.param({"org_id": 1, "ext": "1234567"}, "ext", id="ext-7-digits"),
        pytest.param({"org_id": 1, "ext": "12a"}, "ext", id="ext-letters"),
        pytest.param({"org_id": 1, "ext": ""}, "ext", id="ext-empty"),
        pytest.param({"org_id": 1, "ext": "１２"}, "ext", id="ext-full-width"),
        pytest.param({"org_id": 1, "ext": -1}, "ext", id="ext-negative"),
        pytest.param({"org_id": 1, "ext": 1.5}, "ext", id="ext-float"),
        pytest.param({"org_id": 1, "ext": True}, "ext", id="ext-bool"),
    ],
)
def test_validate_options_refuses(options, key):
    with pytest.raises(ValueError) as info:
        OrgwsProvider.validate_options(options)
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("options", [{"org_id": 1}, {"org_id": 10001, "ext": "000123"}, {"org_id": 7, "ext": 99}])
def test_validate_options_accepts(options):
    """Options it accepts make an account whose sends go through."""
    OrgwsProvider.validate_options(options)
    recorder = Recorder()
    result = make_provider(recorder, options=options).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.OK
    assert recorder.calls == 1


def test_provider_needs_org_id():
    with pytest.raises(ValueError, match="org_id"):
        make_provider(options={})


# ---------------------------------------------------------------------------
# Transport faults and HTTP status
# ---------------------------------------------------------------------------

SOAP_FAULT = (
    f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault><faultcode>soap:Server</faultcode>'
    f"<faultstring>Server was unable to process request.</faultstring></soap:Fault></soap:Body>"
    f"</soap:Envelope>"
)


@pytest.mark.parametrize(
    "reply, outcome",
    [
        *TRANSPORT_FAULTS,
        pytest.param(lambda r: xml_response(SOAP_FAULT, 500), Outcome.TRANSIENT, id="http-500-soap-fault"),
        pytest.param(lambda r: xml_response(send_state(-9)), Outcome.TRANSIENT, id="vendor-busy"),
        pytest.param(lambda r: xml_response(send_state(-55)), Outcome.AMBIGUOUS, id="unknown-vendor-code"),
    ],
)
def test_send_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    result = make_provider(recorder).send(["13800138000"], CONTENT, context=CTX)
    assert isinstance(result, SendResult)
    assert result.outcome is outcome
    assert recorder.calls == 1  # the provider never resends by itself
    assert PASSWORD not in (result.message or "") + result.raw + repr(result)


@pytest.mark.parametrize(
    "reply, outcome",
    [
        *POLL_TRANSPORT_FAULTS,
        pytest.param(lambda r: xml_response(SOAP_FAULT, 500), Outcome.TRANSIENT, id="http-500-soap-fault"),
        pytest.param(lambda r: xml_response(balance_state(-3)), Outcome.AUTH, id="login-failed"),
    ],
)
def test_poll_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    provider = make_provider(recorder)
    with pytest.raises(ProviderError) as info:
        provider.parse_balance(provider.fetch("balance"))
    assert info.value.outcome is outcome
    assert recorder.calls == 1
    assert PASSWORD not in repr(info.value) + str(info.value) + info.value.raw


# ---------------------------------------------------------------------------
# prepare_content
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param("您的验证码是1234", "您的验证码是1234" + SIG, id="signature-appended"),
        pytest.param("【测试】" + "好" * 197, "【测试】" + "好" * 197, id="201-characters"),
        pytest.param("【测试】" + "好" * 195 + "😀", "【测试】" + "好" * 195 + "😀", id="emoji-counts-two"),
        pytest.param("【测试】a\tb\r\nc", "【测试】a\tb\r\nc", id="tab-and-newlines"),
    ],
)
def test_prepare_content(content, expected):
    assert make_provider().prepare_content(content) == expected


@pytest.mark.parametrize(
    "content, fragments",
    [
        pytest.param("【测试】" + "好" * 198, ["202", "201"], id="202-characters"),
        pytest.param("【测试】" + "好" * 196 + "😀", ["202", "emoji", "201"], id="emoji-tips-it-over"),
        pytest.param("【测试】a\x00b", ["U+0000", "XML"], id="nul"),
        pytest.param("【测试】a\x1bb", ["U+001B", "XML"], id="escape"),
        pytest.param("【测试】a\ufffeb", ["U+FFFE"], id="non-character"),
    ],
)
def test_prepare_content_refused(content, fragments):
    with pytest.raises(ContentError) as info:
        make_provider().prepare_content(content)
    for fragment in fragments:
        assert fragment in str(info.value)


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def test_update_password_never_logs_or_shows_either_password(caplog):
    caplog.set_level(logging.DEBUG)
    shown = []
    for code in ("1", "-1", "-3"):
        recorder = Recorder(lambda request, code=code: xml_response(envelope("UpdatePsw", code)))
        provider = make_provider(recorder)
        try:
            provider.update_password(NEW_PASSWORD)
        except ProviderError as exc:
            shown += [repr(exc), str(exc), exc.raw]
        shown.append(repr(provider))
    recorder = Recorder(raising(httpx.ReadTimeout))
    with pytest.raises(ProviderError) as info:
        make_provider(recorder).update_password(NEW_PASSWORD)
    shown += [repr(info.value), str(info.value)]
    text = "\n".join(shown) + caplog.text
    assert PASSWORD not in text and NEW_PASSWORD not in text


@pytest.mark.parametrize("new", ["", None, 123])
def test_update_password_refuses_a_bad_new_password_without_calling(new):
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        make_provider(recorder).update_password(new)
    assert recorder.calls == 0
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(lambda: repr(make_account()), id="repr-account"),
        pytest.param(lambda: repr(make_provider()), id="repr-provider"),
        pytest.param(lambda: repr(vars(make_provider())), id="provider-attributes"),
        pytest.param(lambda: repr(parse_send_xml(send_state(-3), NUMBERS)), id="repr-send-result"),
    ],
)
def test_password_not_shown(show):
    assert PASSWORD not in show()


def test_send_does_not_log_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    make_provider().send(NUMBERS, CONTENT, context=CTX)
    assert PASSWORD not in caplog.text

"""Unit tests of the jinxin provider: parsers, request building, outcome classification.

Pure: no network, no database, no broker. HTTP goes through ``httpx.MockTransport``,
which is also how transport faults (read timeout, connect error) are forced.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from smsq.providers.base import BEIJING, Account, ContentError, Outcome, ProviderError, Secret, SendContext, SendResult
from smsq.providers.jinxin import JinxinProvider, fail_list, parse_send_body, parse_send_json, parse_send_xml

from .conftest import TRANSPORT_FAULTS, raising
from .conftest import Recorder as VendorRecorder

BASE_URL = "http://vendor.test/"
PASSWORD = "pw-123456"
SIG = "【某某科技】"
USERID = "8a48b5514a5e1f6b014a5e3e2c340001"
CONTENT = "【某某科技】您的验证码是345678,30分钟输入有效。"
OK_JSON = '{"respCode":"00000","failCount":"0","failList":[],"smsId":"6fa0b5f0c4fd4bd1a1f0c1d8e2b3a4c5"}'
OK_XML = "<returnsms><returnstatus>00000</returnstatus><message>ok</message></returnsms>"


def make_account(charset: str | None = "utf-8", signature: str | None = SIG, name: str = "t", **options) -> Account:
    options = {"userid": USERID, "format": "json", **options}
    return Account(
        name=name,
        provider="jinxin",
        base_url=BASE_URL,
        username="acct",
        password=Secret(PASSWORD),
        charset=charset,
        signature=signature,
        options=options,
    )


class Recorder(VendorRecorder):
    def default_reply(self, request):
        return httpx.Response(200, text=OK_JSON)


def make_provider(handler, **account_kw) -> JinxinProvider:
    return JinxinProvider(make_account(**account_kw), httpx.Client(transport=httpx.MockTransport(handler)))


def frozen(provider: JinxinProvider, *moments: datetime) -> JinxinProvider:
    """Make the provider's clock return ``moments`` one call after the other."""
    it = iter(moments)
    provider.now = lambda: next(it)
    return provider


NUMBERS = ["13800138000", "13900139000", "13700137000"]

# ---------------------------------------------------------------------------
# JSON answers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, failed, accepted, rejected",
    [
        pytest.param(
            {"respCode": "00000", "failCount": "0", "failList": [], "smsId": "A" * 32}, {}, 3, 0, id="all-accepted"
        ),
        pytest.param({"respCode": "00000", "failCount": "0", "smsId": "A" * 32}, {}, 3, 0, id="no-failList"),
        pytest.param({"respCode": 0, "failCount": 0, "smsId": "A" * 32}, {}, 3, 0, id="numbers-not-strings"),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "1",
                "smsId": "A" * 32,
                "failList": [{"phone": "13900139000", "respCode": "00111", "respDesc": "号码在黑名单中"}],
            },
            {"13900139000": "00111 号码在黑名单中"},
            2,
            1,
            id="objects-phone-code-desc",
        ),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "2",
                "smsId": "A" * 32,
                "failList": [{"mobile": "13800138000", "reason": "空号"}, {"number": "13700137000", "msg": "停机"}],
            },
            {"13800138000": "空号", "13700137000": "停机"},
            1,
            2,
            id="objects-other-keys",
        ),
        pytest.param(
            {"respCode": "00000", "failCount": "1", "smsId": "A" * 32, "failList": [{"phone": "13900139000"}]},
            {"13900139000": "failed"},
            2,
            1,
            id="object-without-reason",
        ),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "2",
                "smsId": "A" * 32,
                "failList": "13900139000:号码在黑名单中,13700137000:手机号码格式错误",
            },
            {"13900139000": "号码在黑名单中", "13700137000": "手机号码格式错误"},
            1,
            2,
            id="string",
        ),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "1",
                "smsId": "A" * 32,
                "failList": "13900139000:内容违规，请修改;13700137000",
            },
            {"13900139000": "内容违规，请修改", "13700137000": "failed"},
            1,
            2,
            id="string-reason-with-fullwidth-comma",
        ),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "1",
                "smsId": "A" * 32,
                "failList": '[{"phone":"13900139000","respCode":"00111"}]',
            },
            {"13900139000": "00111"},
            2,
            1,
            id="json-text",
        ),
        pytest.param(
            {"respCode": "00000", "failCount": "1", "smsId": "A" * 32, "failList": {"13900139000": "黑名单"}},
            {"13900139000": "黑名单"},
            2,
            1,
            id="mapping",
        ),
        pytest.param(
            {"respCode": "00000", "failCount": "1", "smsId": "A" * 32, "failList": ["13900139000:黑名单"]},
            {"13900139000": "黑名单"},
            2,
            1,
            id="list-of-strings",
        ),
        pytest.param(
            {
                "respCode": "00000",
                "failCount": "1",
                "smsId": "A" * 32,
                "failList": [{"phone": "+8613900139000", "respCode": "00111"}],
            },
            {"13900139000": "00111"},
            2,
            1,
            id="vendor-writes-86-prefix",
        ),
        pytest.param({"respCode": "00000", "failCount": "2", "smsId": "A" * 32}, {}, 1, 2, id="count-without-list"),
    ],
)
def test_parse_json_accepted(answer, failed, accepted, rejected):
    result = parse_send_json(json.dumps(answer, ensure_ascii=False), NUMBERS)
    assert result.outcome is Outcome.OK
    assert result.code == "00000"
    assert "不表明短信通道已经发送短信成功" in result.message
    assert result.failed_numbers == failed
    assert (result.accepted, result.rejected) == (accepted, rejected)
    assert result.batch_ref == "A" * 32
    assert result.vendor_ids == []  # one smsId per request, not per number


REFUSALS = [
    # (code, vendor message, outcome, words the message must keep)
    ("10001", "系统繁忙,请稍后再试", Outcome.TRANSIENT, "系统繁忙"),
    ("10002", "账号或密码错误", Outcome.AUTH, "账号或密码错误"),
    ("10003", "企业ID错误", Outcome.AUTH, "企业ID错误"),
    ("10004", "时间戳无效或已过期", Outcome.AUTH, "clock"),  # a clock off: every call alike
    ("10005", "手机号码数量超过100个", Outcome.INVALID_REQUEST, "手机号码数量超过100个"),
    ("10006", "缺少必选参数", Outcome.INVALID_REQUEST, "缺少必选参数"),
    ("10007", "账户余额不足", Outcome.BALANCE, "账户余额不足"),
    ("10008", "短信内容超过300个字符", Outcome.INVALID_REQUEST, "300"),
    ("10009", "短信内容含有敏感词", Outcome.BLOCKED, "敏感词"),
    ("10010", "字符编码错误", Outcome.INVALID_REQUEST, "字符编码错误"),
    ("10011", "短信内容缺少签名", Outcome.INVALID_REQUEST, "签名"),
    ("00012", "请求过于频繁", Outcome.RATE_LIMITED, "频繁"),
    ("00013", "密碼錯誤", Outcome.AUTH, "密碼錯誤"),
    ("00014", "賬號已被鎖定", Outcome.AUTH, "鎖定"),
    ("00015", "IP地址未授权", Outcome.AUTH, "IP"),
    ("00016", "号码在黑名单中", Outcome.BLOCKED, "黑名单"),
    ("00017", "账号余额不足", Outcome.BALANCE, "余额"),  # names the account, is about balance
    ("00018", "", Outcome.INVALID_REQUEST, "00018"),  # no words: refused, class unknown
    ("99999", "未知错误", Outcome.INVALID_REQUEST, "未知错误"),
]


@pytest.mark.parametrize("code, text, outcome, kept", REFUSALS, ids=[r[0] + "-" + r[2].value for r in REFUSALS])
def test_parse_json_refusals(code, text, outcome, kept):
    result = parse_send_json(json.dumps({"respCode": code, "respDesc": text}, ensure_ascii=False), NUMBERS)
    assert result.outcome is outcome
    assert result.code == code
    assert kept in result.message
    assert text in result.message
    assert result.retry_after == (60.0 if outcome is Outcome.RATE_LIMITED else None)
    assert result.failed_numbers == {}


@pytest.mark.parametrize("key", ["respDesc", "message", "msg", "desc"])
def test_parse_json_message_keys(key):
    result = parse_send_json(json.dumps({"respCode": "10002", key: "账号或密码错误"}, ensure_ascii=False), [])
    assert result.outcome is Outcome.AUTH


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("<html>junk", id="html"),
        pytest.param("[]", id="array"),
        pytest.param('{"failCount":"0"}', id="no-respCode"),
        pytest.param('{"respCode":null}', id="null-respCode"),
        pytest.param('{"respCode":""}', id="empty-respCode"),
        pytest.param('{"respCode":true}', id="bool-respCode"),
        pytest.param('{"respCode":"00000","failCount":"x"}', id="bad-failCount"),
        pytest.param('{"respCode":"00000","failList":[{"reason":"x"}]}', id="failList-entry-without-number"),
        pytest.param('{"respCode":"00000","failList":[1.5]}', id="failList-entry-float"),
        pytest.param('{"respCode":"00000","failList":"黑名单"}', id="failList-text-without-number"),
        pytest.param('{"respCode":"00000"', id="truncated"),
    ],
)
def test_parse_json_malformed(body):
    with pytest.raises(ValueError):
        parse_send_json(body, NUMBERS)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, {}),
        ("", {}),
        ([], {}),
        ("13900139000", {"13900139000": "failed"}),
        ("13900139000-空号|13700137000=停机", {"13900139000": "空号", "13700137000": "停机"}),
        ("13900139000:原因一,原因二;13700137000：停机", {"13900139000": "原因一,原因二", "13700137000": "停机"}),
        ({"phone": "13900139000", "respCode": "00111"}, {"13900139000": "00111"}),
        ([13900139000], {"13900139000": "failed"}),
    ],
)
def test_fail_list_shapes(value, expected):
    assert fail_list(value) == expected


# ---------------------------------------------------------------------------
# XML answers
# ---------------------------------------------------------------------------

VENDOR_EXAMPLE = """<?xml version="1.0" encoding="utf-8"?>
<returnsms>
   <returnsms>00000</returnsms>
   <message>message</message>
   <remainpoint>remainpoint</remainpoint>
   <successCounts>2</successCounts>
   <taskID>
      <phone>13896543210 </phone>
      <returnsms>00111 </returnsms>
   </taskID>
</returnsms>"""


@pytest.mark.parametrize(
    "body, numbers, failed, accepted, batch_ref",
    [
        pytest.param(
            VENDOR_EXAMPLE.replace("<remainpoint>remainpoint", "<remainpoint>100"),
            ["13800138000", "13896543210", "13700137000"],
            {"13896543210": "00111"},
            2,
            None,
            id="vendor-example-nested-status",
        ),
        pytest.param(
            "<returnsms><returnstatus>00000</returnstatus><message>ok</message>"
            "<successCounts>3</successCounts><smsId>S1</smsId></returnsms>",
            NUMBERS,
            {},
            3,
            "S1",
            id="returnstatus",
        ),
        pytest.param(
            "<returnsms><returnstatus>Success</returnstatus><message>ok</message>"
            "<remainpoint>9</remainpoint><taskID>1504</taskID><successCounts>3</successCounts></returnsms>",
            NUMBERS,
            {},
            3,
            "1504",
            id="classic-family-success-and-task-id",
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><smsId>S2</smsId>"
            "<taskID><phone>13800138000</phone><returnsms>00000</returnsms></taskID>"
            "<taskID><phone>13900139000</phone><returnsms>00111</returnsms></taskID>"
            "<taskID><phone>13700137000</phone><returnsms>10112</returnsms></taskID></returnsms>",
            NUMBERS,
            {"13900139000": "00111", "13700137000": "10112"},
            1,
            "S2",
            id="one-taskID-per-number",
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms>"
            "<taskID><phone>13900139000</phone><returnsms>00111</returnsms>"
            "<phone>8613700137000</phone><returnsms>10112</returnsms></taskID></returnsms>",
            NUMBERS,
            {"13900139000": "00111", "13700137000": "10112"},
            1,
            None,
            id="pairs-in-one-taskID-and-86-prefix",
        ),
        pytest.param(
            '<?xml version="1.0" encoding="gbk"?><returnsms><returnsms>00000</returnsms>'
            "<message>请求成功</message><failList>13900139000:黑名单</failList></returnsms>",
            NUMBERS,
            {"13900139000": "黑名单"},
            2,
            None,
            id="gbk-declaration-and-failList",
        ),
    ],
)
def test_parse_xml_accepted(body, numbers, failed, accepted, batch_ref):
    result = parse_send_xml(body, numbers)
    assert result.outcome is Outcome.OK
    assert result.code == "00000"
    assert result.failed_numbers == failed
    assert result.accepted == accepted
    assert result.batch_ref == batch_ref


def test_a_failed_numbers_own_code_is_kept_and_a_count_beyond_the_named_is_unnamed():
    answer = {
        "respCode": "00000",
        "failCount": "2",
        "smsId": "A" * 32,
        "failList": [{"phone": "+8613900139000", "respCode": "00111", "respDesc": "号码在黑名单中"}],
    }
    result = parse_send_json(json.dumps(answer, ensure_ascii=False), NUMBERS)
    assert result.failed_numbers == {"13900139000": "00111 号码在黑名单中"}
    assert result.failed_codes == {"13900139000": "00111"}  # keyed by the number as sent
    assert (result.rejected, result.unnamed_refusals) == (2, 1)
    assert "2 number(s) refused" in result.message and "1 of them not named" in result.message
    # a reason without a code (plain text) leaves the code to the ledger
    text = parse_send_json(json.dumps({**answer, "failCount": "1", "failList": "13900139000:黑名单"}), NUMBERS)
    assert (text.failed_numbers, text.failed_codes, text.unnamed_refusals) == ({"13900139000": "黑名单"}, {}, 0)


@pytest.mark.parametrize(
    "body, rejected, codes",
    [
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><successCounts>2</successCounts><smsId>S</smsId>"
            "<taskID><phone>13800138000</phone><returnsms>00000</returnsms></taskID>"
            "<taskID><phone>13900139000</phone><returnsms>00000</returnsms></taskID></returnsms>",
            1,
            {},
            id="successCounts-lower-none-named",
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><successCounts>2</successCounts>"
            "<taskID><phone>13700137000</phone><returnsms>00111</returnsms></taskID></returnsms>",
            1,
            {"13700137000": "00111"},
            id="successCounts-lower-one-named",
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><successCounts>6</successCounts></returnsms>",
            0,
            {},
            id="successCounts-above-the-numbers-counts-segments",
        ),
    ],
)
def test_xml_refusals_named_or_counted_by_success_counts(body, rejected, codes):
    result = parse_send_xml(body, NUMBERS)
    assert result.outcome is Outcome.OK
    assert (result.rejected, result.failed_codes) == (rejected, codes)
    assert result.unnamed_refusals == rejected - len(codes)


@pytest.mark.parametrize("tag", ["returnstatus", "returnsms"])
@pytest.mark.parametrize("code, text, outcome, kept", REFUSALS, ids=[r[0] + "-" + r[2].value for r in REFUSALS])
def test_parse_xml_refusals(tag, code, text, outcome, kept):
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><returnsms><{tag}>{code}</{tag}>'
        f"<message>{text}</message><remainpoint>0</remainpoint><successCounts>0</successCounts></returnsms>"
    )
    result = parse_send_xml(body, NUMBERS)
    assert result.outcome is outcome
    assert result.code == code
    assert kept in result.message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            VENDOR_EXAMPLE.replace("<message>message</message>", "<message>message;/message;"),
            id="vendor-example-as-printed",
        ),
        pytest.param("", id="empty"),
        pytest.param("<returnsms><message>ok</message></returnsms>", id="no-status"),
        pytest.param(
            "<returnsms><taskID><returnsms>00000</returnsms></taskID></returnsms>", id="status-only-nested-in-taskID"
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><taskID><phone>13900139000</phone>"
            "<phone>13700137000</phone><returnsms>1</returnsms></taskID></returnsms>",
            id="uneven-taskID",
        ),
        pytest.param(
            "<returnsms><returnsms>00000</returnsms><successCounts>x</successCounts></returnsms>",
            id="bad-successCounts",
        ),
        pytest.param(
            '<!DOCTYPE r [<!ENTITY e "00000">]><returnsms><returnsms>&e;</returnsms></returnsms>', id="entity-refused"
        ),
        pytest.param("<html>junk", id="html"),
    ],
)
def test_parse_xml_malformed(body):
    with pytest.raises(ValueError):
        parse_send_xml(body, NUMBERS)


# A DTD is refused even when it declares nothing harmful: an answer that
# carries one is not the vendor's, and it would be read as an acceptance.
DTD_ANSWERS = [
    pytest.param("<!DOCTYPE returnsms [<!ELEMENT returnsms ANY>]>" + OK_XML, id="internal-dtd"),
    pytest.param(
        '<?xml version="1.0"?><!DOCTYPE returnsms SYSTEM "http://127.0.0.1:9/x.dtd">' + OK_XML, id="external-dtd"
    ),
    pytest.param(
        '<?xml version="1.0"?><!DOCTYPE returnsms [<!ENTITY a "00000"><!ENTITY b "&a;&a;&a;&a;&a;'
        '&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        "<returnsms><returnstatus>&c;</returnstatus><message>&c;</message></returnsms>",
        id="entity-bomb",
    ),
]


@pytest.mark.parametrize("body", DTD_ANSWERS)
def test_parse_xml_refuses_a_dtd(body):
    with pytest.raises(ValueError, match="DTD|Entities|entity"):
        parse_send_xml(body, NUMBERS)


@pytest.mark.parametrize("body", DTD_ANSWERS)
def test_send_answer_with_a_dtd_is_ambiguous_never_accepted(body):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode("utf-8")))
    result = make_provider(recorder, format="xml").send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert "DTD" in result.message or "Entit" in result.message


@pytest.mark.parametrize(
    "body, fmt, words",
    [
        (OK_XML, "json", 'format = "xml"'),
        (OK_JSON, "xml", 'format = "json"'),
    ],
)
def test_answer_in_the_other_format_says_so(body, fmt, words):
    with pytest.raises(ValueError) as info:
        parse_send_body(body, fmt, NUMBERS)
    assert words in str(info.value)


# ---------------------------------------------------------------------------
# Through Provider.send: unreadable answers are ambiguous
# ---------------------------------------------------------------------------

MALFORMED_SEND = [
    pytest.param("json", "", id="json-empty"),
    pytest.param("json", "<html>junk", id="json-account-html"),
    pytest.param("json", '{"respCode":"00000"', id="json-truncated"),
    pytest.param("json", OK_XML, id="json-account-xml-answer"),
    pytest.param("xml", OK_JSON, id="xml-account-json-answer"),
    pytest.param("xml", "<returnsms>", id="xml-truncated"),
]


@pytest.mark.parametrize("fmt, body", MALFORMED_SEND)
def test_send_malformed_answer_is_ambiguous(fmt, body):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode("utf-8")))
    result = make_provider(recorder, format=fmt).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert recorder.calls == 1


@pytest.mark.parametrize("charset", ["gbk", "utf-8"])
@pytest.mark.parametrize(
    "fmt, body, outcome, fragment",
    [
        ("json", '{"respCode":"10002","respDesc":"账号或密码错误"}', Outcome.AUTH, "账号或密码错误"),
        ("json", OK_JSON, Outcome.OK, "不表明短信通道已经发送短信成功"),
        (
            "xml",
            '<?xml version="1.0" encoding="{cs}"?><returnsms><returnsms>10007</returnsms>'
            "<message>账户余额不足</message></returnsms>",
            Outcome.BALANCE,
            "账户余额不足",
        ),
    ],
)
def test_send_decodes_vendor_answer(charset, fmt, body, outcome, fragment):
    body = body.replace("{cs}", charset)
    # No charset in the Content-Type: the account's charset decides.
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode(charset)))
    result = make_provider(recorder, charset=charset, format=fmt).send(NUMBERS[:2], CONTENT)
    assert result.outcome is outcome
    assert fragment in result.message
    assert result.raw == body


def test_content_type_charset_wins_over_the_account():
    body = '{"respCode":"10002","respDesc":"账号或密码错误"}'

    def reply(request):
        return httpx.Response(
            200,
            content=body.encode("gbk"),  # noqa: E731
            headers={"content-type": "application/json; charset=gbk"},
        )

    result = make_provider(Recorder(reply), charset="utf-8").send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AUTH and "账号或密码错误" in result.message


# ---------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------

MOMENT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=BEIJING)


@pytest.mark.parametrize(
    "charset, wire",
    [
        pytest.param("utf-8", "utf-8", id="utf-8"),
        pytest.param(None, "utf-8", id="default-is-utf-8"),
        pytest.param("gbk", "gbk", id="gbk"),
        pytest.param("GB2312", "gbk", id="gb2312-sent-as-gbk"),
    ],
)
def test_send_request(charset, wire):
    recorder = Recorder()
    provider = frozen(make_provider(recorder, charset=charset), MOMENT)
    result = provider.send(NUMBERS[:2], CONTENT)
    assert result.outcome is Outcome.OK
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "sms.aspx?action=send"
    assert request.headers["content-type"] == f"application/x-www-form-urlencoded; charset={wire}"
    assert PASSWORD not in str(request.url)
    assert recorder.form(wire) == {
        "action": ["send"],
        "userid": [USERID],
        "account": ["acct"],
        "password": [PASSWORD],
        "mobile": ["13800138000,13900139000"],
        "content": [CONTENT],
        "sendtime": ["20250102030405"],
    }


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("【测试】a&b=c+d%20e;f,g|h", id="form-metacharacters"),
        pytest.param("【测试】第一行\n第二行", id="newline"),
        pytest.param("【测试】价格:￥100,折扣「八折」", id="full-width-punctuation"),
    ],
)
@pytest.mark.parametrize("charset", ["gbk", "utf-8"])
def test_send_content_survives_the_form(content, charset):
    recorder = Recorder()
    make_provider(recorder, charset=charset).send(["13800138000"], content)
    assert recorder.form(charset)["content"] == [content]


def test_send_request_charsets_differ_on_the_wire():
    bodies = {}
    for charset in ("gbk", "utf-8"):
        recorder = Recorder()
        make_provider(recorder, charset=charset).send(["13800138000"], CONTENT)
        bodies[charset] = recorder.requests[0].content.decode("ascii")
    assert urllib.parse.quote_plus(CONTENT, encoding="gbk") in bodies["gbk"]
    assert urllib.parse.quote_plus(CONTENT, encoding="utf-8") in bodies["utf-8"]


@pytest.mark.parametrize(
    "moment, stamp",
    [
        pytest.param(MOMENT, "20250102030405", id="beijing"),
        pytest.param(datetime(2025, 1, 1, 19, 4, 5, tzinfo=UTC), "20250102030405", id="utc-clock"),
        pytest.param(
            datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=BEIJING), "20241231235959", id="24h-truncated-to-seconds"
        ),
        pytest.param(datetime(2025, 6, 7, 15, 0, 0, tzinfo=BEIJING), "20250607150000", id="afternoon-24h"),
    ],
)
def test_sendtime_is_the_call_time_in_beijing(moment, stamp):
    recorder = Recorder()
    frozen(make_provider(recorder), moment).send(["13800138000"], CONTENT)
    assert recorder.form()["sendtime"] == [stamp]


def test_sendtime_defaults_to_the_real_clock():
    recorder = Recorder()
    before = datetime.now(BEIJING).replace(microsecond=0)
    make_provider(recorder).send(["13800138000"], CONTENT)
    after = datetime.now(BEIJING)
    (stamp,) = recorder.form()["sendtime"]
    assert before <= datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING) <= after


def test_a_retried_call_carries_a_fresh_sendtime():
    # The same chunk, sent again later (a retry, or a chunk that sat in the
    # queue): the stamp is taken when the call is made, not kept from before.
    recorder = Recorder(lambda request: httpx.Response(200, text='{"respCode":"10001","respDesc":"系统繁忙"}'))
    provider = frozen(make_provider(recorder), MOMENT, MOMENT + timedelta(minutes=7))
    created = datetime(2025, 1, 1, 18, 0, 0)  # naive UTC, hours before
    first = provider.send(NUMBERS, CONTENT, None, SendContext(7, 1, 1, created))
    second = provider.send(NUMBERS, CONTENT, None, SendContext(7, 1, 2, created))
    assert first.outcome is second.outcome is Outcome.TRANSIENT
    assert [recorder.form(index=i)["sendtime"] for i in (0, 1)] == [["20250102030405"], ["20250102031105"]]


def test_send_at_is_not_a_schedule():
    # The vendor cannot schedule: smsq holds the chunk and sends it when due.
    recorder = Recorder()
    provider = frozen(make_provider(recorder), MOMENT)
    provider.send(["13800138000"], CONTENT, send_at=MOMENT + timedelta(days=1))
    form = recorder.form()
    assert form["sendtime"] == ["20250102030405"]
    assert set(form) == {"action", "userid", "account", "password", "mobile", "content", "sendtime"}


@pytest.mark.parametrize("extno, sent", [(None, None), ("8888", ["8888"]), (12, ["12"])])
def test_extno(extno, sent):
    recorder = Recorder()
    options = {} if extno is None else {"extno": extno}
    make_provider(recorder, **options).send(["13800138000"], CONTENT)
    assert recorder.form().get("extno") == sent


def test_integer_userid_is_sent_as_text():
    recorder = Recorder()
    make_provider(recorder, userid=12).send(["13800138000"], CONTENT)
    assert recorder.form()["userid"] == ["12"]


@pytest.mark.parametrize("count, calls", [(100, 1), (101, 0), (250, 0)])
def test_send_number_limit(count, calls):
    recorder = Recorder()
    provider = make_provider(recorder)
    numbers = [f"138{i:08d}" for i in range(count)]
    if calls:
        assert provider.send(numbers, CONTENT).outcome is Outcome.OK
        assert recorder.form()["mobile"] == [",".join(numbers)]
    else:
        with pytest.raises(ValueError):
            provider.send(numbers, CONTENT)
    assert recorder.calls == calls


def test_send_without_numbers_raises_before_any_request():
    recorder = Recorder()
    with pytest.raises(ValueError):
        make_provider(recorder).send([], CONTENT)
    assert recorder.calls == 0


@pytest.mark.parametrize("charset", ["big5", "utf-16", "gb18030", "latin-1"])
def test_charsets_the_vendor_does_not_take_are_refused(charset):
    with pytest.raises(ValueError) as info:
        make_provider(Recorder(), charset=charset)
    assert charset in str(info.value) and "'t'" in str(info.value)


# ---------------------------------------------------------------------------
# Class facts and options
# ---------------------------------------------------------------------------


def test_class_facts():
    assert JinxinProvider.name == "jinxin"
    assert JinxinProvider.max_numbers == 100
    assert JinxinProvider.number_separator == ","
    assert JinxinProvider.default_charset == "utf-8"
    assert JinxinProvider.supports_send_time is False
    assert JinxinProvider.poll_kinds == frozenset()
    assert JinxinProvider.option_keys == {"userid", "format", "extno"}


@pytest.mark.parametrize("kind", ["reports", "inbound", "balance", "blocked"])
def test_no_polls(kind):
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make_provider(recorder).fetch(kind)
    assert info.value.outcome is Outcome.INVALID_REQUEST
    assert recorder.calls == 0


@pytest.mark.parametrize(
    "options",
    [
        {"userid": USERID, "format": "json"},
        {"userid": "12", "format": "xml"},
        {"userid": 12, "format": "xml", "extno": "01"},
        {"userid": "abc", "format": "json", "extno": 8888},
    ],
)
def test_valid_options(options):
    """Options it accepts make an account whose sends go through, answered in the format asked for."""
    JinxinProvider.validate_options(options)
    recorder = Recorder(lambda request: httpx.Response(200, text=OK_JSON if options["format"] == "json" else OK_XML))
    result = make_provider(recorder, **options).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.OK
    assert recorder.form()["userid"] == [str(options["userid"])]


@pytest.mark.parametrize(
    "options, key",
    [
        ({"format": "json"}, "userid"),
        ({"userid": "", "format": "json"}, "userid"),
        ({"userid": "a" * 33, "format": "json"}, "userid"),
        ({"userid": "12-34", "format": "json"}, "userid"),
        ({"userid": True, "format": "json"}, "userid"),
        ({"userid": "12"}, "format"),
        ({"userid": "12", "format": "JSON"}, "format"),
        ({"userid": "12", "format": "text"}, "format"),
        ({"userid": "12", "format": "json", "extno": "8a"}, "extno"),
        ({"userid": "12", "format": "json", "extno": ""}, "extno"),
        ({"userid": "12", "format": "json", "extno": True}, "extno"),
    ],
)
def test_invalid_options(options, key):
    with pytest.raises(ValueError) as info:
        JinxinProvider.validate_options(options)
    assert f"'{key}'" in str(info.value)


# ---------------------------------------------------------------------------
# Transport faults and HTTP status, through Provider.send
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, outcome",
    [
        *TRANSPORT_FAULTS,
        pytest.param(
            lambda r: httpx.Response(200, text='{"respCode":"10001","respDesc":"系统繁忙,请稍后再试"}'),
            Outcome.TRANSIENT,
            id="vendor-busy",
        ),
    ],
)
def test_send_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    result = make_provider(recorder).send(["13800138000"], CONTENT)
    assert isinstance(result, SendResult)
    assert result.outcome is outcome
    assert recorder.calls == 1  # the provider never resends by itself
    assert PASSWORD not in (result.message or "") + result.raw


# ---------------------------------------------------------------------------
# prepare_content
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param("【今信科技】您的验证码是345678", "【今信科技】您的验证码是345678", id="signed-at-start"),
        pytest.param("您的验证码是1234", SIG + "您的验证码是1234", id="account-signature-in-front"),
        pytest.param("您的验证码是1234" + SIG, SIG + "您的验证码是1234", id="own-signature-moved-to-front"),
        pytest.param("【活动】您好【测试】", "【活动】您好【测试】", id="both-ends-kept"),
        pytest.param("【测试】" + "好" * 296, "【测试】" + "好" * 296, id="300-characters"),
    ],
)
def test_prepare_content(content, expected):
    assert make_provider(Recorder()).prepare_content(content) == expected


@pytest.mark.parametrize(
    "content, account_kw, fragments",
    [
        pytest.param(
            "您好",
            {"signature": None, "name": "shop-jx"},
            ["'shop-jx'", "signature", "at its start"],
            id="no-signature",
        ),
        pytest.param(
            "您的验证码是1234【测试】",
            {"name": "shop-jx"},
            ["jinxin wants the signature first", "【测试】 at its end", "'shop-jx'", SIG],
            id="other-signature-at-end",
        ),
        pytest.param("【测试】" + "好" * 297, {}, ["301", "300"], id="301-characters"),
        pytest.param("【测试】你好😀", {"charset": "gbk"}, ["😀", "gbk"], id="emoji-gbk"),
    ],
)
def test_prepare_content_refused(content, account_kw, fragments):
    with pytest.raises(ContentError) as info:
        make_provider(Recorder(), **account_kw).prepare_content(content)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_without_an_account_signature_a_trailing_one_is_moved_to_the_front():
    provider = make_provider(Recorder(), signature=None)
    assert provider.prepare_content("您的验证码是345678【今信科技】") == "【今信科技】您的验证码是345678"


def test_prepare_content_emoji_allowed_in_utf8():
    assert make_provider(Recorder()).prepare_content("【测试】你好😀") == "【测试】你好😀"


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def _shown_results() -> list[SendResult]:
    results = [parse_send_json(OK_JSON, NUMBERS), parse_send_json('{"respCode":"10002"}', NUMBERS)]
    for reply in (raising(httpx.ReadTimeout), lambda r: httpx.Response(200, text="<html>junk")):
        results.append(make_provider(Recorder(reply)).send(["13800138000"], CONTENT))
    return results


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(lambda: repr(make_account()), id="repr-account"),
        pytest.param(lambda: repr(make_provider(Recorder())), id="repr-provider"),
        pytest.param(
            lambda: " ".join(repr(r) + (r.message or "") + r.raw for r in _shown_results()), id="send-results"
        ),
    ],
)
def test_password_not_shown(show):
    assert PASSWORD not in show()


def test_charset_error_does_not_show_the_password():
    with pytest.raises(ValueError) as info:
        make_provider(Recorder(), charset="big5")
    assert PASSWORD not in str(info.value) + repr(info.value)

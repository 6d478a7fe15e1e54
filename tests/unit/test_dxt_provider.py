"""Unit tests of the dxt provider: parsers, request building, outcome classification.

Pure: no network, no database, no broker. HTTP goes through ``httpx.MockTransport``,
which is also how transport faults (read timeout, connect error) are forced.
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime

import httpx
import pytest

from smsq.providers.base import Account, ContentError, Outcome, ProviderError, Secret, SendResult
from smsq.providers.dxt import (
    DxtProvider,
    parse_balance_text,
    parse_inbound_text,
    parse_reports_text,
    parse_send_text,
)

from .conftest import POLL_TRANSPORT_FAULTS, TRANSPORT_FAULTS, raising
from .conftest import Recorder as VendorRecorder

BASE_URL = "http://vendor.test/"
PASSWORD = "pw-123456"
SIG = "【某某科技】"


def make_account(charset: str | None = "gbk", signature: str | None = SIG, name: str = "t") -> Account:
    return Account(
        name=name,
        provider="dxt",
        base_url=BASE_URL,
        username="u",
        password=Secret(PASSWORD),
        charset=charset,
        signature=signature,
    )


class Recorder(VendorRecorder):
    charset = "gbk"

    def default_reply(self, request):
        return httpx.Response(200, text="0|1|0|1")


def make_provider(handler, **account_kw) -> DxtProvider:
    return DxtProvider(make_account(**account_kw), httpx.Client(transport=httpx.MockTransport(handler)))


# ---------------------------------------------------------------------------
# parse_send_text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, ids, accepted, rejected",
    [
        pytest.param("0|1|0|SMSID", ["SMSID"], 1, 0, id="vendor-example"),
        pytest.param("0|1|0|6408676", ["6408676"], 1, 0, id="single-id"),
        pytest.param("0|3|0|6408676,6408677,6408678", ["6408676", "6408677", "6408678"], 3, 0, id="several-ids"),
        pytest.param("0|2|1|6408676,6408677", ["6408676", "6408677"], 2, 1, id="some-rejected"),
        pytest.param("0|0|2|", [], 0, 2, id="all-rejected-no-ids"),
        pytest.param("  0|1|0|6408676\r\n", ["6408676"], 1, 0, id="surrounding-whitespace"),
    ],
)
def test_parse_send_success(body, ids, accepted, rejected):
    result = parse_send_text(body)
    assert result.outcome is Outcome.OK
    assert result.code == "0"
    assert result.vendor_ids == ids
    assert (result.accepted, result.rejected) == (accepted, rejected)


def test_numbers_refused_in_b_are_counted_not_named():
    # 0|a|b|d: b numbers refused (处理失败的号码个数), d one SMSID per *accepted* number:
    # which numbers got them the vendor does not say.
    result = parse_send_text("0|2|1|6408676,6408677")
    assert (result.rejected, result.unnamed_refusals, result.failed_numbers) == (1, 1, {})
    assert result.batch_ref == "6408676,6408677"  # all of them, kept on the chunk
    assert "1 个号码处理失败,一般为号码长度不对等" in result.message
    assert "处理失败" not in parse_send_text("0|2|0|6408676,6408677").message


@pytest.mark.parametrize(
    "body, outcome, vendor_text",
    [
        ("-1", Outcome.INVALID_REQUEST, "缺少接收的目标号码"),
        ("-2", Outcome.INVALID_REQUEST, "缺少短信内容"),
        ("-3|发票", Outcome.BLOCKED, "短信内容非法,含有禁发关键词"),
        ("-4", Outcome.INVALID_REQUEST, "每次请求条数大于最大允许条数100条"),
        ("-7", Outcome.AUTH, "用户登入信息验证失败"),
        ("-8", Outcome.INVALID_REQUEST, "短信内容长度超过规定最大字符长度335个字符"),
        ("-9", Outcome.BALANCE, "帐户当前余额不足发送本次请求的条数"),
        ("-10", Outcome.AUTH, "帐号已被锁定"),
        ("-99", Outcome.TRANSIENT, "系统忙,无法受理此次请求"),
    ],
    ids=["-1", "-2", "-3|WORD", "-4", "-7", "-8", "-9", "-10", "-99"],
)
def test_parse_send_failure_codes(body, outcome, vendor_text):
    result = parse_send_text(body)
    assert result.outcome is outcome
    assert result.code == body.partition("|")[0]
    assert vendor_text in result.message
    assert result.vendor_ids == []


def test_parse_send_forbidden_word_is_in_message():
    result = parse_send_text("-3|代开发票")
    assert result.outcome is Outcome.BLOCKED
    assert result.code == "-3"
    assert "代开发票" in result.message
    assert "禁发关键词" in result.message


@pytest.mark.parametrize("body", ["-5", "-6", "-11", "-100"])
def test_parse_send_unknown_code_is_ambiguous(body):
    result = parse_send_text(body)
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.code == body


MALFORMED_SEND = [
    pytest.param("", id="empty"),
    pytest.param("0", id="bare-zero"),
    pytest.param("0|1", id="success-too-short"),
    pytest.param("0|x|0|1", id="accepted-not-a-number"),
    pytest.param("0|1|y|1", id="rejected-not-a-number"),
    pytest.param("<html>junk", id="html"),
    pytest.param("-7|extra", id="code-with-detail"),
    pytest.param("1|1|0|1", id="positive-head"),
    pytest.param("-", id="bare-dash"),
    pytest.param("OK", id="word"),
]


@pytest.mark.parametrize("body", MALFORMED_SEND)
def test_parse_send_malformed_raises(body):
    with pytest.raises(ValueError):
        parse_send_text(body)


@pytest.mark.parametrize("body", MALFORMED_SEND)
def test_send_malformed_answer_is_ambiguous(body):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode("gbk")))
    result = make_provider(recorder).send(["13800138000"], "【测试】您好")
    assert result.outcome is Outcome.AMBIGUOUS
    assert recorder.calls == 1


# ---------------------------------------------------------------------------
# parse_reports_text
# ---------------------------------------------------------------------------


def test_parse_reports_vendor_example():
    reports = parse_reports_text("3|6408676;13682250950;20|6408649;13711147169;20|6408649;13719445093;20")
    assert [(r.vendor_id, r.mobile, r.delivered, r.code) for r in reports] == [
        ("6408676", "13682250950", False, "20"),
        ("6408649", "13711147169", False, "20"),
        ("6408649", "13719445093", False, "20"),
    ]


@pytest.mark.parametrize(
    "status, delivered",
    [("-1", None), ("10", True), ("20", False), ("30", None)],  # undefined status settles nothing
)
def test_parse_reports_record_status(status, delivered):
    (report,) = parse_reports_text(f"1|6408676;13682250950;{status}")
    assert report.delivered is delivered
    assert report.code == status
    assert (report.vendor_id, report.mobile) == ("6408676", "13682250950")


def test_parse_reports_none():
    assert parse_reports_text("0") == []


@pytest.mark.parametrize(
    "body, outcome",
    [("-1", Outcome.AUTH), ("-3", Outcome.TRANSIENT), ("-7", Outcome.AUTH)],
)
def test_parse_reports_errors(body, outcome):
    with pytest.raises(ProviderError) as info:
        parse_reports_text(body)
    assert info.value.outcome is outcome
    assert info.value.code == body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("2|6408676;13682250950;10", id="fewer-than-announced"),
        pytest.param("1|6408676;13682250950;10|6408677;13682250951;20", id="more-than-announced"),
        pytest.param("1", id="announced-but-empty"),
        pytest.param("1|6408676;13682250950", id="record-two-fields"),
        pytest.param("<html>junk", id="html"),
    ],
)
def test_parse_reports_malformed(body):
    with pytest.raises(ValueError):
        parse_reports_text(body)


# ---------------------------------------------------------------------------
# parse_inbound_text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param(
            "2|133,13798361236;我回复一条|134,13826588212;我也回复一条",
            [("133", "13798361236", "我回复一条"), ("134", "13826588212", "我也回复一条")],
            id="vendor-example-comma",
        ),
        pytest.param(
            "2|133;13798361236;我回复一条|134;13826588212;我也回复一条",
            [("133", "13798361236", "我回复一条"), ("134", "13826588212", "我也回复一条")],
            id="semicolon-form",
        ),
        pytest.param(
            "1|133,13798361236;好的,明天;见",
            [("133", "13798361236", "好的,明天;见")],
            id="comma-form-content-with-separators",
        ),
        pytest.param(
            "1|133;13798361236;好的,明天;见",
            [("133", "13798361236", "好的,明天;见")],
            id="semicolon-form-content-with-separators",
        ),
        pytest.param(
            "2|133;13798361236;A|B|134;13826588212;C",
            [("133", "13798361236", "A|B"), ("134", "13826588212", "C")],
            id="bar-in-first-content",
        ),
        pytest.param(
            "2|133,13798361236;A|134,13826588212;B|C",
            [("133", "13798361236", "A"), ("134", "13826588212", "B|C")],
            id="bar-in-last-content",
        ),
        pytest.param("1|133;13798361236;x|y;z|w", [("133", "13798361236", "x|y;z|w")], id="several-bars"),
        pytest.param(
            "2|133;13798361236;价格|100;200;300|134;13826588212;d",
            [("133", "13798361236", "价格|100;200;300"), ("134", "13826588212", "d")],
            id="bar-then-digits-that-are-no-phone-number",
        ),
    ],
)
def test_parse_inbound(body, expected):
    messages = parse_inbound_text(body)
    assert [(m.vendor_id, m.mobile, m.content) for m in messages] == expected


def test_parse_inbound_none():
    assert parse_inbound_text("0") == []


@pytest.mark.parametrize(
    "body, outcome",
    [("-1", Outcome.AUTH), ("-3", Outcome.TRANSIENT), ("-7", Outcome.AUTH)],
)
def test_parse_inbound_errors(body, outcome):
    with pytest.raises(ProviderError) as info:
        parse_inbound_text(body)
    assert info.value.outcome is outcome
    assert info.value.code == body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("2|133;13798361236;只有一条", id="fewer-than-announced"),
        pytest.param("1|13798361236", id="no-separator"),
        pytest.param("<html>junk", id="html"),
    ],
)
def test_parse_inbound_malformed(body):
    with pytest.raises(ValueError):
        parse_inbound_text(body)


# ---------------------------------------------------------------------------
# parse_balance_text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [("12345", 12345), ("0", 0), (" 7\r\n", 7)])
def test_parse_balance(body, expected):
    assert parse_balance_text(body) == expected


@pytest.mark.parametrize("body, outcome", [("-1", Outcome.AUTH), ("-7", Outcome.AUTH)])
def test_parse_balance_errors(body, outcome):
    with pytest.raises(ProviderError) as info:
        parse_balance_text(body)
    assert info.value.outcome is outcome
    assert info.value.code == body


@pytest.mark.parametrize("body", ["", "abc", "12.5", "<html>junk", "1|2"])
def test_parse_balance_junk(body):
    with pytest.raises(ValueError):
        parse_balance_text(body)


# ---------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------

CONTENT = "【某某科技】您的验证码是1234,请勿泄露。"


@pytest.mark.parametrize(
    "charset",
    [pytest.param("gbk", id="gbk"), pytest.param(None, id="default-is-gbk"), pytest.param("utf-8", id="utf-8")],
)
def test_send_request(charset):
    recorder = Recorder()
    provider = make_provider(recorder, charset=charset)
    result = provider.send(["13800138000", "075580808080"], CONTENT)
    assert result.outcome is Outcome.OK
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "sendsms_txt.asp"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert PASSWORD not in str(request.url)
    assert recorder.form(charset or "gbk") == {
        "us_name": ["u"],
        "us_pwd": [PASSWORD],
        "send_phone": ["13800138000,075580808080"],
        "send_content": [CONTENT],
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
    assert recorder.form(charset)["send_content"] == [content]


def test_send_request_charsets_differ_on_the_wire():
    bodies = {}
    for charset in ("gbk", "utf-8"):
        recorder = Recorder()
        make_provider(recorder, charset=charset).send(["13800138000"], CONTENT)
        bodies[charset] = recorder.requests[0].content
    assert urllib.parse.quote_plus(CONTENT, encoding="gbk") in bodies["gbk"].decode("ascii")
    assert urllib.parse.quote_plus(CONTENT, encoding="utf-8") in bodies["utf-8"].decode("ascii")


@pytest.mark.parametrize(
    "send_at, expected",
    [
        pytest.param(None, None, id="immediate"),
        pytest.param(datetime(2010, 9, 3, 11, 20, 30), "20100903112030", id="vendor-example"),
        pytest.param(datetime(2025, 1, 2, 3, 4, 5), "20250102030405", id="zero-padded"),
    ],
)
def test_send_time(send_at, expected):
    recorder = Recorder()
    make_provider(recorder).send(["13800138000"], CONTENT, send_at=send_at)
    form = recorder.form()
    if expected is None:
        assert "send_time" not in form
    else:
        assert form["send_time"] == [expected]


@pytest.mark.parametrize("count, calls", [(100, 1), (101, 0), (250, 0)])
def test_send_number_limit(count, calls):
    recorder = Recorder()
    provider = make_provider(recorder)
    numbers = [f"138{i:08d}" for i in range(count)]
    if calls:
        assert provider.send(numbers, CONTENT).outcome is Outcome.OK
        assert recorder.form()["send_phone"] == [",".join(numbers)]
    else:
        with pytest.raises(ValueError):
            provider.send(numbers, CONTENT)
    assert recorder.calls == calls


def test_send_without_numbers_raises_before_any_request():
    recorder = Recorder()
    with pytest.raises(ValueError):
        make_provider(recorder).send([], CONTENT)
    assert recorder.calls == 0


@pytest.mark.parametrize(
    "kind, endpoint, body, parse",
    [
        ("reports", "get_report_txt.asp", "1|6408676;13682250950;10", "parse_reports"),
        ("inbound", "get_receive_message_txt.asp", "1|133,13798361236;收到", "parse_inbound"),
        ("balance", "Get_Account_Balance.asp", "888", "parse_balance"),
    ],
)
def test_poll_request(kind, endpoint, body, parse):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode("gbk")))
    provider = make_provider(recorder)
    text = provider.fetch(kind)
    assert text == body
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + endpoint
    assert PASSWORD not in str(request.url)
    assert recorder.form() == {"us_name": ["u"], "us_pwd": [PASSWORD]}
    assert getattr(provider, parse)(text)


@pytest.mark.parametrize("charset", ["gbk", "utf-8"])
@pytest.mark.parametrize(
    "body, outcome, fragment",
    [
        ("-3|代开发票", Outcome.BLOCKED, "代开发票"),
        ("-10", Outcome.AUTH, "帐号已被锁定"),
        ("0|2|0|6408676,6408677", Outcome.OK, "提交短信成功"),
    ],
)
def test_send_decodes_vendor_answer(charset, body, outcome, fragment):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode(charset)))
    result = make_provider(recorder, charset=charset).send(["13800138000", "13800138001"], CONTENT)
    assert result.outcome is outcome
    assert fragment in result.message
    assert result.raw == body


# ---------------------------------------------------------------------------
# Transport faults and HTTP status, through Provider.send
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, outcome",
    [
        *TRANSPORT_FAULTS,
        pytest.param(lambda r: httpx.Response(200, text="-99"), Outcome.TRANSIENT, id="vendor-busy"),
        pytest.param(lambda r: httpx.Response(200, text="-5"), Outcome.AMBIGUOUS, id="unknown-vendor-code"),
    ],
)
def test_send_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    result = make_provider(recorder).send(["13800138000"], CONTENT)
    assert isinstance(result, SendResult)
    assert result.outcome is outcome
    assert recorder.calls == 1  # the provider never resends by itself
    assert PASSWORD not in (result.message or "") + result.raw


@pytest.mark.parametrize(
    "reply, outcome",
    [*POLL_TRANSPORT_FAULTS, pytest.param(lambda r: httpx.Response(200, text="-7"), Outcome.AUTH, id="login-failed")],
)
def test_poll_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    provider = make_provider(recorder)
    with pytest.raises(ProviderError) as info:
        provider.parse_reports(provider.fetch("reports"))
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
        pytest.param("  您的验证码是1234 \n", "您的验证码是1234" + SIG, id="stripped-then-signed"),
        pytest.param("【测试】您的验证码是1234", "【测试】您的验证码是1234", id="signed-at-start"),
        pytest.param("您的验证码是1234【测试】", "您的验证码是1234【测试】", id="signed-at-end"),
        pytest.param("【测试】" + "好" * 331, "【测试】" + "好" * 331, id="335-characters"),
    ],
)
def test_prepare_content(content, expected):
    assert make_provider(Recorder()).prepare_content(content) == expected


@pytest.mark.parametrize(
    "content, account_kw, fragments",
    [
        pytest.param(
            "您好", {"signature": None, "name": "shop-dxt"}, ["'shop-dxt'", "signature"], id="no-signature-anywhere"
        ),
        pytest.param(
            "您好", {"signature": "", "name": "shop-dxt"}, ["'shop-dxt'", "signature"], id="empty-account-signature"
        ),
        pytest.param("【测试】" + "好" * 332, {}, ["336", "335"], id="336-characters"),
        pytest.param("好" * 330, {}, ["336", "335"], id="336-with-appended-signature"),
        pytest.param("【测试】你好😀", {"charset": "gbk"}, ["😀", "U+1F600", "gbk"], id="emoji-gbk"),
        pytest.param("【测试】你好😀", {"charset": None}, ["😀", "U+1F600", "gbk"], id="emoji-default-charset"),
        pytest.param("", {}, ["empty"], id="empty"),
        pytest.param("   \n", {}, ["empty"], id="blank"),
        pytest.param(None, {}, ["empty"], id="none"),
    ],
)
def test_prepare_content_refused(content, account_kw, fragments):
    with pytest.raises(ContentError) as info:
        make_provider(Recorder(), **account_kw).prepare_content(content)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_prepare_content_emoji_allowed_in_utf8():
    assert make_provider(Recorder(), charset="utf-8").prepare_content("【测试】你好😀") == "【测试】你好😀"


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def _shown_results() -> list[SendResult]:
    results = [parse_send_text("0|1|0|6408676"), parse_send_text("-7")]
    recorder = Recorder(raising(httpx.ReadTimeout))
    results.append(make_provider(recorder).send(["13800138000"], CONTENT))
    return results


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(lambda: repr(make_account()), id="repr-account"),
        pytest.param(lambda: str(make_account()), id="str-account"),
        pytest.param(lambda: repr(make_provider(Recorder())), id="repr-provider"),
        pytest.param(lambda: str(make_account().password), id="str-password"),
        pytest.param(lambda: repr(make_account().password), id="repr-password"),
        pytest.param(lambda: f"{make_account().password}", id="format-password"),
        pytest.param(lambda: " ".join(repr(r) for r in _shown_results()), id="repr-send-result"),
    ],
)
def test_password_not_shown(show):
    assert PASSWORD not in show()


def test_secret_still_reveals():
    assert make_account().password.reveal() == PASSWORD


@pytest.mark.parametrize("charset", ["gbk", "gb2312", "utf-8"])
def test_the_form_body_is_byte_for_byte_what_urlencode_gives(charset):
    from smsq.providers.base import form_body

    fields = {
        "us_name": "shop",
        "us_pwd": "p&w=d+ 8%",
        "send_phone": "13800000000,13900000001,075580808080",
        "send_content": "【某某科技】您的验证码是 345678，请在5分钟内输入。",
        "empty": "",
        "comma": ",",
        "n": 5,
    }
    assert form_body(fields, charset) == urllib.parse.urlencode(fields, encoding=charset).encode("ascii")
    with pytest.raises(UnicodeEncodeError):
        form_body({"send_content": "€"}, "gb2312")

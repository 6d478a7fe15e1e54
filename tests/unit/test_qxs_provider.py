"""Unit tests of the qxs provider: XML parsers, request building, outcome classification.

Pure: no network. HTTP goes through ``httpx.MockTransport``, which is also how
transport faults (read timeout, connect error) are forced.
"""

from __future__ import annotations

import math
import urllib.parse
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from smsq.providers.base import BEIJING, Account, ContentError, Outcome, ProviderError, Secret, SendResult
from smsq.providers.qxs import (
    QxsProvider,
    format_send_time,
    parse_balance_xml,
    parse_inbound_xml,
    parse_keyword_xml,
    parse_reports_xml,
    parse_send_xml,
    parse_time,
)

from .conftest import POLL_TRANSPORT_FAULTS, TRANSPORT_FAULTS, raising
from .conftest import Recorder as VendorRecorder

BASE_URL = "http://vendor.test/"
PASSWORD = "pw-qxs-778899"
SIG = "【某某科技】"
DECL = '<?xml version="1.0" encoding="utf-8" ?>'
CONTENT = "【某某科技】您的验证码是1234，请勿泄露。"
OK_SEND = (
    f"{DECL}<returnsms><returnstatus>Success</returnstatus><message>ok</message>"
    "<remainpoint>1234</remainpoint><taskID>1504</taskID><successCounts>1</successCounts></returnsms>"
)


def make_account(options=None, charset=None, signature=SIG, name="t") -> Account:
    return Account(
        name=name,
        provider="qxs",
        base_url=BASE_URL,
        username="u",
        password=Secret(PASSWORD),
        charset=charset,
        signature=signature,
        options={"userid": "12"} if options is None else options,
    )


class Recorder(VendorRecorder):
    def default_reply(self, request):
        return httpx.Response(200, text=OK_SEND)


def make_provider(handler, **account_kw) -> QxsProvider:
    return QxsProvider(make_account(**account_kw), httpx.Client(transport=httpx.MockTransport(handler)))


def returnsms(*inner: str, decl: bool = True) -> str:
    return (DECL if decl else "") + "<returnsms>" + "".join(inner) + "</returnsms>"


def failed(message: str, status: str = "Faild") -> str:
    return returnsms(
        f"<returnstatus>{status}</returnstatus><message>{message}</message>"
        "<remainpoint>0</remainpoint><taskID>0</taskID><successCounts>0</successCounts>"
    )


def errorstatus(code: str, remark: str = "") -> str:
    return returnsms(f"<errorstatus><error>{code}</error><remark>{remark}</remark></errorstatus>")


# ---------------------------------------------------------------------------
# Class facts and options
# ---------------------------------------------------------------------------


def test_class_facts():
    assert (QxsProvider.name, QxsProvider.max_numbers, QxsProvider.number_separator) == ("qxs", 100, ",")
    assert QxsProvider.default_charset == "utf-8"
    assert QxsProvider.supports_send_time is True
    assert QxsProvider.poll_kinds == {"reports", "inbound", "balance"}
    assert QxsProvider.option_keys == {"userid", "checkcontent", "extno", "status_num"}


@pytest.mark.parametrize(
    "options",
    [
        {"userid": "12"},
        {"userid": 12},
        {"userid": 0},
        {"userid": "a1B2c3"},
        {"userid": "12", "checkcontent": False},
        {"userid": "12", "checkcontent": 1},
        {"userid": "12", "extno": "0123"},
        {"userid": "12", "extno": 5},
        {"userid": "12", "status_num": 100},
        {"userid": "12", "status_num": 1},
    ],
)
def test_validate_options_accepts(options):
    """Options it accepts make an account whose sends go through."""
    QxsProvider.validate_options(options)
    recorder = Recorder()
    result = make_provider(recorder, options=options).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.OK
    assert recorder.form()["userid"] == [str(options["userid"])]


@pytest.mark.parametrize(
    "options, key",
    [
        ({}, "userid"),
        ({"userid": ""}, "userid"),
        ({"userid": None}, "userid"),
        ({"userid": True}, "userid"),
        ({"userid": -1}, "userid"),
        ({"userid": "12 34"}, "userid"),
        ({"userid": "企业"}, "userid"),
        ({"userid": 1.5}, "userid"),
        ({"userid": "12", "checkcontent": "yes"}, "checkcontent"),
        ({"userid": "12", "checkcontent": 2}, "checkcontent"),
        ({"userid": "12", "extno": "12a"}, "extno"),
        ({"userid": "12", "extno": ""}, "extno"),
        ({"userid": "12", "extno": True}, "extno"),
        ({"userid": "12", "status_num": 0}, "status_num"),
        ({"userid": "12", "status_num": "100"}, "status_num"),
        ({"userid": "12", "status_num": True}, "status_num"),
        ({"userid": "12", "status_num": 1001}, "status_num"),
    ],
)
def test_validate_options_names_the_key(options, key):
    with pytest.raises(ValueError, match=key):
        QxsProvider.validate_options(options)


# ---------------------------------------------------------------------------
# parse_send_xml
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, sent, batch_ref, accepted, rejected",
    [
        pytest.param(OK_SEND, 1, "1504", 1, 0, id="spec-example"),
        pytest.param(OK_SEND.replace("<?xml", "\ufeff<?xml"), 1, "1504", 1, 0, id="bom"),
        pytest.param(OK_SEND.replace("Success", "Sucess"), 1, "1504", 1, 0, id="family-spelling-sucess"),
        pytest.param(OK_SEND.replace("Success", "SUCCESS"), 1, "1504", 1, 0, id="upper-case"),
        pytest.param(OK_SEND.replace("taskID", "taskid"), 1, "1504", 1, 0, id="lower-case-taskid"),
        pytest.param(OK_SEND.replace(DECL, ""), 1, "1504", 1, 0, id="no-declaration"),
        pytest.param(OK_SEND.replace("<successCounts>1<", "<successCounts>2<"), 3, "1504", 2, 1, id="one-refused"),
        pytest.param(
            OK_SEND.replace("<successCounts>1<", "<successCounts>6<"),
            2,
            "1504",
            6,
            None,
            id="counts-segments-not-numbers",
        ),
        pytest.param(
            OK_SEND.replace("<successCounts>1</successCounts>", ""), 1, "1504", None, None, id="no-success-counts"
        ),
        pytest.param(OK_SEND.replace("<taskID>1504</taskID>", ""), 1, None, 1, 0, id="no-task-id"),
        pytest.param(OK_SEND.replace("\n", "").replace("><", ">\n  <"), 1, "1504", 1, 0, id="pretty-printed"),
    ],
)
def test_parse_send_success(body, sent, batch_ref, accepted, rejected):
    result = parse_send_xml(body, sent)
    assert result.outcome is Outcome.OK
    assert result.batch_ref == batch_ref
    assert (result.accepted, result.rejected) == (accepted, rejected)
    assert result.vendor_ids == [] and result.failed_numbers == {}  # the vendor names neither
    # the refused are counted, never named: delivery reports must tell them apart
    assert result.unnamed_refusals == (rejected or 0)
    assert ("refused" in result.message) is bool(rejected)


def test_parse_send_success_keeps_remainpoint_for_operators():
    result = parse_send_xml(OK_SEND, 1)
    assert result.code == "Success"
    assert "1234" in result.message


SEND_FAILURES = [
    # (vendor message, class, the vendor's words the result must keep)
    ("用户名或密码不能为空", Outcome.AUTH, "用户名或密码不能为空"),  # the account's credentials: every call alike
    ("发送内容包含sql注入字符", Outcome.INVALID_REQUEST, "sql注入字符"),
    ("发送内容包含Sql注入字符", Outcome.INVALID_REQUEST, "sql注入字符"),
    ("用户名或密码错误", Outcome.AUTH, "用户名或密码错误"),
    ("短信号码不能为空", Outcome.INVALID_REQUEST, "短信号码不能为空"),
    ("短信内容不能为空", Outcome.INVALID_REQUEST, "短信内容不能为空"),
    ("包含非法字符：法轮功", Outcome.BLOCKED, "包含非法字符"),
    ("包含非法字符:法轮功", Outcome.BLOCKED, "包含非法字符"),
    ("对不起，您当前要发送的量大于您当前余额", Outcome.BALANCE, "大于您当前余额"),
    ("对不起,您当前要发送的量大于您当前余额。", Outcome.BALANCE, "大于您当前余额"),
    ("其他错误", Outcome.TRANSIENT, "其他错误"),
]


@pytest.mark.parametrize("status", ["Faild", "Failed", "faild"])
@pytest.mark.parametrize("message, outcome, words", SEND_FAILURES, ids=[m for m, _, _ in SEND_FAILURES])
def test_parse_send_failure_messages(message, outcome, words, status):
    result = parse_send_xml(failed(message, status), 1)
    assert result.outcome is outcome
    assert result.batch_ref is None and result.vendor_ids == []
    assert words in result.message and "(" in result.message  # Chinese kept, English added


def test_parse_send_forbidden_words_are_named():
    result = parse_send_xml(failed("包含非法字符：法轮功,代开发票"), 1)
    assert result.outcome is Outcome.BLOCKED
    assert "法轮功,代开发票" in result.message


@pytest.mark.parametrize("message", ["", "系统维护中", "ok", "号码个数超过100个"])
def test_parse_send_unknown_failure_is_ambiguous(message):
    result = parse_send_xml(failed(message), 1)
    assert result.outcome is Outcome.AMBIGUOUS


@pytest.mark.parametrize(
    "code, outcome",
    [
        ("1", Outcome.AUTH),
        ("2", Outcome.AUTH),
        ("3", Outcome.INVALID_REQUEST),
        ("4", Outcome.INVALID_REQUEST),
    ],
)
def test_parse_send_errorstatus(code, outcome):
    result = parse_send_xml(errorstatus(code), 1)
    assert result.outcome is outcome
    assert result.code == code


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("<html><body>Server Error</body></html>", id="html"),
    pytest.param("<returnsms><returnstatus>Success", id="truncated"),
    pytest.param("ok", id="text"),
    pytest.param(returnsms("<message>ok</message>"), id="no-returnstatus"),
    pytest.param(returnsms("<returnstatus>Pending</returnstatus>"), id="unknown-status-word"),
    pytest.param(
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "xx">]><returnsms><returnstatus>&a;</returnstatus></returnsms>',
        id="entity-declaration-refused",
    ),
    pytest.param('<!DOCTYPE returnsms SYSTEM "http://evil.test/x.dtd"><returnsms/>', id="external-dtd-refused"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_parse_send_malformed_raises(body):
    with pytest.raises(ValueError):
        parse_send_xml(body, 1)


@pytest.mark.parametrize("body", MALFORMED)
def test_send_malformed_answer_is_ambiguous(body):
    recorder = Recorder(lambda request: httpx.Response(200, text=body))
    result = make_provider(recorder).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert recorder.calls == 1


# ---------------------------------------------------------------------------
# parse_reports_xml
# ---------------------------------------------------------------------------


def statusbox(mobile="15023239810", taskid="1212", status="10", time="2021-12-02 22:12:11", extra=""):
    return (
        f"<statusbox><mobile>{mobile}</mobile><taskid>{taskid}</taskid><status>{status}</status>"
        f"<receivetime>{time}</receivetime>{extra}</statusbox>"
    )


def test_parse_reports_spec_example():
    body = returnsms(statusbox(status="10"), statusbox(mobile="15023239811", status="20"))
    reports = parse_reports_xml(body)
    assert [(r.vendor_id, r.mobile, r.delivered, r.code) for r in reports] == [
        ("1212", "15023239810", True, "10"),
        ("1212", "15023239811", False, "20"),
    ]
    assert reports[0].reported_at == datetime(2021, 12, 2, 22, 12, 11)  # Beijing, naive
    assert "发送成功" in reports[0].message and "发送失败" in reports[1].message


@pytest.mark.parametrize(
    "status, extra, delivered, fragment",
    [
        ("10", "", True, "发送成功"),
        ("20", "", False, "发送失败"),
        ("10", "<errorcode>DELIVRD</errorcode>", True, "DELIVRD"),
        ("20", "<errorcode>UNDELIV</errorcode>", False, "UNDELIV"),
        ("20", "<errorcode></errorcode>", False, "发送失败"),
        ("30", "", None, "unknown status 30"),  # an undefined status settles nothing
    ],
)
def test_parse_reports_status(status, extra, delivered, fragment):
    (report,) = parse_reports_xml(returnsms(statusbox(status=status, extra=extra)))
    assert report.delivered is delivered
    assert report.code == status
    assert fragment in report.message


@pytest.mark.parametrize(
    "body",
    [returnsms(), returnsms(decl=False), "<returnsms/>", f"{DECL}\n<returnsms>\n</returnsms>\n"],
    ids=["empty", "empty-no-declaration", "self-closing", "whitespace"],
)
def test_parse_reports_none(body):
    assert parse_reports_xml(body) == []


def test_parse_reports_without_taskid_has_no_vendor_id():
    (report,) = parse_reports_xml(returnsms("<statusbox><mobile>15023239810</mobile><status>10</status></statusbox>"))
    assert report.vendor_id is None and report.reported_at is None


POLL_ERRORS = [
    ("1", "用户名或密码不能为空", Outcome.AUTH),
    ("2", "用户名或密码错误", Outcome.AUTH),
    ("3", "该用户不允许查看状态报告", Outcome.INVALID_REQUEST),
    ("4", "参数不正确", Outcome.INVALID_REQUEST),
    ("9", "未知", Outcome.TRANSIENT),
]


@pytest.mark.parametrize(
    "parse", [parse_reports_xml, parse_inbound_xml, parse_balance_xml], ids=["reports", "inbound", "balance"]
)
@pytest.mark.parametrize("code, remark, outcome", POLL_ERRORS, ids=[c for c, _, _ in POLL_ERRORS])
def test_poll_errorstatus(parse, code, remark, outcome):
    with pytest.raises(ProviderError) as info:
        parse(errorstatus(code, remark))
    assert info.value.outcome is outcome
    assert info.value.code == code
    assert remark in str(info.value)


@pytest.mark.parametrize(
    "parse", [parse_reports_xml, parse_inbound_xml, parse_balance_xml], ids=["reports", "inbound", "balance"]
)
@pytest.mark.parametrize(
    "message, outcome",
    [
        ("用户名或密码错误", Outcome.AUTH),
        ("用户名或密码不能为空", Outcome.AUTH),
        ("其他错误", Outcome.TRANSIENT),
        ("说不清", Outcome.TRANSIENT),
    ],
)
def test_poll_answered_the_sms_aspx_way(parse, message, outcome):
    with pytest.raises(ProviderError) as info:
        parse(failed(message))
    assert info.value.outcome is outcome


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(returnsms("<statusbox><taskid>1</taskid><status>10</status></statusbox>"), id="no-mobile"),
        pytest.param(returnsms("<statusbox><mobile>15023239810</mobile></statusbox>"), id="no-status"),
        pytest.param("<html>junk</html>", id="html"),
        pytest.param("", id="empty-body"),
        pytest.param("<returnsms><statusbox>", id="truncated"),
    ],
)
def test_parse_reports_malformed(body):
    with pytest.raises(ValueError):
        parse_reports_xml(body)


# ---------------------------------------------------------------------------
# parse_inbound_xml
# ---------------------------------------------------------------------------


def callbox(mobile="15023239810", content="你好，本次活动路途是怎么的", time="2021-12-02 22:12:11", taskid="1212"):
    return (
        f"<callbox><mobile>{mobile}</mobile><taskid>{taskid}</taskid><content>{content}</content>"
        f"<receivetime>{time}</receivetime></callbox>"
    )


@pytest.mark.parametrize(
    "boxes, expected",
    [
        pytest.param([callbox()], [("15023239810", "你好，本次活动路途是怎么的")], id="spec-example"),
        pytest.param(
            [callbox(content="你好我需要"), callbox(mobile="13800138000", content="TD")],
            [("15023239810", "你好我需要"), ("13800138000", "TD")],
            id="two",
        ),
        pytest.param([callbox(content="a &lt;b&gt; &amp; c")], [("15023239810", "a <b> & c")], id="escaped"),
        pytest.param([callbox(content="<![CDATA[x<y&z]]>")], [("15023239810", "x<y&z")], id="cdata"),
        pytest.param([callbox(content=" 前后有空格 ")], [("15023239810", " 前后有空格 ")], id="spaces-kept"),
        pytest.param([callbox(content="")], [("15023239810", "")], id="empty-content"),
        pytest.param([callbox(content="第一行\n第二行😀")], [("15023239810", "第一行\n第二行😀")], id="newline-emoji"),
    ],
)
def test_parse_inbound(boxes, expected):
    messages = parse_inbound_xml(returnsms(*boxes))
    assert [(m.mobile, m.content) for m in messages] == expected
    # taskid is a batch id shared by replies, not a message id.
    assert all(m.vendor_id is None for m in messages)


def test_parse_inbound_time_and_none():
    (message,) = parse_inbound_xml(returnsms(callbox(time="2021/12/2 9:05:07")))
    assert message.received_at == datetime(2021, 12, 2, 9, 5, 7)
    assert parse_inbound_xml(returnsms()) == []


@pytest.mark.parametrize(
    "body",
    [returnsms("<callbox><content>x</content></callbox>"), "<html/>", "junk"],
    ids=["no-mobile", "other-root", "text"],
)
def test_parse_inbound_malformed(body):
    with pytest.raises(ValueError):
        parse_inbound_xml(body)


# ---------------------------------------------------------------------------
# parse_time
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2021-12-02 22:12:11", datetime(2021, 12, 2, 22, 12, 11)),
        (" 2021-12-02 22:12:11 ", datetime(2021, 12, 2, 22, 12, 11)),
        ("2021/12/2 9:05:07", datetime(2021, 12, 2, 9, 5, 7)),  # zh-CN .NET default
        ("2021-12-02T22:12:11", datetime(2021, 12, 2, 22, 12, 11)),
        ("2021-12-02 22:12:11.123", datetime(2021, 12, 2, 22, 12, 11)),
        ("2021-12-02 22:12", datetime(2021, 12, 2, 22, 12)),
        ("", None),
        ("2021-13-02 22:12:11", None),
        ("yesterday", None),
    ],
)
def test_parse_time(value, expected):
    assert parse_time(value) == expected


# ---------------------------------------------------------------------------
# parse_balance_xml
# ---------------------------------------------------------------------------


def overage(status="Sucess", payinfo="预付费", used="1000", total="5000"):
    return returnsms(
        f"<returnstatus>{status}</returnstatus><message></message><payinfo>{payinfo}</payinfo>"
        f"<overage>{used}</overage><sendTotal>{total}</sendTotal>"
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param(overage(), 4000, id="spec-example-sucess"),
        pytest.param(overage(status="Success"), 4000, id="correct-spelling"),
        pytest.param(overage(used="0", total="0"), 0, id="nothing-bought"),
        pytest.param(overage(used="5001", total="5000"), -1, id="overdrawn"),
        pytest.param(overage(used="12.5", total="100"), 87.5, id="decimal"),
        pytest.param(overage().replace("<payinfo>预付费</payinfo>", ""), 4000, id="no-payinfo"),
        pytest.param(overage(status=""), 4000, id="empty-status"),
        pytest.param(overage(payinfo="后付费", total=""), math.inf, id="postpaid"),
        pytest.param(overage(payinfo="后付费", total="0"), math.inf, id="postpaid-zero-total"),
    ],
)
def test_parse_balance(body, expected):
    assert parse_balance_xml(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(overage(total=""), id="prepaid-without-total"),
        pytest.param(overage(used="many"), id="not-a-number"),
        pytest.param(overage(status="Maybe"), id="unknown-status-word"),
        pytest.param(returnsms(), id="empty"),
        pytest.param("1000", id="bare-number"),
    ],
)
def test_parse_balance_malformed(body):
    with pytest.raises(ValueError):
        parse_balance_xml(body)


# ---------------------------------------------------------------------------
# parse_keyword_xml
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, words",
    [
        ("未包含非法字符", []),
        ("没有包含屏蔽词", []),
        ("包含非法字符：法轮功", ["法轮功"]),
        ("包含非法字符:法轮功", ["法轮功"]),
        ("包含非法字符：法轮功,代开发票", ["法轮功", "代开发票"]),
        ("包含非法字符：法轮功，代开发票、赌博", ["法轮功", "代开发票", "赌博"]),
        ("包含非法字符：法轮功 代开发票", ["法轮功", "代开发票"]),
        ("包含非法字符", ["包含非法字符"]),  # no word named: still not clean
    ],
)
def test_parse_keyword(message, words):
    assert parse_keyword_xml(returnsms(f"<message>{message}</message>")) == words


@pytest.mark.parametrize(
    "message, outcome",
    [
        ("用户名或密码不能为空", Outcome.AUTH),
        ("用户名或密码错误", Outcome.AUTH),
        ("其他错误", Outcome.TRANSIENT),
        ("发送内容包含sql注入字符", Outcome.INVALID_REQUEST),
    ],
)
def test_parse_keyword_errors(message, outcome):
    with pytest.raises(ProviderError) as info:
        parse_keyword_xml(returnsms(f"<message>{message}</message>"))
    assert info.value.outcome is outcome


@pytest.mark.parametrize("body", [returnsms("<message>嗯</message>"), returnsms(), "junk"])
def test_parse_keyword_malformed(body):
    with pytest.raises(ValueError):
        parse_keyword_xml(body)


# ---------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------


def test_send_request():
    recorder = Recorder()
    result = make_provider(recorder).send(["13800138000", "13900139000"], CONTENT)
    assert result.outcome is Outcome.OK and result.batch_ref == "1504"
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "sms.aspx"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert PASSWORD not in str(request.url)
    assert recorder.form() == {
        "action": ["send"],
        "userid": ["12"],
        "account": ["u"],
        "password": [PASSWORD],
        "mobile": ["13800138000,13900139000"],
        "content": [CONTENT],
        "sendTime": [""],  # the vendor's own example sends it empty for "now"
        "checkcontent": ["1"],
    }
    assert urllib.parse.quote_plus(CONTENT, encoding="utf-8") in request.content.decode("ascii")


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"userid": 12}, {"userid": ["12"], "checkcontent": ["1"]}),
        ({"userid": "A9", "checkcontent": False}, {"userid": ["A9"], "checkcontent": ["0"]}),
        ({"userid": "12", "checkcontent": 1, "extno": "0086"}, {"checkcontent": ["1"], "extno": ["0086"]}),
        ({"userid": "12", "extno": 77}, {"extno": ["77"]}),
    ],
)
def test_send_options_on_the_wire(options, expected):
    recorder = Recorder()
    make_provider(recorder, options=options).send(["13800138000"], CONTENT)
    form = recorder.form()
    for key, value in expected.items():
        assert form[key] == value
    assert ("extno" in form) == ("extno" in options)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("【测试】a&b=c+d%20e;f,g|h", id="form-metacharacters"),
        pytest.param("【测试】第一行\n第二行", id="newline"),
        pytest.param("【测试】价格:￥100,折扣「八折」😀", id="full-width-and-emoji"),
        pytest.param("【测试】<b>&amp;</b>", id="xml-characters"),
    ],
)
def test_send_content_survives_the_form(content):
    recorder = Recorder()
    make_provider(recorder).send(["13800138000"], content)
    assert recorder.form()["content"] == [content]


@pytest.mark.parametrize(
    "send_at, expected",
    [
        pytest.param(None, "", id="immediate"),
        pytest.param(datetime(2021, 12, 2, 9, 8, 10), "2021-12-02 09:08:10", id="naive-is-beijing"),
        pytest.param(datetime(2021, 12, 2, 9, 8, 10, tzinfo=BEIJING), "2021-12-02 09:08:10", id="beijing"),
        pytest.param(datetime(2021, 12, 2, 1, 8, 10, tzinfo=UTC), "2021-12-02 09:08:10", id="utc-converted"),
        pytest.param(
            datetime(2021, 12, 31, 20, 0, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2022-01-01 09:00:00",
            id="crosses-the-year",
        ),
    ],
)
def test_send_time(send_at, expected):
    assert format_send_time(send_at) == expected
    recorder = Recorder()
    make_provider(recorder).send(["13800138000"], CONTENT, send_at=send_at)
    assert recorder.form()["sendTime"] == [expected]


@pytest.mark.parametrize("count, calls", [(1, 1), (100, 1), (101, 0), (250, 0)])
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


@pytest.mark.parametrize(
    "kind, page, action, body, parse",
    [
        ("reports", "statusApi.aspx", "query", returnsms(statusbox()), "parse_reports"),
        ("inbound", "callApi.aspx", "query", returnsms(callbox()), "parse_inbound"),
        ("balance", "sms.aspx", "overage", overage(), "parse_balance"),
    ],
)
def test_poll_request(kind, page, action, body, parse):
    recorder = Recorder(lambda request: httpx.Response(200, content=body.encode("utf-8")))
    provider = make_provider(recorder)
    text = provider.fetch(kind)
    assert text == body
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + page
    assert PASSWORD not in str(request.url)
    assert recorder.form() == {"action": [action], "userid": ["12"], "account": ["u"], "password": [PASSWORD]}
    assert getattr(provider, parse)(text)


def test_reports_poll_sends_status_num_when_configured():
    recorder = Recorder(lambda request: httpx.Response(200, text=returnsms()))
    make_provider(recorder, options={"userid": "12", "status_num": 50}).fetch("reports")
    assert recorder.form()["statusNum"] == ["50"]


def test_unknown_poll_kind():
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make_provider(recorder).fetch("blocked")
    assert info.value.outcome is Outcome.INVALID_REQUEST
    assert recorder.calls == 0


def test_check_keywords_request():
    recorder = Recorder(lambda r: httpx.Response(200, text=returnsms("<message>包含非法字符：法轮功</message>")))
    assert make_provider(recorder).check_keywords("关于法轮功") == ["法轮功"]
    assert str(recorder.requests[0].url) == BASE_URL + "sms.aspx"
    assert recorder.form() == {
        "action": ["checkkeyword"],
        "userid": ["12"],
        "account": ["u"],
        "password": [PASSWORD],
        "content": ["关于法轮功"],
    }


# ---------------------------------------------------------------------------
# Transport faults and HTTP status
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, outcome",
    [
        *TRANSPORT_FAULTS,
        pytest.param(lambda r: httpx.Response(200, text=failed("其他错误")), Outcome.TRANSIENT, id="vendor-db-error"),
        pytest.param(lambda r: httpx.Response(200, text=failed("新的错误")), Outcome.AMBIGUOUS, id="unknown-message"),
    ],
)
def test_send_fault_outcome(reply, outcome):
    recorder = Recorder(reply)
    result = make_provider(recorder).send(["13800138000"], CONTENT)
    assert isinstance(result, SendResult)
    assert result.outcome is outcome
    assert recorder.calls == 1  # the provider never resends by itself
    assert PASSWORD not in (result.message or "") + result.raw


@pytest.mark.parametrize("kind", ["reports", "inbound", "balance"])
@pytest.mark.parametrize(
    "reply, outcome",
    [
        *POLL_TRANSPORT_FAULTS,
        pytest.param(
            lambda r: httpx.Response(200, text=errorstatus("2", "用户名或密码错误")), Outcome.AUTH, id="wrong-password"
        ),
        pytest.param(
            lambda r: httpx.Response(200, text=failed("用户名或密码错误")), Outcome.AUTH, id="wrong-password-message"
        ),
    ],
)
def test_poll_fault_outcome(kind, reply, outcome):
    recorder = Recorder(reply)
    provider = make_provider(recorder)
    parse = {"reports": provider.parse_reports, "inbound": provider.parse_inbound, "balance": provider.parse_balance}[
        kind
    ]
    with pytest.raises(ProviderError) as info:
        parse(provider.fetch(kind))
    assert info.value.outcome is outcome
    assert recorder.calls == 1
    assert PASSWORD not in repr(info.value) + str(info.value) + info.value.raw


@pytest.mark.parametrize(
    "reply, outcome",
    [
        pytest.param(raising(httpx.ConnectError), Outcome.TRANSIENT, id="connect-error"),
        pytest.param(raising(httpx.ReadTimeout), Outcome.AMBIGUOUS, id="read-timeout"),
        pytest.param(
            lambda r: httpx.Response(200, text=returnsms("<message>用户名或密码错误</message>")),
            Outcome.AUTH,
            id="wrong-password",
        ),
    ],
)
def test_check_keywords_faults(reply, outcome):
    recorder = Recorder(reply)
    with pytest.raises(ProviderError) as info:
        make_provider(recorder).check_keywords("你好")
    assert info.value.outcome is outcome
    assert recorder.calls == 1
    assert PASSWORD not in repr(info.value) + str(info.value) + info.value.raw


# ---------------------------------------------------------------------------
# Content and secrets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ("您的验证码是1234", "您的验证码是1234" + SIG),
        ("【测试】" + "好" * 296, "【测试】" + "好" * 296),
        ("【测试】你好😀", "【测试】你好😀"),  # UTF-8 carries emoji
    ],
)
def test_prepare_content(content, expected):
    assert make_provider(Recorder()).prepare_content(content) == expected


def test_prepare_content_caps_at_300_characters():
    with pytest.raises(ContentError, match="300"):
        make_provider(Recorder()).prepare_content("【测试】" + "好" * 297)


def _shown() -> str:
    recorder = Recorder(raising(httpx.ReadTimeout))
    provider = make_provider(recorder)
    results = [
        parse_send_xml(OK_SEND, 1),
        parse_send_xml(failed("用户名或密码错误"), 1),
        provider.send(["13800138000"], CONTENT),
    ]
    errors = []
    for kind in ("reports", "balance"):
        try:
            provider.fetch(kind)
        except ProviderError as exc:
            errors.append(f"{exc!r} {exc} {exc.raw}")
    return " ".join(
        [
            repr(make_account()),
            str(make_account()),
            repr(provider),
            str(make_account().password),
            *(repr(r) + (r.message or "") + r.raw for r in results),
            *errors,
        ]
    )


def test_password_not_shown():
    shown = _shown()
    assert "ReadTimeout" in shown
    assert PASSWORD not in shown

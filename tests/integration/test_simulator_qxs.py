"""The qxs provider against the qxs simulator, over real HTTP."""

from __future__ import annotations

import math
import time
import urllib.parse
from datetime import UTC, datetime

import httpx
import pytest

from smsq.providers.base import Account, Outcome, ProviderError, Secret
from smsq.providers.qxs import QxsProvider
from smsq.simulator.qxs import FIRST_TASK_ID, POSTPAID, QxsState, create_app, segments_for

from .conftest import set_faults, snapshot_errors_during

USER, PASSWORD, USERID = "test", "Pw-qxs-s3cret", "8710"
SIG = "【某某科技】"
CONTENT = "【某某科技】您的验证码是 345678，5分钟内有效。&=+%😀"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def state() -> QxsState:
    return QxsState({USER: PASSWORD, "other": "pw2"}, balance=1000, userid=USERID)


@pytest.fixture
def sim(state, simulator_slot):
    slot, running = simulator_slot
    slot.app = create_app(state)
    return running


def make_provider(
    url: str, *, username: str = USER, password: str = PASSWORD, timeout: float | httpx.Timeout = 5, **options
) -> QxsProvider:
    account = Account(
        name="t",
        provider="qxs",
        base_url=url,
        username=username,
        password=Secret(password),
        charset="utf-8",
        signature=SIG,
        options={"userid": USERID, **options},
    )
    return QxsProvider(account, httpx.Client(timeout=timeout))


@pytest.fixture
def provider(sim):
    provider = make_provider(sim.url)
    yield provider
    provider.client.close()


def numbers(count: int, prefix: str = "138") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(count)]


def raw_call(url: str, page: str, **params: str) -> httpx.Response:
    body = urllib.parse.urlencode({"userid": USERID, "account": USER, "password": PASSWORD, **params})
    return httpx.post(url + page, content=body.encode("ascii"), headers=FORM, timeout=5)


# -- send -----------------------------------------------------------------


def test_send_in_chunks_arrives_once_per_number_intact(provider, state):
    recipients = numbers(250)
    content = provider.prepare_content(CONTENT)
    results = [
        provider.send(recipients[i : i + provider.max_numbers], content)
        for i in range(0, len(recipients), provider.max_numbers)
    ]
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert [r.accepted for r in results] == [100, 100, 50]
    assert [r.batch_ref for r in results] == [str(FIRST_TASK_ID + i) for i in range(3)]
    assert [len(s.numbers) for s in state.sends] == [100, 100, 50]
    assert [n for s in state.sends for n in s.numbers] == recipients  # once each, in order
    assert {s.content for s in state.sends} == {CONTENT}  # UTF-8, emoji and form characters intact
    assert all(s.send_time is None and s.checkcontent for s in state.sends)
    assert state.decode_errors == []


@pytest.mark.parametrize(
    "send_at, received",
    [
        (None, None),
        (datetime(2030, 1, 2, 3, 4, 5), "2030-01-02 03:04:05"),
        (datetime(2030, 1, 1, 19, 4, 5, tzinfo=UTC), "2030-01-02 03:04:05"),
    ],
)
def test_scheduled_send_time_as_received(provider, state, send_at, received):
    assert provider.send(["13800138000"], CONTENT, send_at=send_at).outcome is Outcome.OK
    [record] = state.sends
    assert record.send_time == received
    assert state.bad_send_times == []


def test_simulator_keeps_bad_send_times(sim, state):
    assert (
        b"Success"
        in raw_call(
            sim.url, "sms.aspx", action="send", mobile="13800138000", content="x", sendTime="20300102030405"
        ).content
    )
    assert state.sends[0].send_time == "20300102030405"
    assert state.bad_send_times == ["20300102030405"]


def test_no_numbers_per_call_limit_is_stated_so_any_count_is_accepted(sim, provider, state):
    # The document gives no maximum; the provider keeps its own at 100.
    with pytest.raises(ValueError):
        provider.send(numbers(101), CONTENT)
    resp = raw_call(sim.url, "sms.aspx", action="send", mobile=",".join(numbers(101)), content="你好")
    assert "<returnstatus>Success</returnstatus>" in resp.text
    assert "<successCounts>101</successCounts>" in resp.text
    assert [len(s.numbers) for s in state.sends] == [101]


def test_numbers_are_separated_by_half_width_commas_only(sim, state):
    # 多个号码之间用半角逗号隔开: a full-width comma leaves one unreadable entry.
    resp = raw_call(sim.url, "sms.aspx", action="send", mobile="13800138000，13900139000", content="你好")
    assert "<returnstatus>Faild</returnstatus>" in resp.text
    assert "<message>短信号码不能为空</message>" in resp.text
    assert state.sends == []
    resp = raw_call(sim.url, "sms.aspx", action="send", mobile="13800138000,13900139000", content="你好")
    assert "<successCounts>2</successCounts>" in resp.text
    assert state.sends[0].numbers == ["13800138000", "13900139000"]


def test_send_time_in_the_documents_format_is_accepted(sim, state):
    # The document's own example: 定时发送格式 2021-12-24 09:08:10.
    resp = raw_call(
        sim.url, "sms.aspx", action="send", mobile="13800138000", content="你好", sendTime="2031-12-24 09:08:10"
    )
    assert "<returnstatus>Success</returnstatus>" in resp.text
    assert state.sends[0].send_time == "2031-12-24 09:08:10"
    assert state.bad_send_times == []


@pytest.mark.parametrize(
    "recipients, content, outcome, words",
    [
        (["13800138000"], "【某某科技】关于法轮功的通知", Outcome.BLOCKED, "法轮功"),
        (["13800138000"], "【某某科技】it's -- late", Outcome.INVALID_REQUEST, "sql注入字符"),
        (["13800138000"], " ", Outcome.INVALID_REQUEST, "短信内容不能为空"),
        (["12345", "abc"], CONTENT, Outcome.INVALID_REQUEST, "短信号码不能为空"),
        ([""], CONTENT, Outcome.INVALID_REQUEST, "短信号码不能为空"),
    ],
    ids=["forbidden-word", "sql-injection", "blank-content", "no-valid-number", "empty-number"],
)
def test_vendor_checks(provider, state, recipients, content, outcome, words):
    result = provider.send(recipients, content)
    assert result.outcome is outcome
    assert words in result.message
    assert "Faild" in result.raw
    assert state.sends == []


def test_forbidden_words_pass_when_the_check_is_off(sim, state):
    provider = make_provider(sim.url, checkcontent=False)
    assert provider.send(["13800138000"], "【某某科技】关于法轮功的通知").outcome is Outcome.OK
    assert state.sends[0].checkcontent is False


def test_invalid_numbers_are_not_counted(provider, state):
    result = provider.send(["13800138000", "12345", "13900139000"], CONTENT)
    assert (result.outcome, result.accepted, result.rejected) == (Outcome.OK, 2, 1)
    assert state.sends[0].numbers == ["13800138000", "13900139000"]
    assert state.sends[0].rejected == ["12345"]


def test_refuse_switch_leaves_the_numbers_out_of_success_counts_and_reports(sim, provider, state):
    set_faults(sim, refuse=["13900139000"])
    result = provider.send(["13800138000", "13900139000", "13700137000"], CONTENT)
    assert (result.outcome, result.accepted, result.rejected, result.unnamed_refusals) == (Outcome.OK, 2, 1, 1)
    assert state.sends[0].rejected == ["13900139000"]
    reports = provider.parse_reports(provider.fetch("reports"))
    assert sorted(r.mobile for r in reports) == ["13700137000", "13800138000"]


def test_extno_is_recorded(sim, state):
    make_provider(sim.url, extno="0086").send(["13800138000"], CONTENT)
    assert state.sends[0].extno == "0086"


@pytest.mark.parametrize(
    "kwargs, outcome",
    [
        ({"password": "wrong"}, Outcome.AUTH),
        ({"userid": "9999"}, Outcome.AUTH),  # the enterprise id is part of the login
        ({"password": ""}, Outcome.AUTH),  # empty credentials: the account's, every call alike
    ],
)
def test_login_failures(sim, state, kwargs, outcome):
    password = kwargs.pop("password", PASSWORD)
    provider = make_provider(sim.url, password=password, **kwargs)
    assert provider.send(["13800138000"], CONTENT).outcome is outcome
    for kind in ("reports", "inbound", "balance"):
        with pytest.raises(ProviderError) as info:
            getattr(provider, f"parse_{kind}")(provider.fetch(kind))
        assert info.value.outcome is outcome
    assert state.sends == []


def test_balance_is_drawn_per_number_and_segment(provider, state):
    assert provider.parse_balance(provider.fetch("balance")) == 1000
    long_text = SIG + "长" * 134  # 140 characters -> 3 segments
    assert segments_for(long_text) == 3
    assert provider.send(["13800138000", "13900139000"], long_text).outcome is Outcome.OK
    body = provider.fetch("balance")
    assert "<returnstatus>Sucess</returnstatus>" in body  # the family's spelling, read all the same
    assert "<overage>6</overage>" in body and "<sendTotal>1000</sendTotal>" in body
    assert "<message></message>" in body and "<payinfo>预付费</payinfo>" in body  # 返回空: 查询成功
    assert provider.parse_balance(body) == 1000 - 6


def test_insufficient_balance(provider, state):
    state.used[USER] = 999
    result = provider.send(["13800138000", "13900139000"], CONTENT)
    assert result.outcome is Outcome.BALANCE
    assert "大于您当前余额" in result.message
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK
    assert provider.parse_balance(provider.fetch("balance")) == 0


def test_postpaid_has_no_balance(sim, provider, state):
    state.payinfo = POSTPAID
    state.used[USER] = 10_000
    assert provider.send(numbers(3), CONTENT).outcome is Outcome.OK
    body = provider.fetch("balance")
    assert "<payinfo>后付费</payinfo>" in body and "<overage>10003</overage>" in body
    assert provider.parse_balance(body) == math.inf


# -- keyword check ----------------------------------------------------------


@pytest.mark.parametrize("clean", ["未包含非法字符", "没有包含屏蔽词"])
def test_check_keywords(provider, state, clean):
    state.clean_message = clean
    assert provider.check_keywords("【某某科技】代开发票，法轮功") == ["法轮功", "代开发票"]
    assert provider.check_keywords("【某某科技】您好") == []
    assert [c.endpoint for c in state.calls] == ["sms.aspx:checkkeyword"] * 2
    assert state.sends == []


def test_check_keywords_errors(sim, provider, state):
    with pytest.raises(ProviderError) as info:
        make_provider(sim.url, password="wrong").check_keywords("你好")
    assert info.value.outcome is Outcome.AUTH


def test_check_keywords_answers_only_with_a_message(sim, state):
    # The document's answer is <returnsms><message>…</message></returnsms>, for
    # the two login errors too, and lists no content error for this action.
    bad = raw_call(sim.url, "sms.aspx", action="checkkeyword", password="wrong", content="你好").text
    assert "<message>用户名或密码错误</message>" in bad and "returnstatus" not in bad
    empty = raw_call(sim.url, "sms.aspx", action="checkkeyword", password="", content="你好").text
    assert "<message>用户名或密码不能为空</message>" in empty and "returnstatus" not in empty
    for content in ("", "drop table --"):
        clean = raw_call(sim.url, "sms.aspx", action="checkkeyword", content=content).text
        assert "<message>未包含非法字符</message>" in clean and "returnstatus" not in clean
    found = raw_call(sim.url, "sms.aspx", action="checkkeyword", content="法轮功").text
    assert "<message>包含非法字符：法轮功</message>" in found


# -- status reports -------------------------------------------------------


def test_reports_end_to_end_handed_out_once(provider, state):
    state.fail_numbers.add("13900139000")
    result = provider.send(["13800138000", "13900139000"], CONTENT)
    reports = provider.parse_reports(provider.fetch("reports"))
    assert [(r.vendor_id, r.mobile, r.delivered, r.code) for r in reports] == [
        (result.batch_ref, "13800138000", True, "10"),
        (result.batch_ref, "13900139000", False, "20"),
    ]
    assert "DELIVRD" in reports[0].message and "UNDELIV" in reports[1].message
    assert all(
        r.reported_at is not None
        and abs((r.reported_at - datetime.now(UTC).replace(tzinfo=None)).total_seconds() - 8 * 3600) < 60
        for r in reports
    )  # Beijing wall clock
    assert provider.parse_reports(provider.fetch("reports")) == []


def test_reports_capped_at_100_per_call_and_per_account(sim, provider, state):
    provider.send(numbers(100), CONTENT)
    provider.send(numbers(50, "139"), CONTENT)
    other = make_provider(sim.url, username="other", password="pw2")  # same enterprise id
    assert other.parse_reports(other.fetch("reports")) == []
    assert len(provider.parse_reports(provider.fetch("reports"))) == 100
    second = provider.parse_reports(provider.fetch("reports"))
    assert len(second) == 50 and second[0].mobile == "13900000000"
    assert provider.parse_reports(provider.fetch("reports")) == []


def test_status_num_lowers_the_per_call_maximum(sim, state):
    provider = make_provider(sim.url, status_num=30)
    provider.send(numbers(70), CONTENT)
    sizes = [len(provider.parse_reports(provider.fetch("reports"))) for _ in range(4)]
    assert sizes == [30, 30, 10, 0]


def test_report_delay(provider, state):
    state.report_delay = 0.3
    provider.send(["13800138000"], CONTENT)
    assert provider.parse_reports(provider.fetch("reports")) == []
    time.sleep(0.35)
    assert len(provider.parse_reports(provider.fetch("reports"))) == 1


def test_report_access_denied_is_code_3(sim, provider, state):
    state.report_denied.add(USER)
    for kind in ("reports", "inbound"):
        body = provider.fetch(kind)
        assert "<errorstatus><error>3</error>" in body
        with pytest.raises(ProviderError) as info:
            getattr(provider, f"parse_{kind}")(body)
        # a permission of the endpoint, not a refused password: the account's circuit stays closed
        assert (info.value.outcome, info.value.code) == (Outcome.INVALID_REQUEST, "3")


def test_bad_poll_parameters_are_code_4(sim):
    assert "<error>4</error>" in raw_call(sim.url, "statusApi.aspx", action="list").text
    assert "<error>4</error>" in raw_call(sim.url, "statusApi.aspx", action="query", statusNum="x").text
    assert "<error>1</error>" in raw_call(sim.url, "callApi.aspx", action="query", password="").text


def test_no_poll_interval_is_enforced(provider, state):
    # The vendor documents no interval between polls: back-to-back calls answer.
    for _ in range(3):
        for kind in ("reports", "inbound", "balance"):
            getattr(provider, f"parse_{kind}")(provider.fetch(kind))
    assert len(state.calls) == 9


# -- inbound --------------------------------------------------------------


def test_inbound_end_to_end_handed_out_once(sim, provider, state):
    result = provider.send(["13798361236"], CONTENT)
    for mobile, content in [("13798361236", "你好，本次活动路途是怎么的"), ("13826588212", "a<b>&c 😀")]:
        resp = httpx.post(f"{sim.url}_sim/inbound", json={"mobile": mobile, "content": content})
        assert resp.status_code == 200
    body = provider.fetch("inbound")
    assert f"<taskid>{result.batch_ref}</taskid>" in body and "<taskid>0</taskid>" in body
    messages = provider.parse_inbound(body)
    assert [(m.mobile, m.content, m.vendor_id) for m in messages] == [
        ("13798361236", "你好，本次活动路途是怎么的", None),
        ("13826588212", "a<b>&c 😀", None),
    ]
    assert all(m.received_at is not None for m in messages)
    assert provider.parse_inbound(provider.fetch("inbound")) == []


def test_inbound_capped_at_100_per_call(provider, state):
    for i in range(150):
        state.add_inbound(f"138{i:08d}", f"消息{i}")
    state.add_inbound("13900139000", "not ours", username="other")
    sizes = [len(provider.parse_inbound(provider.fetch("inbound"))) for _ in range(3)]
    assert sizes == [100, 50, 0]
    assert state.pending_counts() == {"reports": 0, "inbound": 1}


# -- wire -----------------------------------------------------------------


def test_utf8_is_the_wire_charset(sim, state):
    body = urllib.parse.urlencode(
        {
            "userid": USERID,
            "account": USER,
            "password": PASSWORD,
            "action": "send",
            "mobile": "13800138000",
            "content": "你好",
        },
        encoding="gbk",
    )
    resp = httpx.post(sim.url + "sms.aspx", content=body, headers=FORM)
    assert "短信内容不能为空" in resp.text  # GBK bytes do not decode as UTF-8
    assert state.sends == []
    [err] = state.decode_errors
    assert err.endpoint == "sms.aspx" and PASSWORD not in repr(err)


def test_form_names_are_case_insensitive_and_pages_too(sim, state):
    resp = raw_call(
        sim.url, "SMS.ASPX", action="send", Mobile="13800138000", content="你好", SENDTIME="2030-01-02 03:04:05"
    )
    assert "<returnstatus>Success</returnstatus>" in resp.text
    assert resp.headers["content-type"] == "text/xml; charset=utf-8"
    assert state.sends[0].send_time == "2030-01-02 03:04:05"
    assert httpx.get(sim.url + "nope.aspx").status_code == 404


# -- faults ---------------------------------------------------------------


def test_busy(sim, provider, state):
    set_faults(sim, busy=True)
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.TRANSIENT and "其他错误" in result.message
    for kind in ("reports", "inbound", "balance"):
        with pytest.raises(ProviderError) as info:
            getattr(provider, f"parse_{kind}")(provider.fetch(kind))
        assert info.value.outcome is Outcome.TRANSIENT
    assert state.sends == []


def test_auth_fail(sim, provider):
    set_faults(sim, auth_fail=True)
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.AUTH
    with pytest.raises(ProviderError) as info:
        provider.parse_reports(provider.fetch("reports"))
    assert (info.value.outcome, info.value.code) == (Outcome.AUTH, "2")


def test_empty_login_answers_credentials_empty_to_every_call_until_switched_off(sim, provider, state):
    set_faults(sim, empty_login=True)
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AUTH and "用户名或密码不能为空" in result.message
    with pytest.raises(ProviderError) as info:
        provider.parse_balance(provider.fetch("balance"))
    assert info.value.outcome is Outcome.AUTH and "用户名或密码不能为空" in str(info.value)
    for kind in ("reports", "inbound"):
        with pytest.raises(ProviderError) as info:
            getattr(provider, f"parse_{kind}")(provider.fetch(kind))
        assert (info.value.outcome, info.value.code) == (Outcome.AUTH, "1")
    assert state.sends == []
    set_faults(sim, empty_login=False)
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK


def test_balance_fault(sim, provider, state):
    set_faults(sim, balance=1)
    assert provider.parse_balance(provider.fetch("balance")) == 1
    assert provider.send(["13800138000", "13900139000"], CONTENT).outcome is Outcome.BALANCE
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK


def test_garbled_send_is_ambiguous_but_recorded(sim, provider, state):
    set_faults(sim, garbled=True)
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.AMBIGUOUS
    assert len(state.sends) == 1
    # A garbled poll answer still hands its reports out: they are gone.
    with pytest.raises(ValueError):
        provider.parse_reports(provider.fetch("reports"))
    assert state.pending_counts()["reports"] == 0


def test_hang_is_ambiguous_and_recorded_once(sim, state):
    set_faults(sim, hang=True, hang_seconds=1.0)
    provider = make_provider(sim.url, timeout=httpx.Timeout(5, read=0.3))
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert len(state.sends) == 1
    set_faults(sim, hang=False)
    started = time.monotonic()
    assert provider.parse_balance(provider.fetch("balance")) == 999
    assert time.monotonic() - started < 1.0  # under the 1 s hang: this call was not held, however loaded the host
    assert len(state.sends) == 1 and [c.endpoint for c in state.calls].count("sms.aspx:send") == 1


def test_latency(sim, provider):
    set_faults(sim, latency=0.3)
    started = time.monotonic()
    provider.parse_balance(provider.fetch("balance"))
    assert time.monotonic() - started >= 0.3


# -- control routes and state ----------------------------------------------


def test_control_routes(sim, provider, state):
    provider.send(["13800138000"], CONTENT)
    provider.fetch("reports")
    calls = httpx.get(f"{sim.url}_sim/calls").json()
    assert [c["endpoint"] for c in calls] == ["sms.aspx:send", "statusApi.aspx:query"]

    snap = httpx.get(f"{sim.url}_sim/state").json()
    assert snap["calls"] == 2 and snap["pending"] == {"reports": 0, "inbound": 0}
    assert snap["sends"][0]["numbers"] == ["13800138000"]
    assert snap["sends"][0]["send_time"] is None
    assert snap["balances"][USER] == 999
    assert PASSWORD not in str(snap)

    set_faults(sim, busy=True)
    assert httpx.post(f"{sim.url}_sim/reset").status_code == 200
    assert state.sends == [] and state.calls == [] and not state.faults.busy
    assert state.remaining(USER) == 1000
    # Task ids are never reused, even after a reset.
    assert provider.send(["13800138000"], CONTENT).batch_ref == str(FIRST_TASK_ID + 1)


def test_state_is_safe_to_read_from_other_threads(provider, state):
    errors = snapshot_errors_during(state, lambda: provider.send(["13800138000"], CONTENT))
    assert errors == [] and len(state.sends) == 20


def test_no_password_in_reprs(provider, state):
    provider.send(["13800138000"], CONTENT)
    assert PASSWORD not in repr(state) + repr(state.sends) + repr(state.calls) + repr(provider)


def test_account_names_must_be_ascii():
    with pytest.raises(ValueError, match="ASCII"):
        QxsState({"企业": "pw"})

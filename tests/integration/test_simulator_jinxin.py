"""The jinxin provider against the jinxin simulator, over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import datetime, timedelta

import httpx
import pytest

from smsq.providers.base import BEIJING, Account, Outcome, ProviderError, Secret, SendContext
from smsq.providers.jinxin import JinxinProvider
from smsq.simulator.jinxin import CODES, JinxinState, create_app

from .conftest import running_simulator, set_faults, snapshot_errors_during

USER, PASSWORD, USERID = "acct", "Pw-jinxin-5521", "12"
SIG = "【某某科技】"
CONTENT = "【某某科技】您的验证码是345678,30分钟输入有效。"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def state() -> JinxinState:
    return JinxinState({USER: PASSWORD, "other": "pw2"}, balance=1000, userid=USERID)


@pytest.fixture
def sim(state, simulator_slot):
    slot, running = simulator_slot
    slot.app = create_app(state)
    return running


def make_provider(
    url: str, *, charset: str = "utf-8", fmt: str = "json", password: str = PASSWORD, timeout: float = 5, **options
) -> JinxinProvider:
    account = Account(
        name="t",
        provider="jinxin",
        base_url=url,
        username=USER,
        password=Secret(password),
        charset=charset,
        signature=SIG,
        options={"userid": USERID, "format": fmt, **options},
    )
    return JinxinProvider(account, httpx.Client(timeout=timeout))


@pytest.fixture
def provider(sim):
    return make_provider(sim.url)


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(BEIJING)).strftime("%Y%m%d%H%M%S")


def raw_send(sim, charset: str = "utf-8", **fields: str) -> dict:
    """POST a send form as the vendor reads it; return the decoded JSON answer."""
    params = {
        "action": "send",
        "userid": USERID,
        "account": USER,
        "password": PASSWORD,
        "mobile": "13800138000",
        "content": CONTENT,
        "sendtime": stamp(),
        **fields,
    }
    body = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, encoding=charset)
    resp = httpx.post(
        f"{sim.url}sms.aspx?action=send", content=body.encode("ascii"), headers={"content-type": FORM}, timeout=5
    )
    assert resp.status_code == 200, resp.text
    return json.loads(resp.content.decode(charset))


@pytest.mark.parametrize("userid", ["12", "0123456789abcdefABCDEF0123456789"])
def test_userid_of_any_length_is_compared_not_checked_for_form(userid):
    # The table's "32 letters/digits" contradicts the document's example
    # userid=12: both forms are accepted, only a different id is refused.
    with running_simulator(JinxinState({USER: PASSWORD}, userid=userid), create_app) as sim:
        assert raw_send(sim, userid=userid)["respCode"] == "00000"
        assert raw_send(sim, userid=userid + "0")["respCode"] == "10003"


# -- sending in chunks, both encodings and both answer formats --------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("charset", ["utf-8", "gbk"])
def test_chunked_send_arrives_once_per_number(charset, fmt):
    state = JinxinState({USER: PASSWORD}, charset=charset, format=fmt, userid=USERID)
    numbers = [f"138{i:08d}" for i in range(250)]
    content = "【某某科技】您的验证码是 345678,5分钟内有效。「勿泄露」￥"
    with running_simulator(state, create_app) as sim:
        provider = make_provider(sim.url, charset=charset, fmt=fmt)
        results = [
            provider.send(numbers[i : i + 100], content, None, SendContext(1, seq))
            for seq, i in enumerate(range(0, len(numbers), 100))
        ]
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert [r.accepted for r in results] == [100, 100, 50]
    assert all(r.failed_numbers == {} and len(r.batch_ref) == 32 for r in results)
    assert [r.batch_ref for r in results] == [s.sms_id for s in state.sends]
    arrived = [n for s in state.sends for n in s.numbers]
    assert arrived == numbers  # each once, in order
    assert {s.content for s in state.sends} == {content}
    assert state.balance == 10_000 - 250


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_fail_list_becomes_failed_numbers(fmt):
    state = JinxinState({USER: PASSWORD}, format=fmt, userid=USERID, fail_numbers={"13900139000", "13700137000"})
    with running_simulator(state, create_app) as sim:
        result = make_provider(sim.url, fmt=fmt).send(
            ["13800138000", "13900139000", "13700137000", "12345678901"], CONTENT
        )
    assert result.outcome is Outcome.OK
    assert set(result.failed_numbers) == {"13900139000", "13700137000", "12345678901"}
    assert result.failed_numbers["13900139000"].startswith("00111")
    assert result.failed_numbers["12345678901"].startswith("10112")
    if fmt == "json":  # the JSON failList carries the reason's words too
        assert "号码在黑名单中" in result.failed_numbers["13900139000"]
    assert (result.accepted, result.rejected) == (1, 3)
    [record] = state.sends
    assert record.numbers == ["13800138000"]
    assert record.failed == {"13900139000": "00111", "13700137000": "00111", "12345678901": "10112"}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_refuse_switches_name_the_numbers_or_only_count_them(fmt):
    state = JinxinState({USER: PASSWORD}, format=fmt, userid=USERID)
    three = ["13800138000", "13900139000", "13700137000"]
    with running_simulator(state, create_app) as sim:
        provider = make_provider(sim.url, fmt=fmt)
        set_faults(sim, refuse=["13900139000"])
        named = provider.send(three, CONTENT)
        set_faults(sim, refuse_unnamed=True)  # failCount without failList; XML: successCounts alone
        counted = provider.send(three, CONTENT)
    assert (named.failed_numbers.keys(), named.failed_codes, named.unnamed_refusals) == (
        {"13900139000"},
        {"13900139000": "00111"},
        0,
    )
    assert (counted.failed_numbers, counted.rejected, counted.unnamed_refusals) == ({}, 1, 1)
    assert [s.numbers for s in state.sends] == [["13800138000", "13700137000"]] * 2


def test_extno_is_passed_and_checked(sim, state):
    assert make_provider(sim.url, extno="8888").send(["13800138000"], CONTENT).outcome is Outcome.OK
    assert state.sends[0].extno == "8888"
    assert raw_send(sim, extno="88a")["respCode"] == "10012"


# -- sendtime: a fresh stamp per call, valid 5 minutes -----------------------


def test_sendtime_is_recorded_as_received(provider, state):
    before = datetime.now(BEIJING).replace(microsecond=0)
    provider.send(["13800138000"], CONTENT)
    after = datetime.now(BEIJING)
    [record] = state.sends
    assert len(record.send_time) == 14 and record.send_time.isdigit()
    assert before <= datetime.strptime(record.send_time, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING) <= after


def test_a_retried_call_carries_a_fresh_sendtime(provider, state):
    context = SendContext(batch_id=9, chunk_seq=0, attempt=1, batch_created_at=datetime(2020, 1, 1))
    assert provider.send(["13800138000"], CONTENT, None, context).outcome is Outcome.OK
    time.sleep(1.05 - time.time() % 1)  # into the next second
    retry = SendContext(batch_id=9, chunk_seq=0, attempt=2, batch_created_at=datetime(2020, 1, 1))
    assert provider.send(["13800138000"], CONTENT, None, retry).outcome is Outcome.OK
    first, second = (s.send_time for s in state.sends)
    assert second > first


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["stale", "ahead"])
def test_a_sendtime_out_of_the_window_is_refused(provider, state, skew):
    provider.now = lambda: datetime.now(BEIJING) + skew
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AUTH  # every call alike until the clock is set: the account rests
    assert result.code == "10004"
    assert "时间戳无效或已过期" in result.message and "clock" in result.message
    assert state.sends == []
    provider.now = lambda: datetime.now(BEIJING) - timedelta(minutes=4)  # still inside 5 minutes
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK


def test_validity_window_is_settable(provider, state):
    state.sendtime_validity = 2.0
    provider.now = lambda: datetime.now(BEIJING) - timedelta(seconds=4)
    assert provider.send(["13800138000"], CONTENT).code == "10004"


def test_a_stamp_kept_from_enqueue_time_would_be_refused(sim, state):
    queued_at = datetime.now(BEIJING) - timedelta(minutes=5, seconds=2)
    assert raw_send(sim, sendtime=stamp(queued_at))["respCode"] == "10004"
    assert raw_send(sim, sendtime=stamp())["respCode"] == "00000"
    assert [c for c, _ in state.refusals] == ["10004"]


@pytest.mark.parametrize(
    "value, code",
    [("", "10006"), ("2025-01-02 03:04:05", "10004"), ("20251399000000", "10004"), ("1735758245", "10004")],
)
def test_malformed_sendtime(sim, state, value, code):
    assert raw_send(sim, sendtime=value)["respCode"] == code
    assert state.sends == []


# -- the vendor's limits ------------------------------------------------------


def test_more_than_100_numbers(sim, state):
    numbers = [f"138{i:08d}" for i in range(101)]
    answer = raw_send(sim, mobile=",".join(numbers))
    assert answer == {"respCode": "10005", "respDesc": CODES["10005"]}
    assert state.sends == []
    assert raw_send(sim, mobile=",".join(numbers[:100]))["respCode"] == "00000"
    assert len(state.sends[0].numbers) == 100


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"content": "【测试】" + "好" * 297}, "10008"),
        ({"content": "您好,没有签名"}, "10011"),
        ({"content": "您的验证码是345678【某某科技】"}, "10011"),  # 短信签名+短信内容: signature first
        ({"content": ""}, "10006"),
        ({"mobile": ""}, "10006"),
        ({"mobile": ",,"}, "10006"),
        ({"action": "query"}, "10006"),
        ({"userid": None}, "10006"),
        ({"userid": "13"}, "10003"),
        ({"password": "wrong"}, "10002"),
        ({"account": "nobody"}, "10002"),
    ],
)
def test_request_refusals(sim, state, fields, code):
    answer = raw_send(sim, **fields)
    assert answer == {"respCode": code, "respDesc": CODES[code]}
    assert state.sends == []


def test_field_names_ignore_case(sim, state):
    # The document writes Userid/Content/sendtime in its table and
    # userid/content/sendTime in its example; ASP.NET ignores case.
    body = urllib.parse.urlencode(
        {
            "Userid": USERID,
            "Account": USER,
            "Password": PASSWORD,
            "Mobile": "13800138000",
            "Content": CONTENT,
            "sendTime": stamp(),
            "extno": "",
        }
    )
    resp = httpx.post(f"{sim.url}SMS.aspx?action=send", content=body, headers={"content-type": FORM})
    assert resp.json()["respCode"] == "00000"
    assert state.sends[0].content == CONTENT and state.sends[0].extno is None


@pytest.mark.parametrize(
    "make, outcome, code, words",
    [
        (lambda url: make_provider(url, password="wrong"), Outcome.AUTH, "10002", "账号或密码错误"),
        (lambda url: make_provider(url, userid="99"), Outcome.AUTH, "10003", "企业ID错误"),
    ],
    ids=["password", "userid"],
)
def test_credentials_through_the_provider(sim, state, make, outcome, code, words):
    result = make(sim.url).send(["13800138000"], CONTENT)
    assert (result.outcome, result.code) == (outcome, code)
    assert words in result.message
    assert state.sends == []


def test_forbidden_word_is_blocked(provider, state):
    result = provider.send(["13800138000"], "【某某科技】关于法轮功的通知")
    assert (result.outcome, result.code) == (Outcome.BLOCKED, "10009")
    assert state.sends == []


def test_balance_is_drawn_per_number_and_segment(provider, state):
    long_text = "【某某科技】" + "长" * 134  # 140 characters -> 3 segments
    assert provider.send(["13800138000", "13900139000"], long_text).outcome is Outcome.OK
    assert state.balance == 1000 - 2 * 3
    state.balance = 1
    result = provider.send(["13800138000", "13900139000"], CONTENT)
    assert (result.outcome, result.code) == (Outcome.BALANCE, "10007")
    assert "账户余额不足" in result.message and len(state.sends) == 1


def test_xml_answer_shows_the_remaining_balance():
    state = JinxinState({USER: PASSWORD}, balance=50, format="xml", userid=USERID)
    with running_simulator(state, create_app) as sim:
        make_provider(sim.url, fmt="xml").send(["13800138000"], CONTENT)
        body = urllib.parse.urlencode(
            {
                "action": "send",
                "userid": USERID,
                "account": USER,
                "password": "x",
                "mobile": "13800138000",
                "content": CONTENT,
                "sendtime": stamp(),
            }
        )
        resp = httpx.post(f"{sim.url}sms.aspx", content=body, headers={"content-type": FORM})
    assert resp.headers["content-type"] == "text/xml; charset=utf-8"
    assert "<returnsms>10002</returnsms>" in resp.text and "<remainpoint>49</remainpoint>" in resp.text


# -- encoding and format settings -------------------------------------------


@pytest.mark.parametrize("sim_charset, client_charset", [("gbk", "utf-8"), ("utf-8", "gbk")])
def test_wrong_encoding_is_refused(sim_charset, client_charset):
    state = JinxinState({USER: PASSWORD}, charset=sim_charset, userid=USERID)
    with running_simulator(state, create_app) as sim:
        result = make_provider(sim.url, charset=client_charset).send(["13800138000"], "【测试】好")
    assert (result.outcome, result.code) == (Outcome.INVALID_REQUEST, "10010")
    assert "字符编码错误" in result.message
    assert state.sends == []


def test_gbk_answer_is_encoded_in_gbk():
    state = JinxinState({USER: PASSWORD}, charset="gbk", userid=USERID)
    with running_simulator(state, create_app) as sim:
        answer = raw_send(sim, "gbk", password="wrong")
        resp = httpx.post(f"{sim.url}sms.aspx", content=b"", headers={"content-type": FORM})
    assert answer["respDesc"] == "账号或密码错误"
    assert resp.headers["content-type"] == "application/json; charset=gbk"
    assert resp.content == '{"respCode": "10006", "respDesc": "缺少必选参数"}'.encode("gbk")


@pytest.mark.parametrize("sim_format, client_format", [("xml", "json"), ("json", "xml")])
def test_format_mismatch_is_ambiguous_and_says_why(sim_format, client_format):
    state = JinxinState({USER: PASSWORD}, format=sim_format, userid=USERID)
    with running_simulator(state, create_app) as sim:
        result = make_provider(sim.url, fmt=client_format).send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS  # it was in fact accepted
    assert f'format = "{sim_format}"' in result.message
    assert len(state.sends) == 1


@pytest.mark.parametrize("kwargs", [{"format": "text"}, {"charset": "big5"}])
def test_simulator_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        JinxinState(**kwargs)


def test_post_only_and_paths(sim, state):
    assert httpx.get(f"{sim.url}sms.aspx?action=send").status_code == 405
    assert httpx.post(f"{sim.url}other.aspx").status_code == 404
    # A body that is not a form is not read: the fields are missing.
    resp = httpx.post(f"{sim.url}sms.aspx?action=send", json={"account": USER})
    assert resp.json()["respCode"] == "10006"
    assert [c.endpoint for c in state.calls] == ["send"]


# -- no polls ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reports", "inbound", "balance", "blocked"])
def test_send_only_vendor(provider, sim, state, kind):
    with pytest.raises(ProviderError):
        provider.fetch(kind)
    assert state.calls == []
    assert httpx.post(f"{sim.url}_sim/inbound", json={"mobile": "13800138000", "content": "x"}).status_code == 404


# -- faults ---------------------------------------------------------------


def test_busy_is_transient(provider, sim, state):
    set_faults(sim, busy=True)
    result = provider.send(["13800138000"], CONTENT)
    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "10001")
    assert "系统繁忙" in result.message and state.sends == []


def test_auth_fail(provider, sim, state):
    set_faults(sim, auth_fail=True)
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.AUTH


def test_balance_override(provider, sim):
    set_faults(sim, balance=1)
    assert provider.send(["13800138000", "13900139000"], CONTENT).outcome is Outcome.BALANCE
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK


def test_garbled_is_ambiguous_and_took_effect(provider, sim, state):
    set_faults(sim, garbled=True)
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert len(state.sends) == 1 and len(state.calls) == 1


def test_hang_is_ambiguous_and_recorded_once(sim, state):
    set_faults(sim, hang=True, hang_seconds=1.0)
    provider = make_provider(sim.url, timeout=0.3)
    result = provider.send(["13800138000"], CONTENT)
    assert result.outcome is Outcome.AMBIGUOUS
    assert "ReadTimeout" in result.message
    assert len(state.sends) == 1 and len(state.calls) == 1
    set_faults(sim, hang=False)
    started = time.monotonic()
    assert make_provider(sim.url).send(["13800138000"], CONTENT).outcome is Outcome.OK
    assert time.monotonic() - started < 1.0  # under the 1 s hang: this call was not held, however loaded the host


def test_latency(provider, sim):
    set_faults(sim, latency=0.3)
    started = time.monotonic()
    assert provider.send(["13800138000"], CONTENT).outcome is Outcome.OK
    assert time.monotonic() - started >= 0.3


# -- control routes and state ----------------------------------------------


def test_control_routes(provider, sim, state):
    provider.send(["13800138000"], CONTENT)
    raw_send(sim, password="wrong")
    calls = httpx.get(f"{sim.url}_sim/calls").json()
    assert [c["endpoint"] for c in calls] == ["send", "send"]
    snap = httpx.get(f"{sim.url}_sim/state").json()
    assert snap["calls"] == 2 and snap["pending"] == {}
    assert snap["sends"][0]["numbers"] == ["13800138000"]
    assert snap["sends"][0]["send_time"] == state.sends[0].send_time
    assert [r["code"] for r in snap["refusals"]] == ["10002"]
    assert PASSWORD not in json.dumps(snap, ensure_ascii=False)

    set_faults(sim, busy=True)
    assert httpx.post(f"{sim.url}_sim/reset").status_code == 200
    assert state.sends == [] and state.calls == [] and state.refusals == [] and not state.faults.busy
    assert state.balance == 1000


def test_state_is_safe_to_read_from_other_threads(provider, state):
    errors = snapshot_errors_during(state, lambda: provider.send(["13800138000"], CONTENT))
    assert errors == [] and len(state.sends) == 20


def test_no_password_in_reprs(provider, state):
    provider.send(["13800138000"], CONTENT)
    provider.send(["13800138000"], CONTENT, None, SendContext(attempt=2))
    shown = repr(state) + repr(state.sends) + repr(provider) + repr(state.refusals)
    assert PASSWORD not in shown


def test_an_account_signature_goes_in_front_and_is_accepted(provider, state):
    # A new user: signature configured on the account, content written without one.
    content = provider.prepare_content("您的验证码是345678,30分钟输入有效。")
    assert provider.send(["13800138000"], content).outcome is Outcome.OK
    assert state.sends[0].content == SIG + "您的验证码是345678,30分钟输入有效。"

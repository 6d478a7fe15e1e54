"""The dxt simulator, over real HTTP."""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pytest

from smsq.simulator.dxt import FIRST_INBOUND_ID, FIRST_SMSID, DxtState, create_app, segments_for

from .conftest import running_simulator, set_faults, snapshot_errors_during

USER, PASSWORD = "test", "secret"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def state() -> DxtState:
    return DxtState({USER: PASSWORD, "other": "pw2"}, balance=1000)


@pytest.fixture
def sim(state, simulator_slot):
    slot, running = simulator_slot
    slot.app = create_app(state)
    return running


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.url, timeout=5) as c:
        yield c


def call(client: httpx.Client, endpoint: str, charset: str = "gbk", **params: str) -> str:
    """POST a form encoded the way the vendor reads it; return the decoded answer."""
    params = {"us_name": USER, "us_pwd": PASSWORD, **params}
    body = urllib.parse.urlencode(params, encoding=charset)
    resp = client.post(endpoint, content=body.encode("ascii"), headers=FORM)
    assert resp.status_code == 200, resp.text
    return resp.content.decode(charset)


def send(client: httpx.Client, numbers: str, content: str = "【测试】您好", **extra: str) -> str:
    return call(client, "sendsms_txt.asp", send_phone=numbers, send_content=content, **extra)


# -- server ---------------------------------------------------------------


def test_serve_reports_real_port(sim):
    assert sim.port > 0
    assert sim.url == f"http://127.0.0.1:{sim.port}/"


# -- send -----------------------------------------------------------------


def test_gbk_post_round_trip(client, state):
    content = "【某某科技】您的验证码是 123456,5分钟内有效。"
    assert send(client, "13800138000", content) == f"0|1|0|{FIRST_SMSID}"
    [record] = state.sends
    assert record.content == content
    assert record.numbers == ["13800138000"]
    assert record.smsids == [str(FIRST_SMSID)]
    assert record.username == USER
    assert state.decode_errors == []


def test_get_with_gbk_query_string(client, state):
    query = urllib.parse.urlencode(
        {"us_name": USER, "us_pwd": PASSWORD, "send_phone": "13800138000", "send_content": "上行测试"},
        encoding="gbk",
    )
    resp = client.get(f"sendsms_txt.asp?{query}")
    assert resp.text.startswith("0|1|0|")
    assert state.sends[0].content == "上行测试"


def test_utf8_sent_to_gbk_account_is_a_decode_error(client, state):
    # UTF-8 often decodes as GBK mojibake without error; "好" (E5 A5 BD)
    # leaves a dangling lead byte, which GBK cannot decode.
    assert "好".encode() == b"\xe5\xa5\xbd"
    body = urllib.parse.urlencode(
        {"us_name": USER, "us_pwd": PASSWORD, "send_phone": "13800138000", "send_content": "好"},
        encoding="utf-8",
    )
    resp = client.post("sendsms_txt.asp", content=body, headers=FORM)
    assert resp.text == "-2"
    assert state.sends == []
    [err] = state.decode_errors
    assert err.endpoint == "sendsms_txt.asp"
    assert PASSWORD not in repr(err)


def test_charset_is_a_state_setting():
    state = DxtState({USER: PASSWORD}, charset="utf-8")
    with running_simulator(state, create_app) as sim, httpx.Client(base_url=sim.url) as client:
        assert call(client, "sendsms_txt.asp", "utf-8", send_phone="13800138000", send_content="😀你好")[0] == "0"
    assert state.sends[0].content == "😀你好"


def test_multiple_numbers_get_one_smsid_each_and_bad_ones_are_counted(client, state):
    answer = send(client, "13800138000,075580808080,12345,+8613900139000,13900139000")
    code, a, b, ids = answer.split("|")
    assert (code, a, b) == ("0", "3", "2")
    assert ids.split(",") == [str(FIRST_SMSID + i) for i in range(3)]
    assert state.sends[0].numbers == ["13800138000", "075580808080", "13900139000"]
    assert state.sends[0].rejected == ["12345", "+8613900139000"]


def test_refuse_switch_counts_the_numbers_in_b_with_no_smsid_and_no_report(client, sim, state):
    set_faults(sim, refuse=["13900139000"])
    code, a, b, ids = send(client, "13800138000,13900139000,13700137000").split("|")
    assert (code, a, b) == ("0", "2", "1")
    assert len(ids.split(",")) == 2  # one SMSID per accepted number only
    [record] = state.sends
    assert (record.numbers, record.rejected) == (["13800138000", "13700137000"], ["13900139000"])
    reports = call(client, "get_report_txt.asp").split("|")
    assert reports[0] == "2" and not any("13900139000" in r for r in reports)
    # every number refused: still 0|a|b|d, with nothing taken
    assert send(client, "13900139000") == "0|0|1|"
    bad = httpx.post(f"{sim.url}_sim/faults", json={"refuse": [13900139000]})
    assert bad.status_code == 400  # numbers as strings, as they are sent


def test_more_than_100_numbers_is_minus_4(client, state):
    numbers = [f"138{i:08d}" for i in range(101)]
    assert send(client, ",".join(numbers)) == "-4"
    assert state.sends == []
    assert send(client, ",".join(numbers[:100])).startswith("0|100|0|")


def test_login_failures(client, state):
    assert call(client, "sendsms_txt.asp", us_pwd="wrong", send_phone="13800138000", send_content="x") == "-7"
    # A send has no "no such user" code: -7 as well.
    assert call(client, "sendsms_txt.asp", us_name="nobody", send_phone="13800138000", send_content="x") == "-7"
    for endpoint in ("get_report_txt.asp", "get_receive_message_txt.asp", "Get_Account_Balance.asp"):
        assert call(client, endpoint, us_pwd="wrong") == "-7"
        assert call(client, endpoint, us_name="nobody") == "-1"
    assert state.sends == []
    # Each refusal is a failed login on record, by endpoint; an accepted login is not.
    assert [c.endpoint for c in state.refused_logins] == ["sendsms_txt.asp"] * 2 + [
        e for e in ("get_report_txt.asp", "get_receive_message_txt.asp", "Get_Account_Balance.asp") for _ in (1, 2)
    ]
    call(client, "Get_Account_Balance.asp")
    assert len(state.refused_logins) == 8 and len(state.snapshot()["refused_logins"]) == 8


def test_forbidden_word_answer_names_the_word(client, state):
    resp = client.post(
        "sendsms_txt.asp",
        content=urllib.parse.urlencode(
            {"us_name": USER, "us_pwd": PASSWORD, "send_phone": "13800138000", "send_content": "关于法轮功的通知"},
            encoding="gbk",
        ),
        headers=FORM,
    )
    assert resp.content == "-3|法轮功".encode("gbk")
    assert resp.headers["content-type"] == "text/plain; charset=gbk"
    assert state.sends == []


def test_request_errors(client, state):
    assert send(client, "") == "-1"
    assert send(client, "13800138000", "") == "-2"
    assert send(client, "13800138000", "字" * 336) == "-8"
    assert send(client, "13800138000", "字" * 335).startswith("0|1|0|")
    state.locked.add(USER)
    assert send(client, "13800138000") == "-10"


def test_balance_is_drawn_per_number_and_segment(client, state):
    assert call(client, "Get_Account_Balance.asp") == "1000"
    long_text = "长" * 140  # 140 > 70 -> ceil(140 / 67) = 3 segments
    assert segments_for(long_text) == 3 and segments_for("短" * 70) == 1
    assert send(client, "13800138000,13900139000,bad", long_text).startswith("0|2|1|")
    assert call(client, "Get_Account_Balance.asp") == str(1000 - 2 * 3)
    assert call(client, "Get_Account_Balance.asp", us_name="other", us_pwd="pw2") == "1000"


def test_insufficient_balance_is_minus_9(client, state):
    state.balances[USER] = 2
    assert send(client, "13800138000,13900139000,13700137000") == "-9"
    assert state.sends == [] and state.balances[USER] == 2
    assert send(client, "13800138000,13900139000").startswith("0|2|0|")
    assert state.balances[USER] == 0


def test_send_time_is_recorded(client, state):
    answers = [
        send(client, "13800138000", send_time="20301231235959"),
        send(client, "13800138000", send_time="2030-12-31"),
        send(client, "13800138000"),
    ]
    assert [s.send_time for s in state.sends] == ["20301231235959", "2030-12-31", None]
    assert state.bad_send_times == ["2030-12-31"]
    # 格式必须为14个数字 comes with no code: a badly formatted time is answered
    # like any accepted send.
    assert answers == [f"0|1|0|{s.smsids[0]}" for s in state.sends]


def test_paths_are_case_insensitive(client):
    resp = client.get("get_account_balance.ASP", params={"us_name": USER, "us_pwd": PASSWORD})
    assert resp.text == "1000"
    assert client.get("nope.asp").status_code == 404


# -- status reports -------------------------------------------------------


def test_reports_are_handed_out_once(client, state):
    state.fail_numbers.add("13900139000")
    ids = send(client, "13800138000,13900139000").split("|")[3].split(",")
    answer = call(client, "get_report_txt.asp")
    assert answer == f"2|{ids[0]};13800138000;10|{ids[1]};13900139000;20"
    assert call(client, "get_report_txt.asp") == "0"


def test_reports_are_per_account_and_capped_at_100(client, state):
    numbers = [f"138{i:08d}" for i in range(100)]
    send(client, ",".join(numbers))
    send(client, "13900139000,13900139001")
    assert call(client, "get_report_txt.asp", us_name="other", us_pwd="pw2") == "0"
    first = call(client, "get_report_txt.asp").split("|")
    assert first[0] == "100" and len(first) == 101
    second = call(client, "get_report_txt.asp").split("|")
    assert second[0] == "2" and second[1].endswith(";13900139000;10")
    assert call(client, "get_report_txt.asp") == "0"


def test_report_delay(client, state):
    state.report_delay = 0.3
    send(client, "13800138000")
    assert call(client, "get_report_txt.asp") == "0"
    time.sleep(0.35)
    assert call(client, "get_report_txt.asp").startswith("1|")


# -- inbound --------------------------------------------------------------


def test_inbound_uses_both_separators_and_is_handed_out_once(client, sim, state):
    for mobile, content in [("13798361236", "我回复一条"), ("13826588212", "我也回复一条;好,的")]:
        resp = httpx.post(f"{sim.url}_sim/inbound", json={"mobile": mobile, "content": content})
        assert resp.status_code == 200
    a, b = FIRST_INBOUND_ID, FIRST_INBOUND_ID + 1
    assert a % 2 == 1
    # The vendor's own example: 2|133,13798361236;我回复一条|134,...
    assert call(client, "get_receive_message_txt.asp") == (
        f"2|{a},13798361236;我回复一条|{b};13826588212;我也回复一条;好,的"
    )
    assert call(client, "get_receive_message_txt.asp") == "0"


def test_inbound_is_capped_at_50(client, state):
    for i in range(60):
        state.add_inbound(f"138{i:08d}", f"消息{i}")
    first = call(client, "get_receive_message_txt.asp").split("|")
    assert first[0] == "50" and len(first) == 51
    assert call(client, "get_receive_message_txt.asp").split("|")[0] == "10"
    assert call(client, "get_receive_message_txt.asp") == "0"


# -- faults ---------------------------------------------------------------


def test_busy(client, sim, state):
    set_faults(sim, busy=True)
    assert send(client, "13800138000") == "-99"
    assert call(client, "get_report_txt.asp") == "-3"
    assert call(client, "get_receive_message_txt.asp") == "-3"
    assert client.post("Get_Account_Balance.asp", data={"us_name": USER, "us_pwd": PASSWORD}).status_code == 503
    assert state.sends == []


def test_auth_fail(client, sim, state):
    set_faults(sim, auth_fail=True)
    assert send(client, "13800138000") == "-7"
    assert call(client, "get_report_txt.asp") == "-7"
    assert call(client, "Get_Account_Balance.asp") == "-7"
    assert len(state.refused_logins) == 3


def test_balance_override(client, sim):
    set_faults(sim, balance=1)
    assert call(client, "Get_Account_Balance.asp") == "1"
    assert send(client, "13800138000,13900139000") == "-9"


def test_garbled_answer_still_takes_effect(client, sim, state):
    set_faults(sim, garbled=True)
    resp = client.post(
        "sendsms_txt.asp",
        data={"us_name": USER, "us_pwd": PASSWORD, "send_phone": "13800138000", "send_content": "hi"},
    )
    assert resp.status_code == 200
    assert "|" not in resp.text and not resp.text.lstrip("-").isdigit()
    assert len(state.sends) == 1


def test_hang_accepts_then_times_out_while_server_stays_responsive(client, sim, state):
    set_faults(sim, hang=True, hang_seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "sendsms_txt.asp",
            data={"us_name": USER, "us_pwd": PASSWORD, "send_phone": "13800138000", "send_content": "hi"},
            timeout=httpx.Timeout(5, read=0.3),
        )
    assert len(state.sends) == 1  # accepted by the vendor all the same
    set_faults(sim, hang=False)
    started = time.monotonic()
    assert call(client, "Get_Account_Balance.asp") == "999"
    assert time.monotonic() - started < 1.0  # under the 1 s hang: this call was not held, however loaded the host


def test_latency(client, sim):
    set_faults(sim, latency=0.3)
    started = time.monotonic()
    assert call(client, "Get_Account_Balance.asp") == "1000"
    assert time.monotonic() - started >= 0.3


# -- control routes and state ----------------------------------------------


def test_control_routes(client, sim, state):
    send(client, "13800138000")
    call(client, "get_report_txt.asp")
    calls = httpx.get(f"{sim.url}_sim/calls").json()
    assert [c["endpoint"] for c in calls] == ["sendsms_txt.asp", "get_report_txt.asp"]
    assert calls[0]["at"] <= calls[1]["at"] <= time.time()

    snap = httpx.get(f"{sim.url}_sim/state").json()
    assert snap["calls"] == 2 and snap["pending"] == {"reports": 0, "inbound": 0}
    assert snap["sends"][0]["numbers"] == ["13800138000"]
    assert PASSWORD not in str(snap)

    bad = httpx.post(f"{sim.url}_sim/faults", json={"nonsense": True})
    assert bad.status_code == 400
    assert httpx.post(f"{sim.url}_sim/faults", json={"latency": True}).status_code == 400

    set_faults(sim, busy=True)
    assert httpx.post(f"{sim.url}_sim/reset").status_code == 200
    assert state.sends == [] and state.calls == [] and not state.faults.busy
    assert state.balances[USER] == 1000
    # Ids are never reused, even after a reset.
    assert send(client, "13800138000") == f"0|1|0|{FIRST_SMSID + 1}"


def test_state_is_safe_to_read_from_other_threads(client, sim, state):
    errors = snapshot_errors_during(state, lambda: send(client, "13800138000"))
    assert errors == [] and len(state.sends) == 20


def test_no_password_in_reprs(client, state):
    send(client, "13800138000")
    assert PASSWORD not in repr(state)
    assert PASSWORD not in repr(state.sends)

"""The orgws provider and zeep against the orgws SOAP simulator, over real HTTP."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import httpx
import pytest
from lxml import etree

from smsq.providers.base import BEIJING, Account, Outcome, ProviderError, Secret, SendContext
from smsq.providers.orgws import BINDING, OrgwsProvider, batch_timestamp
from smsq.providers.soap import service, soap_client, wsdl_path
from smsq.simulator.orgws import FIRST_ACCOUNT_ID, FIRST_BATCH_ID, OrgwsState, create_app, segments_for

from .conftest import set_faults

USER, PASSWORD = "test", "Pw-orgws-4471"
ORG_ID = 20345
SIG = "【某某科技】"
CONTENT = "【某某科技】您的验证码是 123456,5分钟内有效。"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://tempuri.org/"


@pytest.fixture
def state() -> OrgwsState:
    return OrgwsState({USER: PASSWORD, "other": "pw2"}, balance=1000, org_id=ORG_ID)


@pytest.fixture
def sim(state, simulator_slot):
    slot, running = simulator_slot
    slot.app = create_app(state)
    return running


def make_provider(url: str, *, password: str = PASSWORD, timeout=5, **options) -> OrgwsProvider:
    account = Account(
        name="t",
        provider="orgws",
        base_url=url,
        username=USER,
        password=Secret(password),
        charset="utf-8",
        signature=SIG,
        options={"org_id": ORG_ID, **options},
    )
    return OrgwsProvider(account, httpx.Client(timeout=timeout))


@pytest.fixture
def provider(sim) -> OrgwsProvider:
    return make_provider(sim.url)


@pytest.fixture
def svc(sim):
    """zeep itself on the shipped WSDL, for calls the provider never makes (over-limit, bad formats)."""
    return service(soap_client("orgws.wsdl", httpx.Client(timeout=5)), BINDING, sim.url)


def ctx(
    batch: int = 1, seq: int = 0, attempt: int = 1, created=datetime(2025, 3, 8, 2, 20, 0), stamp: int | None = None
) -> SendContext:
    return SendContext(batch, seq, attempt, created, stamp)


def zeep_send(svc, phone: str = "13800138000", message: str = CONTENT, timestamp: int = 1741400400, **kw):
    return svc.SendMessage(Id=ORG_ID, Name=USER, Psw=PASSWORD, Message=message, Phone=phone, Timestamp=timestamp, **kw)


def post_raw(
    sim, body: bytes, action: str = '"http://tempuri.org/SendMessage"', ctype: str = "text/xml; charset=utf-8"
) -> httpx.Response:
    return httpx.post(sim.url, content=body, headers={"content-type": ctype, "SOAPAction": action})


def fault_of(resp: httpx.Response) -> tuple[str, str]:
    root = etree.fromstring(resp.content)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    return fault.findtext("faultcode"), fault.findtext("faultstring")


# -- WSDL -------------------------------------------------------------------


def test_wsdl_is_the_shipped_one_with_the_address_rewritten(sim):
    resp = httpx.get(f"{sim.url}Service.asmx?wsdl")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/xml")
    served = etree.fromstring(resp.content)
    (address,) = served.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == f"{sim.url}Service.asmx"
    shipped = etree.parse(wsdl_path("orgws.wsdl")).getroot()
    address.set("location", "http://localhost/Service.asmx")
    assert etree.tostring(served, method="c14n") == etree.tostring(shipped, method="c14n")
    ops = {op.get("name") for op in served.iter("{http://schemas.xmlsoap.org/wsdl/}operation")}
    assert ops == {"UserLogin", "UpdatePsw", "GetBalance", "SendMessage", "SendTimer", "SendMessageExt"}


# -- send -------------------------------------------------------------------


def test_batch_in_chunks_arrives_once_per_number_with_one_timestamp(provider, state):
    numbers = [f"139{i:08d}" for i in range(250)]
    chunks = [numbers[i : i + provider.max_numbers] for i in range(0, len(numbers), provider.max_numbers)]
    assert [len(c) for c in chunks] == [100, 100, 50]
    results = [provider.send(chunk, CONTENT, context=ctx(7, seq)) for seq, chunk in enumerate(chunks)]
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert [n for s in state.sends for n in s.numbers] == numbers
    assert {s.content for s in state.sends} == {CONTENT}
    assert {s.timestamp for s in state.sends} == {batch_timestamp(ctx(7))}
    # The vendor groups calls with one Timestamp into one batch: one Id for all chunks.
    assert {r.batch_ref for r in results} == {str(FIRST_BATCH_ID)}
    assert {s.operation for s in state.sends} == {"SendMessage"}
    assert state.balances[USER] == 1000 - 250

    other = provider.send(["13800138000"], CONTENT, context=ctx(8, created=datetime(2025, 3, 8, 2, 21, 0)))
    assert state.sends[-1].timestamp != batch_timestamp(ctx(7))
    assert other.batch_ref == str(FIRST_BATCH_ID + 1)


def test_two_batches_of_one_second_are_two_vendor_batches(provider, state):
    # Created in one second, the second batch took the next free second (store/stamps.py).
    created = datetime(2025, 3, 8, 2, 20, 0)
    second_of = batch_timestamp(ctx(created=created))
    first = provider.send(["13800138000"], CONTENT, context=ctx(21, created=created, stamp=second_of))
    second = provider.send(["13800138000"], CONTENT, context=ctx(22, created=created, stamp=second_of + 1))
    assert [r.outcome for r in (first, second)] == [Outcome.OK] * 2
    assert [s.timestamp for s in state.sends] == [second_of, second_of + 1]
    assert first.batch_ref != second.batch_ref  # the vendor groups by Timestamp: not merged
    # Without the stamps the creation second alone would merge them into one vendor batch.
    merged = provider.send(["13900139000"], CONTENT, context=ctx(23, created=created))
    assert merged.batch_ref == first.batch_ref


def test_retry_of_a_chunk_carries_the_same_timestamp(provider, state):
    first = provider.send(["13800138000"], CONTENT, context=ctx(3, 1, attempt=1))
    again = provider.send(["13800138000"], CONTENT, context=ctx(3, 1, attempt=2))
    assert state.sends[0].timestamp == state.sends[1].timestamp
    assert first.batch_ref == again.batch_ref


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(CONTENT, id="chinese"),
        pytest.param("【测试】a<b>&c;d'e\"f ]]>", id="xml-metacharacters"),
        pytest.param("【测试】第一行\n第二行", id="newline"),
        pytest.param("【测试】价格:￥100「八折」😀", id="full-width-and-emoji"),
    ],
)
def test_content_arrives_intact(provider, state, content):
    assert provider.send(["13800138000"], content, context=ctx()).outcome is Outcome.OK
    assert state.sends[0].content == content


def test_answers_deserialise_with_zeep_on_the_shipped_wsdl(svc, state):
    answer = zeep_send(svc, "13800138000;12345")
    assert (answer.State, answer.Id, answer.FailPhone) == (1, FIRST_BATCH_ID, "12345")
    assert svc.UserLogin(Id=ORG_ID, Name=USER, Psw=PASSWORD) == FIRST_ACCOUNT_ID
    balance = svc.GetBalance(Id=ORG_ID, Name=USER, Psw=PASSWORD)
    assert (balance.Balance, balance.Sended, balance.State, balance.Totaled) == (999, 1, FIRST_ACCOUNT_ID, 1000)


@pytest.mark.parametrize(
    "kw, state_code, fail_phone",
    [
        pytest.param(dict(phone=";".join(f"138{i:08d}" for i in range(1001))), -10, None, id="1001-numbers"),
        pytest.param(dict(message="【测试】" + "好" * 198), -6, None, id="202-characters"),
        pytest.param(dict(message="【测试】" + "好" * 196 + "😀"), -6, None, id="emoji-counts-two"),
        pytest.param(dict(message=""), -5, None, id="empty-message"),
        pytest.param(dict(phone=""), -7, None, id="empty-phone"),
        pytest.param(dict(phone=" ; ;"), -7, None, id="only-separators"),
        pytest.param(dict(phone="12345;abc"), -10, "12345;abc", id="no-valid-number"),
        pytest.param(dict(message="【测试】关于法轮功的通知"), -13, "法轮功", id="forbidden-word"),
        pytest.param(dict(timestamp=0), -2, None, id="no-timestamp"),
    ],
)
def test_vendor_limits(svc, state, kw, state_code, fail_phone):
    answer = zeep_send(svc, **kw)
    assert (answer.State, answer.FailPhone) == (state_code, fail_phone)
    assert state.sends == []


def test_1000_numbers_and_201_characters_pass(svc, state):
    state.balances[USER] = 10_000
    numbers = [f"138{i:08d}" for i in range(1000)]
    assert zeep_send(svc, ";".join(numbers)).State == 1
    assert zeep_send(svc, message="【测试】" + "好" * 197).State == 1
    assert len(state.sends[0].numbers) == 1000
    assert state.sends[1].segments == segments_for("好" * 201) == 3


def test_failed_numbers_are_reported_per_number(provider, state):
    state.fail_numbers.add("13900139000")
    result = provider.send(["13800138000", "13900139000", "13700137000"], CONTENT, context=ctx())
    assert result.outcome is Outcome.OK
    assert list(result.failed_numbers) == ["13900139000"]
    assert (result.accepted, result.rejected) == (2, 1)
    assert state.sends[0].numbers == ["13800138000", "13700137000"]
    assert state.sends[0].failed == ["13900139000"]


@pytest.mark.parametrize("mode, named", [("refused", ["13900139000"]), ("refused_unnamed", [])])
def test_a_failing_number_can_refuse_the_whole_call_named_or_not(sim, provider, state, mode, named):
    switched = httpx.post(f"{sim.url}_sim/switches", json={"fail_numbers": ["13900139000"], "number_errors": mode})
    assert switched.json() == {"fail_numbers": ["13900139000"], "number_errors": mode}
    result = provider.send(["13800138000", "13900139000", "13700137000"], CONTENT, context=ctx())
    assert (result.outcome, result.code, result.refused_whole) == (Outcome.INVALID_REQUEST, "-10", True)
    assert list(result.failed_numbers) == named
    assert state.sends == [] and state.balances[USER] == 1000  # 发送失败: nothing sent, nothing charged
    assert provider.send(["13800138000", "13700137000"], CONTENT, context=ctx()).outcome is Outcome.OK
    wrong = httpx.post(f"{sim.url}_sim/switches", json={"number_errors": "sometimes"})
    assert wrong.status_code == 400 and "number_errors" in wrong.json()["error"]


def test_refuse_switch_names_the_numbers_in_fail_phone(sim, provider, state):
    set_faults(sim, refuse=["13700137000"])
    result = provider.send(["13800138000", "13900139000", "13700137000"], CONTENT, context=ctx())
    assert (result.outcome, list(result.failed_numbers), result.rejected) == (Outcome.OK, ["13700137000"], 1)
    assert (state.sends[0].numbers, state.sends[0].failed) == (["13800138000", "13900139000"], ["13700137000"])


def test_forbidden_word_is_blocked_with_the_keyword(provider, state):
    result = provider.send(["13800138000"], "【测试】关于法轮功的通知", context=ctx())
    assert result.outcome is Outcome.BLOCKED and result.code == "-13"
    assert "法轮功" in result.message
    assert result.failed_numbers == {}


def test_balance_insufficient(provider, state):
    state.balances[USER] = 2
    result = provider.send(["13800138000", "13900139000", "13700137000"], CONTENT, context=ctx())
    assert (result.outcome, result.code) == (Outcome.BALANCE, "-8")
    assert state.sends == [] and state.balances[USER] == 2


@pytest.mark.parametrize(
    "setup, code",
    [
        pytest.param(lambda s, kw: kw.update(password="wrong"), "-3", id="wrong-password"),
        pytest.param(lambda s, kw: setattr(s, "org_id", ORG_ID + 1), "-3", id="wrong-org"),
        pytest.param(lambda s, kw: s.disabled.add(USER), "0", id="disabled"),
        pytest.param(lambda s, kw: s.agents.add(USER), "-4", id="agent-account"),
        pytest.param(lambda s, kw: s.bound_ips.update({USER: {"10.0.0.9"}}), "-30", id="ip-not-bound"),
    ],
)
def test_login_codes_apply_to_every_operation(sim, state, setup, code):
    kw: dict = {}
    setup(state, kw)
    provider = make_provider(sim.url, **kw)
    result = provider.send(["13800138000"], CONTENT, context=ctx())
    assert (result.outcome, result.code) == (Outcome.AUTH, code)
    for call in (lambda: provider.parse_balance(provider.fetch("balance")), provider.login):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.outcome, info.value.code) == (Outcome.AUTH, code)
    assert state.sends == []


def test_bound_ip_that_matches_is_served(provider, state):
    state.bound_ips[USER] = {"127.0.0.1"}
    assert provider.send(["13800138000"], CONTENT, context=ctx()).outcome is Outcome.OK


def test_any_path_is_the_service(sim, state):
    provider = make_provider(f"{sim.url}WebService/Sms.asmx?wsdl")
    assert provider.send(["13800138000"], CONTENT, context=ctx()).outcome is Outcome.OK


# -- scheduled and extension sends -----------------------------------------


def test_scheduled_send_uses_send_timer(provider, state):
    send_at = (datetime.now(BEIJING) + timedelta(days=1)).replace(hour=10, minute=20, second=0, microsecond=0)
    result = provider.send(["13800138000"], CONTENT, send_at=send_at, context=ctx())
    assert result.outcome is Outcome.OK
    (record,) = state.sends
    assert record.operation == "SendTimer"
    assert record.send_time == send_at.strftime("%Y-%m-%d 10:20:00")
    assert record.timestamp == batch_timestamp(ctx())
    assert record.ext is None


def test_immediate_send_has_no_send_time(provider, state):
    provider.send(["13800138000"], CONTENT, context=ctx())
    assert state.sends[0].send_time is None


@pytest.mark.parametrize(
    "when, code",
    [
        ("2099-03-08 10:20:00", 1),
        ("2010-03-08 10:20:00", -12),  # the vendor's own example, long past
        ("2099/03/08 10:20:00", -11),
        ("20990308102000", -11),
        ("2099-02-30 10:20:00", -11),
        ("2099-03-08 10:20", -11),
        ("", -11),
    ],
)
def test_send_timer_time_rules(svc, state, when, code):
    answer = svc.SendTimer(
        Id=ORG_ID, Name=USER, Psw=PASSWORD, Message=CONTENT, Phone="13800138000", DateTime=when, Timestamp=1741400400
    )
    assert answer.State == code
    assert [s.send_time for s in state.sends] == ([when] if code == 1 else [])


def test_ext_account_uses_send_message_ext(sim, state):
    provider = make_provider(sim.url, ext="123")
    assert provider.send(["13800138000"], CONTENT, context=ctx()).outcome is Outcome.OK
    (record,) = state.sends
    assert (record.operation, record.ext, record.send_time) == ("SendMessageExt", "123", None)


@pytest.mark.parametrize("ext, code", [("123456", 1), ("", 1), ("1234567", -10), ("12a", -10)])
def test_ext_rules(svc, state, ext, code):
    answer = svc.SendMessageExt(
        Id=ORG_ID, Name=USER, Psw=PASSWORD, Message=CONTENT, Phone="13800138000", Timestamp=1741400400, Ext=ext
    )
    assert answer.State == code
    assert [s.ext for s in state.sends] == ([ext or None] if code == 1 else [])


# -- balance, login, password ------------------------------------------------


def test_balance_poll(provider, state):
    assert provider.parse_balance(provider.fetch("balance")) == 1000
    long_text = "【测试】" + "长" * 136  # 140 characters: 3 segments
    assert provider.send(["13800138000", "13900139000"], long_text, context=ctx()).outcome is Outcome.OK
    body = provider.fetch("balance")
    assert "<Sended>6</Sended>" in body
    assert provider.parse_balance(body) == 1000 - 2 * 3
    # No per-interval rule: polls back to back are all answered.
    assert provider.parse_balance(provider.fetch("balance")) == 994


def test_balance_override(sim, provider):
    set_faults(sim, balance=1)
    assert provider.parse_balance(provider.fetch("balance")) == 1
    assert provider.send(["13800138000", "13900139000"], CONTENT, context=ctx()).outcome is Outcome.BALANCE


def test_login(provider):
    assert provider.login() == FIRST_ACCOUNT_ID


def test_update_password(sim, provider, state, caplog):
    caplog.set_level(logging.DEBUG)
    new = "Pw-orgws-NEW-8812"
    assert provider.update_password(new) is None
    assert state.accounts[USER] == new
    with pytest.raises(ProviderError) as info:
        provider.login()  # the account still holds the old password
    assert info.value.code == "-3"
    assert make_provider(sim.url, password=new).login() == FIRST_ACCOUNT_ID
    with pytest.raises(ProviderError) as info:
        make_provider(sim.url, password=new).update_password("   ")
    assert (info.value.outcome, info.value.code) == (Outcome.INVALID_REQUEST, "-1")
    shown = caplog.text + repr(state) + repr(state.snapshot()) + repr(info.value)
    assert PASSWORD not in shown and new not in shown


# -- faults ------------------------------------------------------------------


def test_busy(sim, provider, state):
    set_faults(sim, busy=True)
    result = provider.send(["13800138000"], CONTENT, context=ctx())
    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "-9")
    for call in (lambda: provider.fetch("balance"), provider.login):
        with pytest.raises(ProviderError) as info:
            call()
        assert info.value.outcome is Outcome.TRANSIENT
    assert state.sends == []


def test_auth_fail(sim, provider):
    set_faults(sim, auth_fail=True)
    assert provider.send(["13800138000"], CONTENT, context=ctx()).outcome is Outcome.AUTH
    with pytest.raises(ProviderError) as info:
        provider.parse_balance(provider.fetch("balance"))
    assert info.value.outcome is Outcome.AUTH


def test_empty_login_answers_minus_2_to_every_call_until_switched_off(sim, provider, state):
    set_faults(sim, empty_login=True)
    result = provider.send(["13800138000"], CONTENT, context=ctx())
    assert (result.outcome, result.code) == (Outcome.AUTH, "-2")
    assert "帐户信息错误" in result.message and "调用的参数有为空值" in result.message
    for call in (lambda: provider.parse_balance(provider.fetch("balance")), provider.login):
        with pytest.raises(ProviderError) as info:
            call()
        assert (info.value.outcome, info.value.code) == (Outcome.AUTH, "-2")
    assert state.sends == []
    set_faults(sim, empty_login=False)
    assert provider.send(["13800138000"], CONTENT, context=ctx()).outcome is Outcome.OK
    # every send call is kept with the Timestamp it carried, the refused one too
    stamp = batch_timestamp(ctx())
    assert [(r.operation, r.state, r.timestamp) for r in state.received] == [
        ("SendMessage", -2, stamp),
        ("SendMessage", 1, stamp),
    ]
    assert [r["state"] for r in httpx.get(f"{sim.url}_sim/state").json()["received"]] == [-2, 1]


def test_an_empty_password_is_answered_minus_2_without_the_switch(sim, state):
    result = make_provider(sim.url, password="").send(["13800138000"], CONTENT, context=ctx())
    assert (result.outcome, result.code) == (Outcome.AUTH, "-2")


def test_garbled_answer_is_ambiguous_and_the_send_happened(sim, provider, state):
    set_faults(sim, garbled=True)
    result = provider.send(["13800138000"], CONTENT, context=ctx())
    assert result.outcome is Outcome.AMBIGUOUS
    assert len(state.sends) == 1
    with pytest.raises(ValueError):
        provider.parse_balance(provider.fetch("balance"))


def test_hang_is_ambiguous_and_the_send_is_recorded_once(sim, state):
    provider = make_provider(sim.url, timeout=httpx.Timeout(5, read=0.3))
    set_faults(sim, hang=True, hang_seconds=1.0)
    result = provider.send(["13800138000"], CONTENT, context=ctx())
    assert result.outcome is Outcome.AMBIGUOUS
    assert len(state.sends) == 1
    assert [c.endpoint for c in state.calls] == ["SendMessage"]  # no resend behind our back
    set_faults(sim, hang=False)
    assert provider.parse_balance(provider.fetch("balance")) == 999


def test_latency(sim, provider):
    set_faults(sim, latency=0.3)
    started = time.monotonic()
    assert provider.login() == FIRST_ACCOUNT_ID
    assert time.monotonic() - started >= 0.3


# -- the wire: what the simulator refuses --------------------------------------


def envelope(inner: str, ns: str = SOAP_ENV) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ns}"><soap:Body>{inner}'
        f"</soap:Body></soap:Envelope>"
    ).encode()


SEND_BODY = (
    f'<SendMessage xmlns="{TNS}"><Id>{ORG_ID}</Id><Name>{USER}</Name><Psw>{PASSWORD}</Psw>'
    f"<Message>hi</Message><Phone>13800138000</Phone><Timestamp>1</Timestamp></SendMessage>"
)


def test_raw_envelope_is_accepted(sim, state):
    resp = post_raw(sim, envelope(SEND_BODY))
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"<State>1</State>" in resp.content
    assert state.sends[0].content == "hi"


def test_doctype_and_entities_are_refused(sim, state, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("TOP-SECRET-CONTENT")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret_file}">]>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        + SEND_BODY.replace("<Message>hi</Message>", "<Message>&e;</Message>")
        + "</soap:Body></soap:Envelope>"
    ).encode()
    resp = post_raw(sim, body)
    assert resp.status_code == 500
    code, text = fault_of(resp)
    assert code == "soap:Client" and "DTD" in text
    assert b"TOP-SECRET-CONTENT" not in resp.content
    assert state.sends == []


@pytest.mark.parametrize(
    "body, action, fragment",
    [
        pytest.param(
            envelope(SEND_BODY, "http://www.w3.org/2003/05/soap-envelope"), None, "SOAP version", id="soap-1.2-envelope"
        ),
        pytest.param(envelope(SEND_BODY), '"http://tempuri.org/Nope"', "SOAPAction", id="unknown-action"),
        pytest.param(envelope(SEND_BODY), "", "SOAPAction", id="no-action"),
        pytest.param(
            envelope(SEND_BODY), '"http://tempuri.org/GetBalance"', "request element", id="body-does-not-match-action"
        ),
        pytest.param(b"<not-closed", None, "unable to read", id="not-xml"),
        pytest.param(
            envelope(SEND_BODY.replace("<Timestamp>1<", "<Timestamp>x<")), None, "Timestamp", id="int-not-int"
        ),
    ],
)
def test_malformed_requests_get_soap_faults(sim, state, body, action, fragment):
    resp = post_raw(sim, body, **({"action": action} if action is not None else {}))
    assert resp.status_code == 500
    assert fragment in fault_of(resp)[1]
    assert state.sends == []


def test_soap_1_2_media_type_is_refused(sim, state):
    assert post_raw(sim, envelope(SEND_BODY), ctype="application/soap+xml").status_code == 415


def test_parameters_in_another_namespace_are_null(sim, state):
    resp = post_raw(
        sim,
        envelope(
            SEND_BODY.replace(f'<SendMessage xmlns="{TNS}">', f'<t:SendMessage xmlns:t="{TNS}">').replace(
                "</SendMessage>", "</t:SendMessage>"
            )
        ),
    )
    assert b"<State>-2</State>" in resp.content  # 调用的参数有为空值
    assert state.sends == []


# -- control routes and state --------------------------------------------------


def test_control_routes(sim, provider, state):
    provider.send(["13800138000"], CONTENT, context=ctx())
    provider.fetch("balance")
    calls = httpx.get(f"{sim.url}_sim/calls").json()
    assert [c["endpoint"] for c in calls] == ["SendMessage", "GetBalance"]
    snap = httpx.get(f"{sim.url}_sim/state").json()
    assert snap["sends"][0]["numbers"] == ["13800138000"]
    assert snap["sends"][0]["timestamp"] == batch_timestamp(ctx())
    assert PASSWORD not in str(snap)
    assert httpx.post(f"{sim.url}_sim/inbound", json={"mobile": "1", "content": "x"}).status_code == 404

    provider.update_password("Pw-changed-0001")
    set_faults(sim, busy=True)
    assert httpx.post(f"{sim.url}_sim/reset").status_code == 200
    assert state.sends == [] and state.calls == [] and not state.faults.busy
    assert state.balances[USER] == 1000 and state.accounts[USER] == PASSWORD
    # Batch ids are never reused, even after a reset.
    assert provider.send(["13800138000"], CONTENT, context=ctx()).batch_ref == str(FIRST_BATCH_ID + 1)


def test_concurrent_sends(provider, state):
    errors: list[BaseException] = []

    def sender(i: int) -> None:
        try:
            for j in range(5):
                assert provider.send([f"138{i:04d}{j:04d}"], CONTENT, context=ctx(i)).outcome is Outcome.OK
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):
        state.snapshot()
    for t in threads:
        t.join()
    assert errors == [] and len(state.sends) == 20


def test_no_password_in_reprs(provider, state):
    provider.send(["13800138000"], CONTENT, context=ctx())
    assert PASSWORD not in repr(state) + repr(state.sends) + repr(provider)

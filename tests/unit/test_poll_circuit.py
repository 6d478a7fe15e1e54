"""Polls respect the account's circuit: what a poll's answer means for it
(tasks/decisions.py ``decide_poll``, over every vendor's poll answers), and the
circuit's poll side (tasks/circuit.py ``admit_poll``, ``after_poll``) on a scratch
SQLite database, shared with the sends' side of the same circuit."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from smsq.providers import Outcome, ProviderError, SendResult, dxt, linkws, orgws, qxs
from smsq.store.models import AccountCircuit, Base
from smsq.tasks import circuit
from smsq.tasks.decisions import Policy, decide, decide_poll, holds_polls
from smsq.worker.config import Settings
from smsq.worker.db import session_scope

from .test_decisions import provider, soap

# -- what a poll's answer means ----------------------------------------------------

# outcome -> (as any poll, as the probe): "trips", "closes", "gives back" or None
MEANING = {
    "ok": (None, "closes"),
    Outcome.INVALID_REQUEST.value: (None, "closes"),
    Outcome.BLOCKED.value: (None, "closes"),
    Outcome.RATE_LIMITED.value: (None, "closes"),
    Outcome.AUTH.value: ("trips", "trips"),
    Outcome.BALANCE.value: ("trips", "trips"),
    Outcome.TRANSIENT.value: (None, "trips"),
    Outcome.AMBIGUOUS.value: (None, "gives back"),
    "failed": (None, "gives back"),  # a body the parser could not read
}


def said(decision) -> str | None:
    flags = [decision.trips_circuit, decision.closes_circuit, decision.gives_back_probe]
    assert sum(flags) <= 1, decision
    return "trips" if flags[0] else "closes" if flags[1] else "gives back" if flags[2] else None


@pytest.mark.parametrize("outcome", sorted(MEANING))
def test_what_each_poll_outcome_means_for_the_circuit(outcome):
    assert {o.value for o in Outcome} | {"failed"} == set(MEANING)
    plain, as_probe = MEANING[outcome]
    assert said(decide_poll(outcome, "", "reports")) == plain
    assert said(decide_poll(outcome, "", "reports", probe=True)) == as_probe


def test_a_tripping_poll_names_the_vendors_code_and_the_endpoint():
    decision = decide_poll("auth", "-7: 帐号登录验证失败 (login failed)", "inbound")
    assert decision.reason == "auth -7: 帐号登录验证失败 (login failed), on the inbound poll"


# Every poll answer of every vendor, in its own format, read by its provider:
# (vendor, kind, body) -> the poll outcome. A refusal of the credentials trips the
# circuit; a balance of 0 is a reading, not a refusal.
def dxt_body(text: str) -> str:
    return text


def linkws_body(operation: str):
    return lambda code: soap(operation, code)


def orgws_balance(state: str, balance: int = 100) -> str:
    return soap(
        "GetBalance", f"<Balance>{balance}</Balance><Sended>5</Sended><State>{state}</State><Totaled>105</Totaled>"
    )


def qxs_error(code: str) -> str:
    return f'<?xml version="1.0" encoding="utf-8" ?><returnsms><errorstatus><error>{code}</error>' + (
        "</errorstatus></returnsms>"
    )


QXS_EMPTY_BALANCE = (
    '<?xml version="1.0" encoding="utf-8" ?><returnsms><returnstatus>Sucess</returnstatus><message></message>'
    "<payinfo>预付费</payinfo><overage>5000</overage><sendTotal>5000</sendTotal></returnsms>"
)


def coded(vendor: str, kind: str, table: dict, body) -> list:
    return [
        pytest.param(vendor, kind, body(code), outcome, id=f"{vendor} {kind} {code}")
        for code, (outcome, _) in table.items()
    ]


POLL_ANSWERS = [
    *coded("dxt", "reports", dxt.POLL_CODES, dxt_body),
    *coded("dxt", "inbound", dxt.POLL_CODES, dxt_body),
    *coded("dxt", "balance", dxt.BALANCE_CODES, dxt_body),
    pytest.param("dxt", "balance", "0", "ok", id="dxt balance 0 (当前可用条数为0)"),
    *coded("linkws", "inbound", linkws.POLL_CODES, linkws_body("Get")),
    *coded("linkws", "balance", linkws.POLL_CODES, linkws_body("SelSum")),
    *coded("linkws", "blocked", linkws.POLL_CODES, linkws_body("NotSend")),
    pytest.param("linkws", "balance", soap("SelSum", "0"), "ok", id="linkws SelSum 0 (剩余條數)"),
    *coded("orgws", "balance", orgws.LOGIN_CODES, orgws_balance),
    pytest.param("orgws", "balance", orgws_balance("10001", balance=0), "ok", id="orgws Balance 0"),
    *coded("qxs", "reports", qxs.POLL_ERRORS, qxs_error),
    *coded("qxs", "inbound", qxs.POLL_ERRORS, qxs_error),
    pytest.param("qxs", "balance", QXS_EMPTY_BALANCE, "ok", id="qxs overage = sendTotal"),
]


def poll_outcome(vendor: str, kind: str, body: str) -> str:
    content = body.encode("gbk" if vendor == "dxt" else "utf-8")
    vendor_api = provider(vendor, lambda request: httpx.Response(200, content=content))
    try:
        getattr(vendor_api, f"parse_{kind}")(vendor_api.fetch(kind))
    except ProviderError as exc:
        return exc.outcome.value
    return "ok"


@pytest.mark.parametrize("vendor, kind, body, outcome", POLL_ANSWERS)
def test_each_vendors_poll_answers(vendor, kind, body, outcome):
    assert poll_outcome(vendor, kind, body) == outcome
    # Only a refusal of the account trips its circuit; nothing else a poll hears does.
    assert decide_poll(outcome, "", kind).trips_circuit is (outcome in ("auth", "balance"))


def test_a_permission_of_one_endpoint_is_not_a_refused_password():
    # qxs 3 该用户不允许查看状态报告: logged in, may not query reports. The account's sends work:
    # the circuit they share must stay closed.
    assert poll_outcome("qxs", "reports", qxs_error("3")) == "invalid_request"
    assert not decide_poll("invalid_request", "3", "reports").trips_circuit


# -- the circuit's poll side, with the sends' side of the same circuit --------------

NOW = datetime(2030, 1, 1, 12, 0, 0)
BASE = 60.0  # the cool-off


@pytest.fixture
def conf(tmp_path) -> Settings:
    url = f"sqlite:///{tmp_path / 'circuit.db'}"
    Base.metadata.create_all(create_engine(url), tables=[AccountCircuit.__table__])
    return Settings(
        config_path=Path("smsq.toml"),
        database_url=url,
        broker_url="memory://",
        redis_url=None,
        accounts={},
        account_hold=BASE,
    )


def row(conf: Settings, account: str = "a") -> AccountCircuit:
    with session_scope(conf.database_url) as session:
        found = session.get_one(AccountCircuit, account)
        session.expunge(found)
        return found


def refused(kind: str = "reports", probe: bool = False):
    return decide_poll("auth", "-7: 帐号登录验证失败 (login failed)", kind, probe=probe)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_a_closed_circuit_admits_every_poll(conf):
    assert circuit.admit_poll(conf, "a", "reports", NOW) == circuit.PollAdmission()
    assert not circuit.admit_poll(conf, "a", "inbound", NOW).probe


def test_a_refused_poll_holds_every_endpoint_and_the_sends_for_the_cool_off(conf):
    admitted = circuit.admit_poll(conf, "a", "reports", NOW)
    assert circuit.after_poll(conf, "a", refused(), admitted, NOW) == "opened"
    opened = row(conf)
    assert (opened.state, opened.reopen_at, opened.cooloff) == ("open", later(BASE), BASE)
    assert opened.reason == "auth -7: 帐号登录验证失败 (login failed), on the reports poll"
    for kind in ("reports", "inbound", "balance"):
        held = circuit.admit_poll(conf, "a", kind, later(BASE - 1))
        assert isinstance(held, circuit.Blocked) and held.until == later(BASE) and "reports poll" in held.why
    assert isinstance(circuit.admit(conf, "a", 17, later(BASE - 1)), circuit.Blocked)  # a chunk waits too
    assert circuit.admit_poll(conf, "b", "reports", NOW) == circuit.PollAdmission()  # another account polls


def test_after_the_cool_off_one_call_probes_and_its_answer_closes_the_circuit(conf):
    circuit.trip(conf, "a", "auth -7 用户登入信息验证失败", NOW)  # a send's refusal holds the polls too
    assert isinstance(circuit.admit_poll(conf, "a", "inbound", later(BASE - 1)), circuit.Blocked)
    probe = circuit.admit_poll(conf, "a", "inbound", later(BASE))
    assert probe.probe and probe.token < 0 and row(conf).probe_chunk_id == probe.token
    # Exactly one probe: the other endpoints and the chunks wait for its answer.
    assert isinstance(circuit.admit_poll(conf, "a", "balance", later(BASE)), circuit.Blocked)
    assert isinstance(circuit.admit(conf, "a", 17, later(BASE)), circuit.Blocked)
    answered = decide_poll("ok", "", "inbound", probe=True)
    assert circuit.after_poll(conf, "a", answered, probe, later(BASE + 1)) == "closed"
    assert row(conf).state == "closed" and row(conf).reason == "closed: the inbound poll was answered (ok)"
    assert circuit.admit_poll(conf, "a", "balance", later(BASE + 1)) == circuit.PollAdmission()


def test_a_refused_probe_opens_the_circuit_again_for_twice_as_long(conf):
    circuit.after_poll(conf, "a", refused(), circuit.admit_poll(conf, "a", "reports", NOW), NOW)
    probe = circuit.admit_poll(conf, "a", "balance", later(BASE))
    assert circuit.after_poll(conf, "a", refused("balance", probe=True), probe, later(BASE)) == "opened"
    again = row(conf)
    assert (again.state, again.cooloff, again.trips, again.reopen_at) == ("open", 2 * BASE, 2, later(3 * BASE))


def test_a_chunks_probe_is_not_a_polls(conf):
    circuit.trip(conf, "a", "auth -7", NOW)
    assert circuit.admit(conf, "a", 17, later(BASE)) == circuit.Admission(probe=True)
    assert isinstance(circuit.admit_poll(conf, "a", "reports", later(BASE)), circuit.Blocked)
    # a poll that was in flight and answered does not close the chunk's probe early, nor give it back
    circuit.after_poll(conf, "a", decide_poll("ok", "", "reports"), circuit.PollAdmission(), later(BASE))
    assert (row(conf).state, row(conf).probe_chunk_id) == ("half_open", 17)


@pytest.mark.parametrize("outcome", ["ambiguous", "failed"])
def test_a_probe_that_heard_nothing_of_the_account_gives_the_probe_back(conf, outcome):
    circuit.trip(conf, "a", "auth -7", NOW)
    probe = circuit.admit_poll(conf, "a", "reports", later(BASE))
    assert (
        circuit.after_poll(conf, "a", decide_poll(outcome, "", "reports", probe=True), probe, later(BASE + 1)) is None
    )
    back = row(conf)
    assert (back.state, back.reopen_at, back.cooloff, back.probe_chunk_id) == ("open", later(BASE + 1), BASE, None)
    assert circuit.admit_poll(conf, "a", "inbound", later(BASE + 1)).probe  # the next call probes


def test_a_probe_given_back_by_another_poll_is_not_taken_from_its_holder(conf):
    circuit.trip(conf, "a", "auth -7", NOW)
    probe = circuit.admit_poll(conf, "a", "reports", later(BASE))
    circuit.give_back(conf, "a", circuit.PollAdmission(token=-5), later(BASE))  # not the holder's token
    assert (row(conf).state, row(conf).probe_chunk_id) == ("half_open", probe.token)


# -- a refused password holds the polls; credit or a vendor down holds the sends only ---


def test_which_trips_hold_the_polls():
    def send_trip(outcome: Outcome, attempt: int = 1) -> str:
        result = SendResult(outcome, code="-9", message="帐户当前余额不足")
        return decide(result, attempt, NOW - timedelta(hours=2), NOW, Policy(), probe=True).reason

    assert holds_polls(send_trip(Outcome.AUTH)) and holds_polls(refused().reason)
    assert not holds_polls(send_trip(Outcome.BALANCE))
    assert not holds_polls(send_trip(Outcome.TRANSIENT, attempt=9))  # "transient after 9 attempts: ..."
    assert not holds_polls(decide_poll("balance", "x", "reports").reason)


def test_a_circuit_open_for_credit_lets_the_polls_go_on_and_never_closes_on_them(conf):
    circuit.trip(conf, "a", "balance -9 帐户当前余额不足发送本次请求的条数", NOW)
    assert circuit.admit_poll(conf, "a", "reports", later(1)) == circuit.PollAdmission()
    assert circuit.admit_poll(conf, "a", "balance", later(BASE + 1)) == circuit.PollAdmission()  # never the probe
    answered = decide_poll("ok", "", "balance")
    assert circuit.after_poll(conf, "a", answered, circuit.PollAdmission(), later(BASE + 1)) is None
    assert row(conf).state == "open"  # a chunk probes it: a balance reading says nothing of the credit
    assert circuit.admit(conf, "a", 17, later(BASE + 1)) == circuit.Admission(probe=True)


def test_a_refused_password_met_while_open_for_credit_holds_the_polls_from_then_on(conf):
    circuit.trip(conf, "a", "balance -9 帐户当前余额不足发送本次请求的条数", NOW)
    assert circuit.after_poll(conf, "a", refused(), circuit.PollAdmission(), later(10)) == "opened"
    held = row(conf)
    assert (held.state, held.reopen_at, held.trips) == ("open", later(10 + BASE), 1)
    assert held.reason.startswith("auth -7")
    assert isinstance(circuit.admit_poll(conf, "a", "inbound", later(11)), circuit.Blocked)
    # and a later refusal for credit does not let them go again
    assert circuit.trip(conf, "a", "balance -9 帐户当前余额不足", later(12)) is None
    assert isinstance(circuit.admit_poll(conf, "a", "inbound", later(12)), circuit.Blocked)


def test_a_polls_refusal_for_credit_holds_the_sends(conf):
    refusal = decide_poll("balance", "x 余额不足", "reports")
    assert circuit.after_poll(conf, "a", refusal, circuit.admit_poll(conf, "a", "reports", NOW), NOW) == "opened"
    assert isinstance(circuit.admit(conf, "a", 17, later(1)), circuit.Blocked)
    assert circuit.admit_poll(conf, "a", "reports", later(1)) == circuit.PollAdmission()


def test_a_probe_that_fails_transiently_leaves_the_polls_held(conf):
    # The vendor was down for the probe: nothing is known of the password yet.
    circuit.after_poll(conf, "a", refused(), circuit.admit_poll(conf, "a", "reports", NOW), NOW)
    probe = circuit.admit_poll(conf, "a", "inbound", later(BASE))
    down = decide_poll("transient", "-3: 系统忙,请稍候再试", "inbound", probe=True)
    assert circuit.after_poll(conf, "a", down, probe, later(BASE)) == "opened"
    again = row(conf)
    assert again.reason.startswith("auth -7") and "then the probe: transient -3" in again.reason
    assert isinstance(circuit.admit_poll(conf, "a", "balance", later(BASE + 1)), circuit.Blocked)
    # once more: the reason does not grow
    probe = circuit.admit_poll(conf, "a", "balance", later(3 * BASE))
    circuit.after_poll(conf, "a", decide_poll("transient", "-3", "balance", probe=True), probe, later(3 * BASE))
    assert row(conf).reason.count("then the probe") == 1 and row(conf).reason.endswith("on the balance poll")


def test_a_chunk_probe_refused_for_credit_shows_the_password_works_again(conf):
    circuit.trip(conf, "a", "auth -7 用户登入信息验证失败", NOW)
    assert circuit.admit(conf, "a", 17, later(BASE)).probe
    circuit.trip(conf, "a", "balance -9 帐户当前余额不足发送本次请求的条数", later(BASE))
    assert row(conf).reason.startswith("balance -9")
    assert circuit.admit_poll(conf, "a", "reports", later(BASE + 1)) == circuit.PollAdmission()  # polls go on

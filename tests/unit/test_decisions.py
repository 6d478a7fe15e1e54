"""What a vendor's answer means for its chunk and its account (tasks/decisions.py).

Pure: no database, broker or network. Each vendor's answer is a body in its own
format, sent through the provider's ``send`` over ``httpx.MockTransport``, so every
row runs vendor code -> outcome -> decision: each code the provider modules map,
and the transport faults every provider shares. The backoff's jitter is drawn by
``TOP`` (the top of its range), so every wait is exact.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from smsq.providers import Account, Outcome, Secret, SendResult, dxt, jinxin, linkws, orgws, provider_class, qxs
from smsq.store.lifecycle import ChunkState
from smsq.tasks.decisions import Policy, Split, backoff, decide, split_refused
from smsq.worker.config import Settings

from .conftest import SOAP_ENV, TRANSPORT_FAULTS

NOW = datetime(2030, 1, 1, 12, 0, 0)
POLICY = Policy(retry_for=3600, retry_backoff_max=300, max_attempts=0)
NUMBERS = ["13800138000", "13900139000"]
CONTENT = "【某某科技】您的验证码是 345678"
TNS = "http://tempuri.org/"


def TOP(low: float, high: float) -> float:
    return high


def BOTTOM(low: float, high: float) -> float:
    return low


# -- each vendor's answers, in its own format ---------------------------------


def soap(operation: str, result: str) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        f'<{operation}Response xmlns="{TNS}"><{operation}Result>{result}</{operation}Result>'
        f"</{operation}Response></soap:Body></soap:Envelope>"
    )


def qxs_answer(status: str, message: str) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8" ?><returnsms><returnstatus>{status}</returnstatus>'
        f"<message>{message}</message><remainpoint>0</remainpoint><taskID>1504</taskID>"
        f"<successCounts>{len(NUMBERS) if status == 'Success' else 0}</successCounts></returnsms>"
    )


ANSWER = {  # vendor -> the body of a send answered with ``code``
    "dxt": lambda code: code if code != "0" else "0|2|0|9001,9002",
    "linkws": lambda code: soap("BatchSend2", code),
    "orgws": lambda code: soap("SendMessage", f"<FailPhone></FailPhone><Id>7001</Id><State>{code}</State>"),
    "jinxin": lambda words: json.dumps(
        {"respCode": "00000", "failCount": "0", "smsId": "A" * 32}
        if not words
        else {"respCode": "10001", "respDesc": words},
        ensure_ascii=False,
    ),
    "qxs": lambda words: qxs_answer("Faild", words) if words else qxs_answer("Success", "ok"),
}
CHARSET = {"dxt": "gbk"}
OPTIONS = {
    "linkws": {"transport": "soap"},
    "orgws": {"org_id": 10001},
    "qxs": {"userid": "12"},
    "jinxin": {"userid": "8a48b5514a5e1f6b014a5e3e2c340001", "format": "json"},
}

# A refusal message for each class jinxin tells by its words (jinxin.REFUSALS).
JINXIN_WORDS = {
    Outcome.TRANSIENT: "系统繁忙,请稍后再试",
    Outcome.RATE_LIMITED: "提交过于频繁",
    Outcome.BALANCE: "账户余额不足",
    Outcome.AUTH: "密码错误",
    Outcome.BLOCKED: "号码在黑名单中",
}


def coded(vendor: str, table: dict) -> list:
    return [pytest.param(vendor, code, outcome, text, id=f"{vendor} {code}") for code, (outcome, text) in table.items()]


VENDOR_CODES = [
    pytest.param("dxt", "0", Outcome.OK, "提交短信成功", id="dxt 0"),
    *coded("dxt", dxt.SEND_CODES),
    pytest.param("dxt", "-5", Outcome.AMBIGUOUS, "unknown vendor code", id="dxt -5 (not in the document)"),
    pytest.param("linkws", "1001", Outcome.OK, "提交成功", id="linkws batch id"),
    *coded("linkws", linkws.SEND_CODES),
    pytest.param("linkws", "-4", Outcome.AMBIGUOUS, "unknown vendor code", id="linkws -4 (not in the document)"),
    *coded("orgws", orgws.SEND_CODES),
    pytest.param("orgws", "-99", Outcome.AMBIGUOUS, "unknown vendor code", id="orgws -99 (not in the document)"),
    pytest.param("jinxin", "", Outcome.OK, "成功", id="jinxin 00000"),
    *[
        pytest.param("jinxin", words, outcome, words, id=f"jinxin {outcome.value}")
        for outcome, words in JINXIN_WORDS.items()
    ],
    pytest.param("jinxin", "参数错误", Outcome.INVALID_REQUEST, "参数错误", id="jinxin other refusal"),
    pytest.param("jinxin", "时间戳无效或已过期", Outcome.AUTH, "时间戳无效或已过期", id="jinxin stale sendtime"),
    pytest.param("qxs", "", Outcome.OK, "ok (accepted", id="qxs Success"),
    *[
        pytest.param("qxs", phrase, outcome, text.split(" (")[0], id=f"qxs {phrase}")
        for phrase, outcome, text in qxs.MESSAGES
    ],
    pytest.param("qxs", "未知的错误", Outcome.AMBIGUOUS, "unknown vendor message", id="qxs unknown message"),
]


def provider(vendor: str, reply):
    account = Account(
        name=f"shop-{vendor}",
        provider=vendor,
        base_url="http://vendor.test/",
        username="u",
        password=Secret("pw-123456"),
        charset=CHARSET.get(vendor),
        signature="【某某科技】",
        options=OPTIONS.get(vendor, {}),
    )
    return provider_class(vendor)(account, httpx.Client(transport=httpx.MockTransport(reply)))


def answered(vendor: str, code: str) -> SendResult:
    """What ``vendor``'s provider makes of its vendor answering ``code``."""
    body = ANSWER[vendor](code).encode(CHARSET.get(vendor, "utf-8"))
    return provider(vendor, lambda request: httpx.Response(200, content=body)).send(NUMBERS, CONTENT)


# -- what each outcome means ---------------------------------------------------

# On a chunk's first call: (next state, wait, account's circuit trips, a routed chunk moves on).
# A rate-limited chunk waits the vendor's interval; a transient one 2 s (2**1, jitter at the top).
MEANING = {
    Outcome.OK: (ChunkState.ACCEPTED, None, False, False),
    Outcome.AMBIGUOUS: (ChunkState.UNKNOWN, None, False, False),
    Outcome.INVALID_REQUEST: (ChunkState.FAILED, None, False, False),
    Outcome.BLOCKED: (ChunkState.FAILED, None, False, False),
    Outcome.AUTH: (ChunkState.FAILED, None, True, True),
    Outcome.BALANCE: (ChunkState.FAILED, None, True, True),
    Outcome.RATE_LIMITED: (ChunkState.PENDING, "vendor's", False, False),
    Outcome.TRANSIENT: (ChunkState.PENDING, 2.0, False, False),
}
VENDOR_INTERVAL = {"linkws": 30.0, "jinxin": 60.0}  # seconds their rate-limit answers say to wait
# The account's half-open probe: "closes" (the account works), "trips" (open again), None.
PROBE = {
    Outcome.OK: "closes",
    Outcome.INVALID_REQUEST: "closes",
    Outcome.BLOCKED: "closes",
    Outcome.RATE_LIMITED: "closes",
    Outcome.AUTH: "trips",
    Outcome.BALANCE: "trips",
    Outcome.TRANSIENT: "trips",
    Outcome.AMBIGUOUS: None,
}


def first_call(result: SendResult, probe: bool = False):
    return decide(result, 1, NOW, NOW, POLICY, probe=probe, draw=TOP)


def assert_means(decision, outcome: Outcome, interval: float | None = None) -> None:
    state, wait, trips, moves = MEANING[outcome]
    wait = interval if wait == "vendor's" else wait
    assert (decision.next_state, decision.wait, decision.trips_circuit, decision.moves_on_route) == (
        state,
        wait,
        trips,
        moves,
    )
    assert decision.retry_at == (None if wait is None else NOW + timedelta(seconds=wait))
    assert decision.attempt_counts is (outcome is not Outcome.RATE_LIMITED)
    assert not decision.closes_circuit  # only a probe closes it


@pytest.mark.parametrize("vendor, code, outcome, vendor_text", VENDOR_CODES)
def test_each_vendor_code_means_what_its_outcome_means(vendor, code, outcome, vendor_text):
    result = answered(vendor, code)
    assert result.outcome is outcome
    decision = first_call(result)
    assert_means(decision, outcome, VENDOR_INTERVAL.get(vendor))
    # the operator reads the vendor's own words, and the circuit's reason names the code
    assert vendor_text in decision.detail and decision.detail == result.message
    assert decision.reason.startswith(f"{outcome.value} {result.code or ''}".strip())
    assert vendor_text in decision.reason


@pytest.mark.parametrize("vendor, code, outcome, vendor_text", VENDOR_CODES)
def test_a_probe_answered_with_each_vendor_code(vendor, code, outcome, vendor_text):
    decision = first_call(answered(vendor, code), probe=True)
    said = "closes" if decision.closes_circuit else "trips" if decision.trips_circuit else None
    assert said == PROBE[outcome]
    assert decision.next_state is MEANING[outcome][0]  # the chunk itself goes where any chunk would


@pytest.mark.parametrize("vendor", sorted(ANSWER))
@pytest.mark.parametrize("reply, outcome", TRANSPORT_FAULTS)
def test_transport_faults_mean_the_same_for_every_vendor(vendor, reply, outcome):
    result = provider(vendor, reply).send(NUMBERS, CONTENT)
    assert result.outcome is outcome
    assert_means(first_call(result), outcome)


def test_the_tables_cover_every_outcome_and_every_code_the_modules_map():
    rows = [p.values for p in VENDOR_CODES]
    assert {outcome for _, _, outcome, _ in rows} == set(Outcome) == set(MEANING) == set(PROBE)
    for vendor, table in [("dxt", dxt.SEND_CODES), ("linkws", linkws.SEND_CODES), ("orgws", orgws.SEND_CODES)]:
        assert set(table) <= {code for v, code, _, _ in rows if v == vendor}
    assert {outcome for outcome, _, _ in jinxin.REFUSALS} <= set(JINXIN_WORDS)
    assert {phrase for phrase, _, _ in qxs.MESSAGES} <= {code for v, code, _, _ in rows if v == "qxs"}


# Answers about the account, not the request: the same for every call until an operator
# fixes the account (its credentials, its configuration, its state, its credit, a clock),
# so the account rests and a routed batch moves on. Written out, not read from the
# modules' tables, so that a code classed as the request's again fails here.
ACCOUNT_ANSWERS = [
    pytest.param("orgws", "0", "帐户处于禁止使用状态", id="orgws 0 disabled"),
    pytest.param("orgws", "-2", "帐户信息错误: 调用的参数有为空值", id="orgws -2 account information wrong"),
    pytest.param("orgws", "-3", "机构代码、用户名或密码错误", id="orgws -3"),
    pytest.param("orgws", "-4", "不是普通帐户", id="orgws -4"),
    pytest.param("orgws", "-30", "非绑定IP", id="orgws -30"),
    pytest.param("orgws", "-8", "余额不足", id="orgws -8"),
    pytest.param("qxs", "用户名或密码不能为空", "用户名或密码不能为空", id="qxs credentials empty"),
    pytest.param("qxs", "用户名或密码错误", "用户名或密码错误", id="qxs wrong password"),
    pytest.param("qxs", "对不起，您当前要发送的量大于您当前余额", "大于您当前余额", id="qxs balance"),
    pytest.param("dxt", "-7", "用户登入信息验证失败", id="dxt -7"),
    pytest.param("dxt", "-9", "帐户当前余额不足", id="dxt -9"),
    pytest.param("dxt", "-10", "帐号已被锁定", id="dxt -10"),
    *[pytest.param("linkws", code, "", id=f"linkws {code}") for code in ("-1", "-3", "-5", "-100", "-102", "-103")],
    pytest.param("jinxin", "时间戳无效或已过期", "check this host's clock", id="jinxin stale sendtime"),
    pytest.param("jinxin", "IP地址未授权", "IP地址未授权", id="jinxin IP"),
]
# Answers about the request: this chunk fails, the account goes on sending.
REQUEST_ANSWERS = [
    *[pytest.param("orgws", code, id=f"orgws {code}") for code in ("-5", "-6", "-7", "-10", "-11", "-12", "-13")],
    *[
        pytest.param("qxs", words, id=f"qxs {words}")
        for words in ("短信号码不能为空", "短信内容不能为空", "包含非法字符：x")
    ],
    *[pytest.param("dxt", code, id=f"dxt {code}") for code in ("-1", "-2", "-3|法轮功", "-4", "-8")],
    *[pytest.param("linkws", code, id=f"linkws {code}") for code in ("-6", "-7", "-8", "-9", "-10", "-11")],
    pytest.param("jinxin", "短信内容含有敏感词", id="jinxin sensitive words"),
]


@pytest.mark.parametrize("vendor, code, vendor_text", ACCOUNT_ANSWERS)
def test_an_answer_about_the_account_rests_it_and_moves_a_route_on(vendor, code, vendor_text):
    result = answered(vendor, code)
    assert result.outcome in (Outcome.AUTH, Outcome.BALANCE), result
    decision = first_call(result)
    assert (decision.next_state, decision.trips_circuit, decision.moves_on_route) == (ChunkState.FAILED, True, True)
    # the circuit's reason, which `smsq accounts` shows, keeps the vendor's own words
    assert vendor_text in decision.reason and result.message in decision.reason


@pytest.mark.parametrize("vendor, code", REQUEST_ANSWERS)
def test_an_answer_about_the_request_fails_the_chunk_only(vendor, code):
    decision = first_call(answered(vendor, code))
    assert decision.outcome in (Outcome.INVALID_REQUEST, Outcome.BLOCKED)
    assert decision.next_state is ChunkState.FAILED and not decision.trips_circuit and not decision.moves_on_route


# -- transient failures at the limits of the retry budget -----------------------

BUSY = SendResult(Outcome.TRANSIENT, code="-99", message="系统忙,无法受理此次请求 (system busy)")


def busy(attempt: int, first_ago: float | None, policy: Policy = POLICY, probe: bool = False, draw=TOP):
    first = None if first_ago is None else NOW - timedelta(seconds=first_ago)
    return decide(BUSY, attempt, first, NOW, policy, probe=probe, draw=draw)


@pytest.mark.parametrize("attempt, top", [(1, 2), (2, 4), (5, 32), (8, 256), (9, 300), (40, 300)])
def test_the_waits_double_to_the_cap_jittered_to_between_half_and_all(attempt, top):
    assert busy(attempt, 0).wait == top
    assert busy(attempt, 0, draw=BOTTOM).wait == top / 2
    assert backoff(attempt, 300, draw=lambda low, high: (low, high)) == (top / 2, top)


def test_a_first_call_counts_the_budget_from_now():
    assert busy(1, None).wait == 2.0 and busy(1, None).next_state is ChunkState.PENDING
    decision = busy(1, 0)
    assert (decision.detail, decision.reason) == (BUSY.message, f"transient -99 {BUSY.message}")
    assert decision.attempt_counts and not decision.trips_circuit


@pytest.mark.parametrize(
    "first_ago, attempt, wait",
    [
        pytest.param(3000, 9, 300, id="a full wait fits"),
        pytest.param(3500, 8, 100, id="the last wait ends at the budget's end"),
        pytest.param(3599.5, 8, 1.0, id="even the last call waits a second"),
    ],
)
def test_the_last_wait_is_cut_to_the_budgets_end(first_ago, attempt, wait):
    decision = busy(attempt, first_ago)
    assert (decision.next_state, decision.wait) == (ChunkState.PENDING, wait)
    assert decision.retry_at == NOW + timedelta(seconds=wait)
    assert not decision.trips_circuit and not decision.moves_on_route


def test_a_spent_budget_fails_the_chunk_and_trips_the_circuit():
    decision = busy(12, 3600)
    assert (decision.next_state, decision.wait, decision.retry_at) == (ChunkState.FAILED, None, None)
    assert decision.trips_circuit and decision.moves_on_route
    assert decision.detail == f"gave up after 12 attempts in 3600s (SMSQ_RETRY_FOR=3600s): {BUSY.message}"
    assert decision.reason == f"transient after 12 attempts: -99 {BUSY.message}"


def test_the_last_of_smsq_max_attempts_gives_up_within_the_budget():
    capped = Policy(retry_for=3600, retry_backoff_max=300, max_attempts=5)
    assert busy(4, 120, capped).wait == 16
    decision = busy(5, 120, capped)
    assert (decision.next_state, decision.trips_circuit, decision.moves_on_route) == (ChunkState.FAILED, True, True)
    assert decision.detail.startswith("gave up after 5 attempts in 120s (SMSQ_MAX_ATTEMPTS=5): 系统忙")
    assert busy(50, 120).next_state is ChunkState.PENDING  # no cap: only the time budget counts


def test_a_rate_limited_answer_is_not_an_attempt_nor_budgeted():
    limited = SendResult(Outcome.RATE_LIMITED, code="-101", message="調用接口速度太快")
    decision = decide(limited, 7, NOW - timedelta(hours=5), NOW, Policy(max_attempts=7), draw=TOP)
    assert (decision.next_state, decision.wait, decision.attempt_counts) == (ChunkState.PENDING, 30.0, False)
    assert not decision.trips_circuit


def test_a_probe_that_fails_transiently_reopens_the_circuit_and_the_chunk_retries():
    decision = busy(3, 60, probe=True)
    assert (decision.next_state, decision.wait) == (ChunkState.PENDING, 8)
    assert decision.trips_circuit and not decision.moves_on_route  # the circuit reopens; the chunk stays
    spent = busy(3, 3600, probe=True)
    assert spent.trips_circuit and spent.moves_on_route and spent.next_state is ChunkState.FAILED


def test_the_policy_is_read_from_the_settings():
    conf = Settings(
        config_path=Path("smsq.toml"),
        database_url="sqlite://",
        broker_url="memory://",
        redis_url=None,
        accounts={},
        retry_for=120,
        retry_backoff_max=4,
        max_attempts=9,
        report_wait=600,
    )
    assert Policy.of(conf) == Policy(retry_for=120, retry_backoff_max=4, max_attempts=9, report_wait=600)


# -- a whole call refused over a number the vendor does not name: narrowing ------------

# linkws -11 屏蔽手機號碼 and orgws -10 发送失败: 号码错误, as their providers read them.
REFUSED_WHOLE = [
    pytest.param("linkws", "-11", Outcome.BLOCKED, id="linkws -11"),
    pytest.param("orgws", "-10", Outcome.INVALID_REQUEST, id="orgws -10"),
]


@pytest.mark.parametrize("vendor, code, outcome", REFUSED_WHOLE)
@pytest.mark.parametrize(
    "numbers, state", [(500, ChunkState.NARROWED), (2, ChunkState.NARROWED), (1, ChunkState.FAILED)]
)
def test_a_call_refused_whole_over_a_number_is_narrowed_unless_it_held_one(vendor, code, outcome, numbers, state):
    result = answered(vendor, code)
    assert (result.outcome, result.refused_whole) == (outcome, True)
    decision = decide(result, 1, NOW, NOW, POLICY, draw=TOP, numbers=numbers)
    # narrowed: its numbers go to new chunks; one number: it is the offender, failed
    assert (decision.next_state, decision.narrows) == (state, True)
    assert (decision.wait, decision.retry_at, decision.trips_circuit, decision.moves_on_route) == (
        None,
        None,
        False,
        False,
    )
    assert decision.detail == result.message and decision.reason.startswith(f"{outcome.value} {code}")
    assert decide(result, 1, NOW, NOW, POLICY, probe=True, numbers=numbers).closes_circuit  # the account works


@pytest.mark.parametrize("vendor, code, outcome", REFUSED_WHOLE)
def test_the_same_code_without_the_mark_fails_the_chunk_as_any_refusal(vendor, code, outcome):
    result = answered(vendor, code)
    result.refused_whole = False
    decision = decide(result, 1, NOW, NOW, POLICY, draw=TOP, numbers=500)
    assert (decision.next_state, decision.narrows) == (ChunkState.FAILED, False)


@pytest.mark.parametrize("outcome", [o for o in Outcome if o not in (Outcome.BLOCKED, Outcome.INVALID_REQUEST)])
def test_only_a_refusal_narrows(outcome):
    # a mark on any other outcome (the vendor may have taken it, or may take it later) is not trusted
    result = SendResult(outcome, code="-1", message="x", refused_whole=True)
    decision = decide(result, 1, NOW, NOW, POLICY, draw=TOP, numbers=500)
    assert not decision.narrows and decision.next_state is not ChunkState.NARROWED


def test_every_other_vendor_code_does_not_narrow():
    for param in VENDOR_CODES:
        vendor, code, _, _ = param.values
        if (vendor, code) not in {("linkws", "-11"), ("orgws", "-10")}:
            assert not decide(answered(vendor, code), 1, NOW, NOW, POLICY, numbers=500).narrows, (vendor, code)


def numbered(count: int, start: int = 0) -> list[tuple[int, str]]:
    return [(start + i, f"1380000{start + i:04d}") for i in range(count)]


def test_none_known_the_numbers_go_in_two_halves_in_the_order_sent():
    numbers = numbered(5)
    assert split_refused(numbers, set()) == Split([], [numbers[:3], numbers[3:]])
    assert split_refused(numbered(500), set()).parts == [numbered(250), numbered(250, 250)]


def test_known_offenders_fail_and_the_rest_goes_whole_once_more():
    numbers = numbered(6)
    known = {numbers[1][1], numbers[4][1], "13999999999"}  # a named number not in the chunk is no offender here
    assert split_refused(numbers, known) == Split(
        [numbers[1], numbers[4]], [[numbers[0], numbers[2], numbers[3], numbers[5]]]
    )


def test_a_refused_chunk_of_one_number_is_its_own_offender_and_all_known_leaves_nothing_to_send():
    one = numbered(1)
    assert split_refused(one, set()) == Split(one, [])
    assert split_refused(numbered(3), {m for _, m in numbered(3)}) == Split(numbered(3), [])
    assert split_refused([], set()) == Split([], [])


@pytest.mark.parametrize("n, offenders", [(500, 1), (500, 3), (500, 7), (100, 2), (2, 2), (37, 5)])
def test_finding_k_offenders_among_n_costs_at_most_2_k_log2_n_extra_calls(n, offenders):
    # the narrowing as the workers run it, each chunk answered by a vendor refusing any chunk
    # that holds an offender: the extra calls are the new chunks
    numbers = numbered(n)
    bad = {numbers[(i * 7919) % n][1] for i in range(offenders)}
    chunks, extra, found, accepted = [numbers], 0, [], []
    while chunks:
        chunk = chunks.pop()
        if not {m for _, m in chunk} & bad:
            accepted += chunk
            continue
        split = split_refused(chunk, set())
        found += split.offenders
        extra += len(split.parts)
        chunks += split.parts
    assert {m for _, m in found} == bad and len(accepted) == n - len(bad)
    assert extra <= 2 * len(bad) * math.ceil(math.log2(n)), extra


# -- an answer that takes the call and refuses some of its numbers ------------------

THREE = ["13800138000", "13900139000", "13700137000"]
PARTIAL = {  # vendor -> (its answer refusing THREE[1], named: does it name the number?)
    "dxt": ("0|2|1|9001,9002", False),
    "orgws": (soap("SendMessage", "<FailPhone>13900139000</FailPhone><Id>7001</Id><State>1</State>"), True),
    "jinxin named": (
        json.dumps(
            {
                "respCode": "00000",
                "failCount": "1",
                "failList": [{"phone": "13900139000", "respCode": "00111", "respDesc": "号码在黑名单中"}],
                "smsId": "A" * 32,
            },
            ensure_ascii=False,
        ),
        True,
    ),
    "jinxin counted": (json.dumps({"respCode": "00000", "failCount": "1", "smsId": "A" * 32}), False),
    "qxs": (
        '<?xml version="1.0" encoding="utf-8" ?><returnsms><returnstatus>Success</returnstatus><message>ok</message>'
        "<remainpoint>9</remainpoint><taskID>1504</taskID><successCounts>2</successCounts></returnsms>",
        False,
    ),
}


@pytest.mark.parametrize("case", list(PARTIAL))
def test_numbers_refused_in_an_accepted_answer_are_named_or_wait_for_reports(case):
    vendor = case.split()[0]
    body, named = PARTIAL[case]
    reply = httpx.Response(200, content=body.encode(CHARSET.get(vendor, "utf-8")))
    result = provider(vendor, lambda request: reply).send(THREE, CONTENT)
    assert (result.outcome, result.rejected, result.unnamed_refusals) == (Outcome.OK, 1, 0 if named else 1)
    if named:
        assert list(result.failed_numbers) == ["13900139000"]
    else:  # a count alone: no number, no id is told apart
        assert result.failed_numbers == {} and "1" in result.message
    policy = Policy(report_wait=600)
    decision = decide(result, 1, NOW, NOW, policy, draw=TOP)
    assert decision.next_state is ChunkState.ACCEPTED and not decision.trips_circuit
    # counted only: delivery reports have SMSQ_REPORT_WAIT to tell the refused ones apart
    assert decision.refused_due_at == (None if named else NOW + timedelta(seconds=600))
    # a vendor that sends no delivery reports can never tell them apart: no due time
    assert decide(result, 1, NOW, NOW, policy, reports=False, draw=TOP).refused_due_at is None


def test_an_answer_that_refuses_nothing_awaits_nothing():
    decision = first_call(answered("dxt", "0"))
    assert (decision.next_state, decision.refused_due_at) == (ChunkState.ACCEPTED, None)
    refused_call = SendResult(Outcome.INVALID_REQUEST, code="-10", rejected=3)  # not an accepted answer
    assert first_call(refused_call).refused_due_at is None

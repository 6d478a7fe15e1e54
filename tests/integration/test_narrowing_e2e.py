"""Narrowing end to end: send_sms -> a real worker -> the vendor's simulator over SOAP -> the
database. A vendor that refuses a whole call over a number it does not name (linkws -11
屏蔽手機號碼, orgws -10 发送失败: 号码错误 with an empty FailPhone) took nothing: exactly the
offending numbers end failed with the vendor's code and on the account's blocked list, every
other number is accepted once, and the extra calls stay within 2·k·⌈log2 n⌉ (k offenders
among n numbers), through the rate limiter, under SMSQ_NARROW_MAX_CALLS.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import delete, select, update

from smsq.store.models import BlockedNumber, PollLease
from smsq.tasks import send_sms
from smsq.tasks.decisions import split_refused
from smsq.tasks.lookup import export_batch
from smsq.tasks.polls import poll
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import PASSWORD, busiest_second, serve_stack, wait_final

CONTENT = "【某某科技】尊敬的客户，您的包裹已到达驿站，取件码 8-3-1024。"
RATE = 10  # calls a second the linkws account may make: narrowing's calls take slots too
MAX_CALLS = 60  # SMSQ_NARROW_MAX_CALLS of this module's worker
BEIJING = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from smsq.simulator.linkws import LinkwsState
    from smsq.simulator.linkws import create_app as linkws_app
    from smsq.simulator.orgws import OrgwsState
    from smsq.simulator.orgws import create_app as orgws_app
    from smsq.simulator.server import serve

    linkws = LinkwsState({"test": PASSWORD}, balance=10_000_000, min_poll_interval=0.0)
    orgws = OrgwsState({"test": PASSWORD}, balance=10_000_000, org_id=10001)
    with serve(linkws_app(linkws), port=0) as lsim, serve(orgws_app(orgws), port=0) as osim:
        tmp = tmp_path_factory.mktemp("narrowing")
        config = tmp / "smsq.toml"
        config.write_text(
            f"""
[accounts.shop-linkws]
provider = "linkws"
base_url = "{lsim.url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "{RATE}/s"
timeout = 5
transport = "soap"

[accounts.shop-orgws]
provider = "orgws"
base_url = "{osim.url}Service.asmx"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "100/s"
timeout = 5
org_id = 10001
""",
            encoding="utf-8",
        )
        env = {"SMSQ_NARROW_MAX_CALLS": str(MAX_CALLS)}
        for running in serve_stack("distributed", tmp, config, None, "", env):
            running.sims = {"shop-linkws": (linkws, lsim.url), "shop-orgws": (orgws, osim.url)}
            yield running


@pytest.fixture
def vendor(stack, request):
    """The account's simulator, reset, its blocked list and switches cleared after the test."""
    name = request.param
    state, url = stack.sims[name]
    state.reset()
    yield name, state, url
    httpx.post(f"{url}_sim/switches", json={"fail_numbers" if name == "shop-orgws" else "blocked_numbers": []})
    with session_scope(settings().database_url) as s:
        s.execute(delete(BlockedNumber).where(BlockedNumber.account == name))


def on(*names: str):
    return pytest.mark.parametrize("vendor", names, indirect=True)


def switch(url: str, **switches) -> None:
    resp = httpx.post(f"{url}_sim/switches", json=switches)
    assert resp.status_code == 200, resp.text


def numbers_of(prefix: str, count: int) -> list[str]:
    """``count`` mobiles of 11 digits starting with the 6 of ``prefix``."""
    return [f"{prefix}{i:05d}" for i in range(count)]


def send_calls(state, endpoint: str) -> list[float]:
    return [c.at for c in state.calls if c.endpoint == endpoint]


def failed_rows(batch_id: int) -> dict[str, tuple]:
    return {mobile: (code, detail) for mobile, _, code, detail, _, _, _ in export_batch(batch_id, "failed")}


def blocked_list(account: str) -> dict[str, tuple[str, str]]:
    with session_scope(settings().database_url, readonly=True) as s:
        rows = s.execute(select(BlockedNumber).where(BlockedNumber.account == account)).scalars().all()
        return {b.mobile: (b.source, b.reason) for b in rows}


def open_window(account: str) -> None:
    with session_scope(settings().database_url) as s:
        s.execute(update(PollLease).where(PollLease.account == account).values(next_allowed_at=datetime(1970, 1, 1)))


def bound(n: int, k: int) -> int:
    """The calls narrowing k offenders among n numbers may take: the refused one and 2·k·⌈log2 n⌉."""
    return 1 + 2 * k * math.ceil(math.log2(n))


@on("shop-linkws")
@pytest.mark.parametrize("blocked_at", [[137], [3, 250, 499]], ids=["1 blocked", "3 blocked"])
def test_a_call_refused_over_blocked_numbers_fails_only_them_and_sends_the_rest_once(stack, vendor, blocked_at):
    name, state, url = vendor
    numbers = numbers_of(f"13700{len(blocked_at)}", 500)
    blocked = {numbers[i] for i in blocked_at}
    switch(url, blocked_numbers=sorted(blocked))
    receipt = send_sms(name, numbers, CONTENT)
    status = wait_final(receipt.batch_id, timeout=120)

    assert status.recipients == {"sent": 500 - len(blocked), "failed": len(blocked)}, status
    assert status.chunks["failed"] == len(blocked) and status.chunks["narrowed"] >= 1, status
    failed = failed_rows(receipt.batch_id)
    assert set(failed) == blocked
    assert {code for code, _ in failed.values()} == {"-11"}
    assert all("屏蔽手機號碼" in detail for _, detail in failed.values())
    # the vendor's record: every other number accepted exactly once, no blocked one ever
    received = Counter(n for s in state.sends for n in s.numbers)
    assert set(received) == set(numbers) - blocked and set(received.values()) == {1}
    calls = send_calls(state, "BatchSend2")
    print(f"{len(blocked)} blocked among 500: {len(calls)} calls (bound {bound(500, len(blocked))})")
    assert 2 < len(calls) <= bound(500, len(blocked))
    assert busiest_second(calls) <= RATE  # the extra calls took rate-limit slots
    listed = blocked_list(name)
    assert set(listed) == blocked
    assert all(
        source == "vendor" and reason == "refused by the vendor: -11 屏蔽手機號碼 (blocked number)"
        for source, reason in listed.values()
    ), listed
    log = stack.worker_log()
    assert f"(batch {receipt.batch_id}, shop-linkws): refused whole, -11 屏蔽手機號碼" in log
    assert "500 numbers: 2 new chunk(s) of 250+250 (narrowing: 2 of at most 60 extra calls)" in log


@on("shop-linkws")
def test_a_number_notsend_named_before_the_send_costs_no_narrowing(vendor):
    name, state, url = vendor
    numbers = numbers_of("136100", 500)
    switch(url, blocked_numbers=[numbers[42]])
    state.add_blocked(numbers[42])  # an earlier send's -11: NotSend names it
    open_window(name)
    assert poll(name, "blocked").items == 1
    receipt = send_sms(name, numbers, CONTENT)
    assert receipt.rejected == [(numbers[42], "blocked for this account: reported blocked by the vendor")]
    status = wait_final(receipt.batch_id, timeout=60)
    assert status.recipients == {"sent": 499, "rejected": 1} and status.chunks == {"accepted": 1}, status
    assert len(send_calls(state, "BatchSend2")) == 1


@on("shop-linkws")
def test_a_number_notsend_named_after_the_intake_fails_at_once_and_the_rest_goes_in_one_call(vendor):
    # Stored before NotSend named it (a scheduled send), the number reaches the vendor: the
    # refusal finds it on the blocked list, so no halving is needed.
    name, state, url = vendor
    numbers = numbers_of("136200", 500)
    switch(url, blocked_numbers=[numbers[7]])
    at = (datetime.now(BEIJING) + timedelta(seconds=5)).replace(microsecond=0)
    receipt = send_sms(name, numbers, CONTENT, send_at=at)
    assert receipt.rejected == []
    state.add_blocked(numbers[7])
    open_window(name)
    assert poll(name, "blocked").items == 1
    status = wait_final(receipt.batch_id, timeout=60)
    assert status.recipients == {"sent": 499, "failed": 1} and status.chunks == {"narrowed": 1, "accepted": 1}
    assert failed_rows(receipt.batch_id) == {numbers[7]: ("-11", "屏蔽手機號碼 (blocked number)")}
    assert [len(s.numbers) for s in state.sends] == [499]
    assert len(send_calls(state, "BatchSend2")) == 2  # the refused call and the rest's


def halving_cost(n: int, offenders: list[int]) -> int:
    """The extra calls halving alone would take to find ``offenders`` among n numbers."""
    bad = {f"{i}" for i in offenders}
    chunks, extra = [[(i, f"{i}") for i in range(n)]], 0
    while chunks:
        chunk = chunks.pop()
        if {m for _, m in chunk} & bad:
            parts = split_refused(chunk, set()).parts
            extra, chunks = extra + len(parts), chunks + parts
    return extra


@on("shop-linkws")
def test_past_the_cap_the_numbers_left_fail_with_the_code(stack, vendor):
    name, state, url = vendor
    numbers = numbers_of("136300", 500)
    at = [10, 90, 170, 250, 330, 410]
    assert halving_cost(500, at) > MAX_CALLS  # this many offenders cannot all be found within the cap
    blocked = {numbers[i] for i in at}
    switch(url, blocked_numbers=sorted(blocked))
    receipt = send_sms(name, numbers, CONTENT)
    status = wait_final(receipt.batch_id, timeout=120)
    calls = send_calls(state, "BatchSend2")
    assert len(calls) <= 1 + MAX_CALLS
    failed = failed_rows(receipt.batch_id)
    received = Counter(n for s in state.sends for n in s.numbers)
    assert blocked <= set(failed) and set(failed).isdisjoint(received) and set(received.values()) == {1}
    assert set(failed) | set(received) == set(numbers)  # every number sent once or failed
    assert len(failed) > len(blocked)  # the numbers left at the cap, with the vendor's code
    assert {code for code, _ in failed.values()} == {"-11"}
    assert set(blocked_list(name)) <= blocked  # only numbers found to be offenders are blocked
    assert status.recipients["sent"] == len(received)
    assert "the cap is reached: the" in stack.worker_log()


@on("shop-orgws")
@pytest.mark.parametrize("mode", ["refused_unnamed", "refused"])
def test_orgws_minus_10_is_narrowed_too(vendor, mode):
    # 发送失败: 号码错误 with FailPhone empty: halving; naming them: they fail, the rest goes in one call.
    name, state, url = vendor
    numbers = numbers_of(f"13640{len(mode) % 10}", 100)
    bad = {numbers[5], numbers[61]}
    switch(url, fail_numbers=sorted(bad), number_errors=mode)
    try:
        receipt = send_sms(name, numbers, CONTENT)
        status = wait_final(receipt.batch_id, timeout=60)
    finally:
        switch(url, number_errors="listed")
    assert status.recipients == {"sent": 98, "failed": 2}, status
    assert set(failed_rows(receipt.batch_id)) == bad
    assert {code for code, _ in failed_rows(receipt.batch_id).values()} == {"-10"}
    received = Counter(n for s in state.sends for n in s.numbers)
    assert set(received) == set(numbers) - bad and set(received.values()) == {1}
    calls = len(send_calls(state, "SendMessage"))
    assert calls == 2 if mode == "refused" else 2 < calls <= bound(100, 2)
    assert set(blocked_list(name)) == bad

"""Every vendor end to end: send_sms -> Redis -> a real worker -> the vendor's simulator
over real HTTP/SOAP -> PostgreSQL, and back through the polls the vendor has.

One account per vendor (linkws twice: SOAP and plain HTTP), one worker for all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from smsq.store.models import AccountBalance, BlockedNumber, Chunk, InboundMessage, PollLease
from smsq.tasks import batch_status, send_sms
from smsq.tasks.cancel import cancel_batch
from smsq.tasks.polls import poll
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import (
    GUARD_OFF,
    PASSWORD,
    ROOT,
    Stack,
    apply_env,
    mode_env,
    restore_env,
    start_worker,
    stop_worker,
    wait_final,
    wait_until,
)

BEIJING = timezone(timedelta(hours=8))
CONTENT = "【某某科技】尊敬的客户，您的包裹已到达驿站，取件码 8-3-1024。"


@dataclass
class Vendor:
    account: str
    provider: str
    make_state: Callable[[], Any]
    config: str  # extra TOML lines of the account
    chunk: int  # numbers per vendor call
    charset: str
    send_time_format: str | None  # strftime of the vendor's schedule parameter (smsq sends none); None: it has none
    polls: tuple[str, ...] = ()
    state: Any = None
    url: str = ""
    extra: dict = field(default_factory=dict)
    path: str = ""  # appended to the simulator's URL to make the account's base_url


def _dxt():
    from smsq.simulator.dxt import DxtState

    return DxtState({"test": PASSWORD}, balance=10_000_000)


def _linkws():
    from smsq.simulator.linkws import LinkwsState

    # The 30 s window is the lease's to keep (tested elsewhere); here polls come back to back.
    return LinkwsState({"test": PASSWORD}, balance=10_000_000, min_poll_interval=0.0)


def _block(state, mobile: str) -> None:
    state.add_blocked(mobile)


def _jinxin():
    from smsq.simulator.jinxin import JinxinState

    return JinxinState({"test": PASSWORD}, balance=10_000_000, userid="12", format="json")


def _orgws():
    from smsq.simulator.orgws import OrgwsState

    return OrgwsState({"test": PASSWORD}, balance=10_000_000, org_id=10001)


def _qxs():
    from smsq.simulator.qxs import QxsState

    return QxsState({"test": PASSWORD}, balance=10_000_000, userid="12")


LINKWS_POLLS = ("inbound", "balance", "blocked")
VENDORS = [
    Vendor(
        "v-linkws-soap",
        "linkws",
        _linkws,
        'transport = "soap"',
        500,
        "utf-8",
        "%Y%m%d%H%M%S",
        LINKWS_POLLS,
        extra={"block": _block},
    ),
    Vendor(
        "v-linkws-http",
        "linkws",
        _linkws,
        'transport = "http"',
        500,
        "gb2312",
        "%Y%m%d%H%M%S",
        LINKWS_POLLS,
        extra={"block": _block},
    ),
    Vendor("v-dxt", "dxt", _dxt, 'charset = "gbk"', 100, "gbk", "%Y%m%d%H%M%S", ("inbound", "reports", "balance")),
    Vendor("v-jinxin", "jinxin", _jinxin, 'userid = "12"\nformat = "json"', 100, "utf-8", None),
    Vendor(
        "v-orgws",
        "orgws",
        _orgws,
        "org_id = 10001",
        100,
        "utf-8",
        "%Y-%m-%d %H:%M:%S",
        ("balance",),
        path="Service.asmx",
    ),
    Vendor("v-qxs", "qxs", _qxs, 'userid = "12"', 100, "utf-8", "%Y-%m-%d %H:%M:%S", ("inbound", "reports", "balance")),
]


@pytest.fixture(scope="module")
def vendors(tmp_path_factory):
    from smsq.simulator.server import serve

    tmp = tmp_path_factory.mktemp("vendors")
    running = []
    lines = []
    for v in VENDORS:
        v.state = v.make_state()
        sim = serve(_app(v), port=0)
        running.append(sim)
        v.url = sim.url + v.path
        lines.append(f"""
[accounts.{v.account}]
provider = "{v.provider}"
base_url = "{v.url}"
username = "test"
password_env = "SMSQ_TEST_DXT_PASSWORD"
signature = "【某某科技】"
rate_limit = "100/s"
timeout = 5
{v.config}
""")
    config = tmp / "smsq.toml"
    config.write_text(GUARD_OFF + "".join(lines), encoding="utf-8")
    env = {**mode_env("distributed", tmp, config), "SMSQ_REPORT_WAIT": str(REPORT_WAIT)}
    saved = apply_env(env)
    from smsq.tasks.schema import ensure_schema
    from smsq.worker.db import upgrade

    upgrade(settings().database_url)
    ensure_schema(settings())
    stack = Stack("distributed", env, None, "", tmp)
    stack.worker = start_worker(stack)
    RUN_ENV.update(env)
    yield {v.account: v for v in VENDORS}
    stop_worker(stack.worker)
    restore_env(saved)
    for sim in running:
        sim.stop()


RUN_ENV: dict = {}
REPORT_WAIT = 3600  # SMSQ_REPORT_WAIT of this module's worker


def smsq(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **RUN_ENV, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def _app(v: Vendor):
    module = __import__(f"smsq.simulator.{v.provider}", fromlist=["create_app"])
    return module.create_app(v.state)


def open_window(account: str) -> None:
    with session_scope(settings().database_url) as s:
        s.execute(update(PollLease).where(PollLease.account == account).values(next_allowed_at=datetime(1970, 1, 1)))


def by_vendor(fn):
    return pytest.mark.parametrize("name", [v.account for v in VENDORS])(fn)


def by_polling_vendor(fn):
    return pytest.mark.parametrize("name", [v.account for v in VENDORS if v.polls])(fn)


@by_vendor
def test_a_batch_of_several_chunks_arrives_once_per_number(vendors, name):
    v = vendors[name]
    v.state.reset()
    count = 2 * v.chunk + 37
    numbers = [f"1{3 + i % 7}{i:09d}" for i in range(count)]
    receipt = send_sms(name, numbers + numbers[:10] + ["12345"], CONTENT)
    assert receipt.accepted == count and len(receipt.rejected) == 1
    status = wait_final(receipt.batch_id, timeout=60)
    assert status.chunks == {"accepted": 3}, status
    received = Counter(n for s in v.state.sends for n in s.numbers)
    assert set(received) == set(numbers) and max(received.values()) == 1
    assert sorted(len(s.numbers) for s in v.state.sends) == [37, v.chunk, v.chunk]
    # Decoded by the vendor in its encoding, intact (linkws wants the signature at the end).
    expected = CONTENT if v.provider != "linkws" else CONTENT.removeprefix("【某某科技】") + "【某某科技】"
    assert {s.content for s in v.state.sends} == {expected}
    if v.provider == "linkws":
        assert {s.transport for s in v.state.sends} == {v.account.rsplit("-", 1)[1]}


def at_text(when: datetime) -> str:
    """``--at`` as a user types it: Beijing time, to the second."""
    return when.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


@by_vendor
def test_a_scheduled_send_waits_in_smsq_and_cancel_stops_it(vendors, name):
    # Every vendor alike, those with a send-time parameter too: the chunk waits in smsq's
    # database until its time, so status says so and cancel can still stop it. (The same
    # through the command line, once: the commands do not depend on the vendor.)
    v = vendors[name]
    v.state.reset()
    at = datetime.now(BEIJING).replace(microsecond=0) + timedelta(hours=2)
    scheduled = send_sms(name, ["13700000001"], CONTENT, send_at=at)
    # A send for now through the same account and worker, after it: once that one is
    # final, a scheduled chunk handed to the vendor at once would have gone too.
    assert wait_final(send_sms(name, ["13700000002"], CONTENT).batch_id).recipients == {"sent": 1}
    status = batch_status(scheduled.batch_id)
    assert status.scheduled and status.chunks == {"pending": 1}, status
    assert status.send_at == at.astimezone(UTC).replace(tzinfo=None), status
    cancelled = cancel_batch(scheduled.batch_id)
    assert (cancelled.cancelled_chunks, cancelled.cancelled_numbers, cancelled.done) == (1, 1, {}), cancelled
    after = batch_status(scheduled.batch_id)
    assert after.final and after.recipients == {"cancelled": 1} and not after.scheduled, after
    assert [s.numbers for s in v.state.sends] == [["13700000002"]]  # the vendor never saw the cancelled one


def test_a_scheduled_send_from_the_cli_waits_and_cancel_stops_it(vendors):
    """As a user types it, on a vendor with a send-time parameter of its own: `smsq send --at`
    in Beijing time, `smsq status` says when, `smsq cancel` stops it."""
    name = "v-linkws-soap"
    v = vendors[name]
    v.state.reset()
    at = datetime.now(BEIJING).replace(microsecond=0) + timedelta(hours=2)
    sent = smsq("send", "--account", name, "--to", "13700000001", "--content", CONTENT, "--at", at_text(at))
    assert sent.returncode == 0, sent.stderr
    batch_id = sent.stdout.strip()
    # A send for now through the same account and worker, after it: once that one is
    # final, a scheduled chunk handed to the vendor at once would have gone too.
    now = smsq("send", "--account", name, "--to", "13700000002", "--content", CONTENT, "--wait")
    assert now.returncode == 0, now.stderr
    status = smsq("status", batch_id)
    assert status.returncode == 0, status.stderr
    assert f"scheduled at {at_text(at)}+08:00" in status.stdout, status.stdout
    assert "chunks:     pending 1" in status.stdout, status.stdout
    cancelled = smsq("cancel", batch_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"batch {batch_id}: cancelled 1 pending chunk(s), 1 number(s): they will not be sent" in cancelled.stdout
    assert "already had an outcome" not in cancelled.stdout, cancelled.stdout
    after = json.loads(smsq("status", batch_id, "--json").stdout)
    assert after["final"] and after["recipients"] == {"cancelled": 1} and not after["scheduled"], after
    assert [s.numbers for s in v.state.sends] == [["13700000002"]]  # the vendor never saw the cancelled one


@pytest.fixture(scope="module")
def scheduled(vendors):
    """One send per vendor, each a few seconds ahead of its own `smsq send --at`, waited out
    together: every vendor's call, as the vendor saw it, and the batch's final status."""
    sent = {}
    for v in VENDORS:
        v.state.reset()
        # A few seconds ahead, whole seconds as --at takes them: far enough that the send is
        # stored before its time even on a loaded host.
        at = (datetime.now(BEIJING) + timedelta(seconds=6)).replace(microsecond=0)
        out = smsq("send", "--account", v.account, "--to", "13700000003", "--content", CONTENT, "--at", at_text(at))
        assert out.returncode == 0, out.stderr
        sent[v.account] = (int(out.stdout), at)
    seen = {}
    for v in VENDORS:
        batch_id, at = sent[v.account]
        status = wait_final(batch_id, timeout=60)
        seen[v.account] = (status, at, list(v.state.sends))
    return seen


@by_vendor
def test_a_scheduled_send_goes_out_at_its_time_once(vendors, scheduled, name):
    v = vendors[name]
    status, at, sends = scheduled[name]
    assert status.recipients == {"sent": 1}, status
    (call,) = sends  # once
    assert call.numbers == ["13700000003"]
    if v.send_time_format:
        assert not call.send_time  # "now": smsq called at the time, the vendor holds nothing
    late = call.at - at.timestamp()
    print(f"{name}: the vendor received the scheduled call {late:+.3f} s after send_at")
    assert 0 <= late < settings().relay_interval + 3, (
        late
    )  # never early; late by at most a relay interval and a pick-up


@by_polling_vendor
def test_every_poll_the_vendor_has(vendors, name):
    v = vendors[name]
    v.state.reset()
    if "reports" in v.polls:
        receipt = send_sms(name, ["13600000001", "13600000002"], CONTENT)
        wait_final(receipt.batch_id)
        open_window(name)
        assert poll(name, "reports").outcome == "ok"
        assert batch_status(receipt.batch_id).recipients == {"delivered": 2}
    if "inbound" in v.polls:
        v.state.add_inbound("13600000009", f"{name} 回复#1, 收到")
        open_window(name)
        assert poll(name, "inbound").items == 1
        with session_scope(settings().database_url) as s:
            stored = s.execute(select(InboundMessage).where(InboundMessage.account == name)).scalars().all()
        assert [(m.mobile, m.content) for m in stored][-1] == ("13600000009", f"{name} 回复#1, 收到")
    if "balance" in v.polls:
        open_window(name)
        assert poll(name, "balance").outcome == "ok"
        with session_scope(settings().database_url) as s:
            assert s.get(AccountBalance, name).balance > 0
    if "blocked" in v.polls:
        v.extra["block"](v.state, "13600000077")
        open_window(name)
        assert poll(name, "blocked").outcome == "ok"
        receipt = send_sms(name, ["13600000077", "13600000078"], CONTENT)
        assert receipt.rejected == [("13600000077", "blocked for this account: reported blocked by the vendor")]
        with session_scope(settings().database_url) as s:
            assert s.get(BlockedNumber, (name, "13600000077")).source == "vendor"


def test_check_credentials_from_the_cli(vendors):
    ok = smsq("check", "v-orgws")
    assert ok.returncode == 0 and "credentials accepted" in ok.stdout, ok.stderr
    open_window("v-dxt")
    balance = smsq("check", "v-dxt")
    assert balance.returncode == 0 and "v-dxt: credentials accepted (balance " in balance.stdout, balance.stderr
    nothing = smsq("check", "v-jinxin")
    assert nothing.returncode == 2 and "no way to check credentials" in nothing.stderr


def test_forbidden_words_from_the_cli(vendors):
    clean = smsq("keywords", "v-qxs", "--content", "【某某科技】您好")
    assert clean.returncode == 0 and "clean" in clean.stdout, clean.stderr
    bad = smsq("keywords", "v-qxs", "--content", "【某某科技】法轮功")
    assert bad.returncode == 1 and "forbidden: 法轮功" in bad.stdout
    other = smsq("keywords", "v-dxt", "--content", "x")
    assert other.returncode == 2 and "no keyword check" in other.stderr


def test_change_the_password_at_the_vendor_from_the_cli(vendors):
    state = vendors["v-orgws"].state
    result = smsq("password", "v-orgws", "--stdin", stdin="N3w-pass-4567\n")
    try:
        assert result.returncode == 0 and "password changed at the vendor" in result.stdout, result.stderr
        assert state.accounts["test"] == "N3w-pass-4567"
        assert "N3w-pass-4567" not in result.stdout + result.stderr
        refused = smsq("check", "v-orgws")  # the config still has the old one
        assert refused.returncode == 1 and "refused" in refused.stdout
    finally:
        state.accounts["test"] = PASSWORD


@pytest.mark.parametrize("name", ["v-linkws-soap", "v-linkws-http"])
def test_a_full_linkws_page_asks_for_another_poll(vendors, name):
    # Get hands out at most 50 messages a call (每次最多取50條,超過50條下次取).
    v = vendors[name]
    v.state.reset()
    for i in range(60):
        v.state.add_inbound(f"1360001{i:04d}", f"{name} 回复 #{i}")
    results = []
    for _ in range(2):
        open_window(name)
        results.append(poll(name, "inbound"))
    assert [(r.items, r.full_page) for r in results] == [(50, True), (10, False)]


# -- an answer that takes the call and refuses some of its numbers --------------------

THREE = ["13510000001", "13510000002", "13510000003"]


def set_faults(v: Vendor, **faults) -> None:
    """The simulator's switches, over its /_sim/ routes."""
    root = v.url[: len(v.url) - len(v.path)]
    response = httpx.post(f"{root}_sim/faults", json=faults, timeout=5)
    assert response.status_code == 200, response.text


def status_of(batch_id: int) -> dict:
    out = smsq("status", str(batch_id), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def exported(batch_id: int, *states: str) -> dict[str, dict]:
    """`smsq export` as a user reads it: the rows by mobile."""
    out = smsq("export", str(batch_id), *(("--state", ",".join(states)) if states else ()))
    assert out.returncode == 0, out.stderr
    return {row["mobile"]: row for row in csv.DictReader(io.StringIO(out.stdout))}


def send_waiting(name: str, numbers: list[str]) -> tuple[int, int]:
    """`smsq send --wait`: (batch id, exit status)."""
    out = smsq("send", "--account", name, "--to", ",".join(numbers), "--content", CONTENT, "--wait")
    assert out.returncode in (0, 1), out.stderr
    return int(out.stdout.splitlines()[0]), out.returncode


def ids_the_vendor_gave(v: Vendor) -> dict[str, str]:
    (call,) = v.state.sends
    if v.provider == "dxt":
        return dict(zip(call.numbers, call.smsids, strict=True))  # one SMSID per accepted number
    return dict.fromkeys(call.numbers, call.task_id)  # qxs: the taskid reports carry


@pytest.mark.parametrize("name", ["v-dxt", "v-qxs"])
def test_a_number_refused_by_count_fails_once_reports_placed_the_others(vendors, name):
    """dxt 0|2|1|d, qxs successCounts 2 of 3: which number was refused, delivery reports tell."""
    v = vendors[name]
    v.state.reset()
    set_faults(v, refuse=[THREE[1]])
    batch_id, exit_status = send_waiting(name, THREE)
    assert exit_status == 1  # final, but not clean: a refusal is still open
    status = status_of(batch_id)
    assert status["final"] and not status["clean"] and status["recipients"] == {"sent": 3}, status
    refused = status["refused"]
    assert (refused["numbers"], refused["open"], refused["awaiting_reports"]) == (1, 1, 1), refused
    ahead = datetime.fromisoformat(refused["due_at"]) - datetime.now(BEIJING)
    assert abs(ahead.total_seconds() - REPORT_WAIT) < 120  # the worker's SMSQ_REPORT_WAIT
    assert (
        "refused:    1 number(s) by the vendor in its answers; 1 of them not named"
        in smsq("status", str(batch_id)).stdout
    )
    assert not any(row["vendor_id"] for row in exported(batch_id).values())  # no id told apart yet
    open_window(name)
    assert poll(name, "reports").outcome == "ok"
    # The worker's own relay pass: every other number is placed, so the one left was refused.
    final = wait_until(
        lambda: (s := status_of(batch_id))["recipients"] == {"delivered": 2, "failed": 1} and s,
        30,
        0.3,
        "the refused number to be placed",
    )
    assert not final["clean"] and final["refused"]["open"] == 0
    failed = exported(batch_id, "failed")
    assert list(failed) == [THREE[1]] and failed[THREE[1]]["code"] == "refused"
    assert "delivery reports placed all the others" in failed[THREE[1]]["detail"]
    taken = {m: row["vendor_id"] for m, row in exported(batch_id, "delivered").items()}
    assert taken == ids_the_vendor_gave(v)  # each accepted number with its own id, from its report


def test_numbers_no_report_placed_fail_when_the_report_wait_ends(vendors):
    v = vendors["v-dxt"]
    v.state.reset()
    v.state.report_status = None  # the vendor sends no report at all
    try:
        set_faults(v, refuse=[THREE[0]])
        batch_id = send_sms("v-dxt", THREE, CONTENT).batch_id
        assert wait_final(batch_id).refused.open == 1
        with session_scope(settings().database_url) as s:  # SMSQ_REPORT_WAIT has passed
            s.execute(update(Chunk).where(Chunk.batch_id == batch_id).values(refused_due_at=datetime(2000, 1, 1)))
        wait_until(lambda: batch_status(batch_id).recipients == {"failed": 3}, 30, 0.3, "the relay's sweep")
    finally:
        v.state.report_status = 10
    rows = exported(batch_id)
    assert {(row["state"], row["code"]) for row in rows.values()} == {("failed", "refused")}
    assert all(
        "no delivery report came for this one within 1 h (SMSQ_REPORT_WAIT)" in r["detail"] for r in rows.values()
    )
    assert status_of(batch_id)["refused"]["open"] == 0


@pytest.mark.parametrize(
    "name, code, reason",
    [("v-orgws", "refused", "发送失败的号码"), ("v-jinxin", "00111", "号码在黑名单中")],
    ids=["orgws FailPhone", "jinxin failList"],
)
def test_a_number_the_vendor_names_refused_fails_at_once_with_its_code(vendors, name, code, reason):
    v = vendors[name]
    v.state.reset()
    set_faults(v, refuse=[THREE[2]])
    batch_id, exit_status = send_waiting(name, THREE)
    status = status_of(batch_id)
    assert exit_status == 1 and status["recipients"] == {"sent": 2, "failed": 1}, status
    assert (status["refused"]["numbers"], status["refused"]["open"]) == (1, 0)
    failed = exported(batch_id, "failed")
    assert list(failed) == [THREE[2]] and failed[THREE[2]]["code"] == code and reason in failed[THREE[2]]["detail"]
    assert (
        "refused:    1 number(s) by the vendor in its answers; each one failed" in smsq("status", str(batch_id)).stdout
    )
    assert [s.numbers for s in v.state.sends] == [THREE[:2]]


def test_a_count_from_a_vendor_without_reports_is_shown_never_guessed(vendors):
    """jinxin failCount without failList: it has no delivery reports to tell which."""
    v = vendors["v-jinxin"]
    v.state.reset()
    set_faults(v, refuse=[THREE[0]], refuse_unnamed=True)
    batch_id, exit_status = send_waiting("v-jinxin", THREE)
    status = status_of(batch_id)
    assert exit_status == 1 and status["recipients"] == {"sent": 3} and not status["clean"], status
    assert status["refused"] == {"numbers": 1, "open": 1, "awaiting_reports": 0, "untold": 1, "due_at": None}
    assert "sends no delivery reports: which of the sent ones cannot be told" in smsq("status", str(batch_id)).stdout
    rows = exported(batch_id)
    assert all(r["state"] == "sent" and "which ones cannot be told" in r["detail"] for r in rows.values())
    listed = smsq("batches", "--account", "v-jinxin", "--limit", "1")
    assert "sent 3; refused 1 (1 not named)" in listed.stdout, listed.stdout

"""Polls: fetched once, journaled first, never lost; reports settle recipients and unknown chunks.

The vendor allows one call per endpoint every 30 s. Tests that need several
polls in a row open the window by hand (``open_window``) instead of waiting:
that is the lease's own state, which every process consults.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from smsq.simulator.dxt import Report as SimReport
from smsq.store.models import Chunk, InboundMessage, PollJournal, Recipient, StatusReport
from smsq.tasks import batch_status, polls, send_sms
from smsq.tasks.polls import parse_journal, poll, reparse
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import ROOT, on_stacks, start_worker, stop_worker, wait_final, wait_until
from .conftest import open_window, sent_numbers

CONTENT = "【某某科技】您的订单已发货"


def count(model, **where) -> int:
    with session_scope(settings().database_url) as s:
        q = select(func.count()).select_from(model)
        for key, value in where.items():
            q = q.where(getattr(model, key) == value)
        return s.scalar(q)


def test_120_waiting_messages_are_stored_once_across_three_polls(stack, sim):
    before = count(InboundMessage)
    for i in range(120):
        sim.add_inbound(f"1390000{i:04d}", f"回复 {i}; 好的,收到 #{i}")
    results = []
    for _ in range(3):
        open_window()
        results.append(poll("shop-dxt", "inbound"))
    assert [r.items for r in results] == [50, 50, 20]
    assert [r.full_page for r in results] == [True, True, False]  # a full page asks for another poll
    assert count(InboundMessage) - before == 120
    with session_scope(settings().database_url) as s:
        contents = set(s.execute(select(InboundMessage.content)).scalars())
    assert {f"回复 {i}; 好的,收到 #{i}" for i in range(120)} <= contents
    open_window()
    assert poll("shop-dxt", "inbound").items == 0


def test_inside_the_window_nothing_is_called(stack, sim):
    open_window()
    assert poll("shop-dxt", "balance").outcome == "ok"
    second = poll("shop-dxt", "balance")
    assert second.outcome == "leased" and 29 < second.retry_in <= 32
    assert [c.endpoint for c in sim.calls].count("Get_Account_Balance.asp") == 1


def test_a_crash_between_response_and_parse_loses_nothing(stack, sim, monkeypatch):
    before = count(InboundMessage)
    for i in range(7):
        sim.add_inbound(f"1370000{i:04d}", f"crash test {i}")

    def killed(conf, journal_id):
        raise SystemExit("worker killed after the vendor answered")

    monkeypatch.setattr(polls, "parse_journal", killed)
    open_window()
    with pytest.raises(SystemExit):
        poll("shop-dxt", "inbound")
    monkeypatch.undo()
    assert sim.pending_counts()["inbound"] == 0  # the vendor has handed them out for good
    with session_scope(settings().database_url) as s:
        entry = s.execute(select(PollJournal).order_by(PollJournal.id.desc()).limit(1)).scalar_one()
        assert entry.state == "fetched" and "crash test 6" in entry.body
    assert count(InboundMessage) == before

    results = reparse()
    assert [r.items for r in results if r.journal_id == entry.id] == [7]
    assert count(InboundMessage) - before == 7
    # Parsing the same body again inserts nothing.
    again = polls.parse_journal(settings(), entry.id)
    assert again.items == 7 and again.new_inbound == []
    assert count(InboundMessage) - before == 7


def test_an_unreadable_body_stays_in_the_journal_for_reparse(stack, sim, monkeypatch):
    sim.add_inbound("13600000001", "parser bug")
    provider_cls = type(polls.provider_for(settings().account("shop-dxt")))
    original = provider_cls.parse_inbound

    def broken(self, body):
        raise ValueError("parser bug")

    monkeypatch.setattr(provider_cls, "parse_inbound", broken)
    open_window()
    result = poll("shop-dxt", "inbound")
    assert result.outcome == "failed" and "parser bug" in result.detail
    with session_scope(settings().database_url) as s:
        assert s.get(PollJournal, result.journal_id).state == "failed"
    monkeypatch.setattr(provider_cls, "parse_inbound", original)
    fixed = [r for r in reparse() if r.journal_id == result.journal_id]
    assert fixed[0].outcome == "ok" and fixed[0].items == 1
    with session_scope(settings().database_url) as s:
        assert s.get(PollJournal, result.journal_id).state == "parsed"


def test_the_same_report_handed_out_twice_is_one_row(stack, sim):
    receipt = send_sms("shop-dxt", ["13500000001"], CONTENT)
    wait_final(receipt.batch_id)
    with sim.lock:
        report = sim.reports[-1]
        sim.reports.append(dataclasses.replace(report))  # the vendor repeats itself
    before = count(StatusReport)
    open_window()
    result = poll("shop-dxt", "reports")
    assert result.items == 2
    assert count(StatusReport) - before == 1
    assert batch_status(receipt.batch_id).recipients == {"delivered": 1}


def vendor_id_of(batch_id: int) -> str:
    with session_scope(settings().database_url) as s:
        return s.execute(select(Recipient.vendor_id).where(Recipient.batch_id == batch_id)).scalar_one()


def test_a_reused_vendor_id_settles_the_later_send_and_a_repeat_inserts_nothing(stack, sim):
    number = "13500000041"
    first = send_sms("shop-dxt", [number], CONTENT)
    wait_final(first.batch_id)
    open_window()
    poll("shop-dxt", "reports")
    assert batch_status(first.batch_id).recipients == {"delivered": 1}
    reused = vendor_id_of(first.batch_id)
    with sim.lock:  # the vendor restarts and counts its SMSIDs from the same start
        sim._smsids = itertools.count(int(reused))
    second = send_sms("shop-dxt", [number], CONTENT)
    wait_final(second.batch_id)
    assert vendor_id_of(second.batch_id) == reused
    before = count(StatusReport)
    open_window()
    result = poll("shop-dxt", "reports")  # "SMSID;13500000041;10" again, for the later send
    assert result.items == 1 and count(StatusReport) - before == 1
    assert batch_status(second.batch_id).recipients == {"delivered": 1}
    assert batch_status(first.batch_id).recipients == {"delivered": 1}

    with sim.lock:  # the same page handed out once more: nothing new
        sim.reports.append(SimReport("test", reused, number, 10, 0.0))
    open_window()
    assert poll("shop-dxt", "reports").items == 1
    assert count(StatusReport) - before == 1
    with session_scope(settings().database_url) as s:
        settled = (
            s.execute(
                select(StatusReport.recipient_id)
                .where(StatusReport.vendor_id == reused, StatusReport.mobile == number)
                .order_by(StatusReport.id)
            )
            .scalars()
            .all()
        )
        recipients = (
            s.execute(
                select(Recipient.id)
                .where(Recipient.batch_id.in_([first.batch_id, second.batch_id]))
                .order_by(Recipient.id)
            )
            .scalars()
            .all()
        )
    assert settled == recipients  # one report each, each on its own send


def test_a_repeated_report_is_not_applied_to_a_settled_send(stack, sim):
    receipt = send_sms("shop-dxt", ["13500000051"], CONTENT)
    wait_final(receipt.batch_id)
    with sim.lock:
        failed = dataclasses.replace(sim.reports[-1], status=20)
        sim.reports[-1] = failed
    open_window()
    poll("shop-dxt", "reports")
    assert batch_status(receipt.batch_id).recipients == {"failed": 1}
    before = count(StatusReport)
    with sim.lock:
        sim.reports.append(dataclasses.replace(failed, available_at=0.0))
    open_window()
    assert poll("shop-dxt", "reports").items == 1
    assert count(StatusReport) == before
    assert batch_status(receipt.batch_id).recipients == {"failed": 1}


def test_reports_settle_delivered_failed_and_an_unknown_chunk(stack, sim):
    sim.fail_numbers = {"13500000013"}
    try:
        # Both through one account: reports are matched within the account that polls them.
        ok = send_sms("slow-dxt", ["13500000011", "13500000012", "13500000013"], CONTENT)
        wait_final(ok.batch_id)
        sim.set_faults(hang=True, hang_seconds=3)  # accepted by the vendor, answer lost
        lost = send_sms("slow-dxt", ["13500000021", "13500000022"], CONTENT)
        assert wait_final(lost.batch_id).chunks == {"unknown": 1}
        sim.set_faults(hang=False)
        open_window("slow-dxt")
        result = poll("slow-dxt", "reports")
    finally:
        sim.fail_numbers = set()
    assert result.items == 5
    assert batch_status(ok.batch_id).recipients == {"delivered": 2, "failed": 1}
    settled = batch_status(lost.batch_id)
    assert settled.chunks == {"accepted": 1} and settled.recipients == {"delivered": 2}
    with session_scope(settings().database_url) as s:
        chunk = s.execute(select(Chunk).where(Chunk.batch_id == lost.batch_id)).scalar_one()
        assert "settled by a delivery report" in chunk.detail
    assert len(result.changed_recipients) == 5


def test_a_report_for_nothing_we_know_is_kept(stack, sim):
    from smsq.simulator.dxt import Report as SimReport

    with sim.lock:
        sim.reports.append(SimReport("test", "999999", "13400000000", 10, 0.0))
    open_window()
    assert poll("shop-dxt", "reports").items == 1
    with session_scope(settings().database_url) as s:
        kept = s.execute(select(StatusReport).where(StatusReport.vendor_id == "999999")).scalar_one()
        assert kept.recipient_id is None and kept.mobile == "13400000000" and kept.delivered is True


def test_balance_is_stored_and_shown_by_smsq_accounts(stack, sim):
    open_window()
    assert poll("shop-dxt", "balance").outcome == "ok"
    out = subprocess.run(
        [sys.executable, "-m", "smsq", "accounts", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    accounts = {a["account"]: a for a in json.loads(out.stdout)}
    assert accounts["shop-dxt"]["balance"] == sim.balances["test"]
    assert accounts["shop-dxt"]["polls"]["balance"]["outcome"] == "ok"
    assert accounts["wrong-dxt"]["health"] == "ok"  # never polled yet: nothing wrong known


def test_a_wrong_password_poll_is_an_auth_failure_on_record(stack, sim):
    open_window("wrong-dxt")
    result = poll("wrong-dxt", "balance")
    assert result.outcome == "auth" and "-7" in result.detail


@on_stacks("distributed")  # the hook message is read back from the Redis broker
def test_hooks_receive_the_ids_of_new_records(stack, sim, monkeypatch):
    from kombu import Connection

    monkeypatch.setenv("SMSQ_ON_INBOUND", "myapp.on_inbound")
    monkeypatch.setenv("SMSQ_HOOK_QUEUE", "test.hooks")
    sim.add_inbound("13300000001", "hook me")
    open_window()
    result = poll("shop-dxt", "inbound")
    with Connection(settings().broker_url) as conn:
        queue = conn.SimpleQueue("test.hooks")
        message = queue.get(timeout=10)
        assert message.headers["task"] == "myapp.on_inbound"
        assert message.payload[0] == [result.new_inbound]
        message.ack()
        queue.close()


RACE_LIMIT = 120  # the start-up polls and the window's 30 s, with room to spare for a loaded host
RACE_AFTER = 5  # the race goes on this long after the window opened again: a second caller would show in it
POLLED = {"get_report_txt.asp", "get_receive_message_txt.asp", "Get_Account_Balance.asp"}


def polled_times(sim) -> dict[str, list[float]]:
    by_endpoint: dict[str, list[float]] = {}
    for call in sim.calls:
        by_endpoint.setdefault(call.endpoint, []).append(call.at)
    return {e: sorted(t) for e, t in by_endpoint.items() if e != "sendsms_txt.asp"}


def beats_log(tmp_path) -> str:
    return "".join((tmp_path / f"beat{i}.log").read_text(errors="replace") for i in range(2))


@on_stacks("distributed")  # the race runs on the distributed stack
def test_two_beats_and_extra_workers_never_poll_inside_the_window(stack, sim, tmp_path):
    """Race until the window has opened again, and a little after: two beats (each thinking
    it is the only one), a second worker, and this process polling in a loop. The vendor sees each endpoint at
    most once per 30 s:
    once as the beats start and once when the window opens again, 30 s later."""
    open_window()
    # The beats see one account (the simulator cannot tell accounts apart in its call log).
    config = tmp_path / "one-account.toml"
    # Polled as often as the vendor allows, so that the beats fire inside the race too.
    config.write_text(
        (stack.tmp / "smsq.toml")
        .read_text()
        .split("[accounts.slow-dxt]")[0]
        .replace('rate_limit = "200/s"', 'rate_limit = "200/s"\npoll_interval = 30', 1)
    )
    env = {**os.environ, **stack.env, "SMSQ_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    beats = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smsq",
                "beat",
                "--scheduler",
                "local",
                "--schedule-file",
                str(tmp_path / f"beat{i}"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=open(tmp_path / f"beat{i}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    second = dataclasses.replace(stack, worker=None, tmp=tmp_path, env={**stack.env, "SMSQ_CONFIG": str(config)})
    second.worker = start_worker(second, queues="smsq.poll")
    start = time.monotonic()
    manual = 0
    try:
        reopened = None
        while time.monotonic() - start < RACE_LIMIT:
            for kind in ("inbound", "reports", "balance"):
                manual += poll("shop-dxt", kind).outcome != "leased"
            if reopened is None and reopened_for_all(sim, tmp_path):
                reopened = time.monotonic()
            if reopened is not None and time.monotonic() - reopened >= RACE_AFTER:
                break
            time.sleep(0.5)
    finally:
        for beat in beats:
            beat.terminate()
        stop_worker(second.worker)
        for beat in beats:
            beat.wait(20)
    polled = polled_times(sim)
    assert set(polled) == POLLED
    for endpoint, times in polled.items():
        assert len(times) >= 2, f"{endpoint} polled only {len(times)} time(s) in {RACE_LIMIT} s"
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 30.0, f"{endpoint} called {min(gaps):.1f} s after the previous call"
    assert beats_log(tmp_path).count("Sending due task smsq.poll_inbound:shop-dxt") >= 2  # both beats really fired


def reopened_for_all(sim, tmp_path) -> bool:
    """Every endpoint called twice (as the beats start, then when the window opens again),
    and the beats have fired twice."""
    polled = polled_times(sim)
    return (
        set(polled) == POLLED
        and all(len(t) >= 2 for t in polled.values())
        and beats_log(tmp_path).count("Sending due task smsq.poll_inbound:shop-dxt") >= 2
    )


def smsq(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smsq", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


# The commands print what the polls return, and the polls run on both stacks in this module;
# nine command starts make this test the module's slowest on each stack it runs on.
@on_stacks("distributed")
def test_poll_inbound_and_reparse_from_the_cli(stack, sim, monkeypatch):
    sim.add_inbound("13200000001", "命令行 hello")
    open_window()
    polled = smsq(stack, "poll", "shop-dxt", "inbound")
    assert polled.returncode == 0 and "shop-dxt inbound: ok, 1 item(s)" in polled.stdout, polled.stderr
    again = smsq(stack, "poll", "shop-dxt", "inbound")
    assert again.returncode == 0 and "not polled" in again.stdout and "30 s rule" in again.stdout
    listed = smsq(stack, "inbound", "--account", "shop-dxt", "--json")
    messages = [json.loads(line) for line in listed.stdout.splitlines()]
    assert messages[-1]["mobile"] == "13200000001" and messages[-1]["content"] == "命令行 hello"
    wrong = smsq(stack, "poll", "shop-dxt", "blocked")
    assert wrong.returncode == 2 and "has no 'blocked' poll" in wrong.stderr

    # A journal row that failed to parse shows in `smsq accounts` until --reparse.
    with session_scope(settings().database_url) as s:
        s.add(
            PollJournal(
                account="shop-dxt",
                kind="inbound",
                body="1|77;13200000002;journaled",
                state="failed",
                error="ValueError: injected",
            )
        )
    health = json.loads(smsq(stack, "accounts", "--json").stdout)
    shop = next(a for a in health if a["account"] == "shop-dxt")
    assert shop["unparsed_journal"] >= 1 and "smsq poll --reparse shop-dxt" in shop["health"]
    fixed = smsq(stack, "poll", "--reparse", "shop-dxt")
    assert fixed.returncode == 0 and "parsed again" in fixed.stdout, fixed.stdout + fixed.stderr
    after = json.loads(smsq(stack, "accounts", "--json").stdout)
    assert next(a for a in after if a["account"] == "shop-dxt")["unparsed_journal"] == 0
    assert any(
        m["content"] == "journaled" for m in map(json.loads, smsq(stack, "inbound", "--json").stdout.splitlines())
    )


def test_a_full_page_polls_again_after_the_window(stack, sim):
    from celery.signals import before_task_publish

    for i in range(60):
        sim.add_inbound(f"1310000{i:04d}", f"page {i}")
    seen = []

    def capture(sender=None, body=None, headers=None, **_):
        seen.append((sender, body[0], headers.get("eta")))

    before_task_publish.connect(capture, weak=False)
    try:
        open_window()
        assert polls.poll_inbound("shop-dxt") == "ok"
    finally:
        before_task_publish.disconnect(capture)
    assert [(s, args) for s, args, _ in seen] == [("smsq.poll_inbound", ["shop-dxt", 0])]
    assert seen[0][2] is not None  # due when the window opens again, not now
    open_window()
    assert poll("shop-dxt", "inbound").items == 10


def test_a_balance_under_the_alert_is_a_warning(stack, sim, caplog, tmp_path):
    import logging

    from smsq.worker.config import parse_account

    conf = settings()
    table = {
        "provider": "dxt",
        "base_url": stack.sim_url,
        "username": "test",
        "password_env": "SMSQ_TEST_DXT_PASSWORD",
        "balance_alert": 1e12,
    }
    low = dataclasses.replace(conf, accounts={**conf.accounts, "low-dxt": parse_account("low-dxt", table, tmp_path)})
    with caplog.at_level(logging.WARNING, logger="smsq.poll"):
        assert poll("low-dxt", "balance", conf=low).outcome == "ok"
    assert "account low-dxt: balance" in caplog.text and "under the alert threshold" in caplog.text


@on_stacks("distributed")  # the Redis lock is the distributed mode's
def test_only_one_redbeat_beat_sends(stack, tmp_path):
    env = {**os.environ, **stack.env, "SMSQ_RELAY_INTERVAL": "1", "PYTHONPATH": str(ROOT)}
    beats = [
        subprocess.Popen(
            [sys.executable, "-m", "smsq", "beat"],
            cwd=tmp_path,
            env=env,
            stdout=open(tmp_path / f"redbeat{i}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]

    def relays(i: int) -> int:
        return (tmp_path / f"redbeat{i}.log").read_text(errors="replace").count("Sending due task smsq.relay")

    def started() -> bool:
        return all("beat: Starting" in (tmp_path / f"redbeat{i}.log").read_text(errors="replace") for i in range(2))

    try:
        # Once both run, one beat sends the relay every second, three times; the other, all
        # that time, must not.
        wait_until(started, 60, 0.2, "both beats to start")
        before = max(relays(0), relays(1))
        wait_until(lambda: max(relays(0), relays(1)) >= before + 3, 60, 0.2, "three more relays")
    finally:
        for beat in beats:
            beat.terminate()
        for beat in beats:
            beat.wait(20)
    sent = [relays(0), relays(1)]
    assert sorted(sent)[0] == 0 and sorted(sent)[1] >= 3, sent


def test_beat_polls_every_kind_as_it_starts(stack, sim, tmp_path):
    """Balance polls every 10 minutes; a fresh beat must not leave it unknown that long."""
    from smsq.store.models import PollStatus, utcnow

    open_window()
    started = utcnow()
    config = tmp_path / "one-account.toml"
    config.write_text((stack.tmp / "smsq.toml").read_text().split("[accounts.slow-dxt]")[0])
    env = {**os.environ, **stack.env, "SMSQ_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    beat = subprocess.Popen(
        [sys.executable, "-m", "smsq", "beat", "--scheduler", "local", "--schedule-file", str(tmp_path / "beat")],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "beat.log", "wb"),
        stderr=subprocess.STDOUT,
    )

    def polled(kind):
        with session_scope(settings().database_url) as s:
            row = s.get(PollStatus, ("shop-dxt", kind))
            return row is not None and row.polled_at >= started and row.outcome == "ok"

    try:
        wait_until(lambda: polled("balance"), 30, what="the balance poll a starting beat queues")
    finally:
        beat.terminate()
        beat.wait(20)
    assert [c.endpoint for c in sim.calls].count("Get_Account_Balance.asp") == 1


# -- opt-out: a reply that is an unsubscribe keyword puts the number on the account's blocked
# list, through a real poll; later sends skip it (the keywords themselves: tests/unit/test_optout.py)


def blocked(stack, account: str = "shop-dxt") -> dict[str, dict]:
    result = smsq(stack, "blocked", "--account", account, "--json")
    assert result.returncode == 0, result.stderr
    return {b["mobile"]: b for b in map(json.loads, result.stdout.splitlines())}


def test_an_unsubscribe_reply_stops_later_sends(stack, sim):
    sim.add_inbound("13600002001", " ＴＤ ")  # full-width, padded: still the whole reply
    sim.add_inbound("13600002002", "TD 是什么意思?")  # TD inside a longer reply is a question, not an opt-out
    sim.add_inbound("13600002003", "退订")
    sim.add_inbound("13600002004", "td")
    open_window()
    result = poll("shop-dxt", "inbound")
    assert result.outcome == "ok" and result.items == 4

    on_list = blocked(stack)
    for number in ("13600002001", "13600002003", "13600002004"):
        assert on_list[number]["reason"] == "opted out" and on_list[number]["source"] == "optout"
    assert "13600002002" not in on_list

    receipt = send_sms("shop-dxt", [f"1360000200{i}" for i in range(1, 5)], CONTENT)
    assert sorted(receipt.rejected) == [
        (n, "blocked for this account: opted out") for n in ("13600002001", "13600002003", "13600002004")
    ]
    wait_final(receipt.batch_id)
    assert sent_numbers(sim) == {"13600002002"}
    # Opt-out is per account: the same number can still be sent through another one.
    assert send_sms("slow-dxt", ["13600002001"], CONTENT).rejected == []

    # An operator takes a number off the list; parsing the same body again does not put it back.
    removed = smsq(stack, "blocked", "--account", "shop-dxt", "--remove", "13600002001")
    assert removed.returncode == 0, removed.stderr
    again = parse_journal(settings(), result.journal_id)
    assert again.outcome == "ok" and again.new_inbound == []
    assert "13600002001" not in blocked(stack)

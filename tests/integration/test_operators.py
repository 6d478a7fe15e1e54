"""Operator commands, run as the operator runs them (``python -m smsq ...``) against
the real stack: status --number, export, batches, cancel, settle --batch, purge, blocked."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from smsq.store.models import Batch, Chunk, InboundMessage, PollJournal, StatusReport, utcnow
from smsq.tasks import batch_status, send_sms
from smsq.tasks.polls import poll
from smsq.tasks.relay import run_relay
from smsq.tasks.settle import problem_chunks
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import on_stacks, wait_final, wait_until
from .conftest import open_window, sent_numbers
from .conftest import smsq as run_smsq

CONTENT = "【某某科技】您的订单已发货"


def smsq(stack, *args: str):
    return run_smsq(*args, env=stack.env)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_status_number_lists_every_send_newest_first(stack, sim):
    sim.fail_numbers = {"13500000201"}
    try:
        first = send_sms("shop-dxt", ["13500000201", "13500000202"], CONTENT)
        wait_final(first.batch_id)
        open_window()
        assert poll("shop-dxt", "reports").outcome == "ok"
    finally:
        sim.fail_numbers = set()
    second = send_sms("slow-dxt", ["135 0000 0201"], CONTENT)
    wait_final(second.batch_id)

    result = smsq(stack, "status", "--number", "+86 135-0000-0201", "--json")
    assert result.returncode == 0, result.stderr
    sends = json_lines(result.stdout)
    assert [(s["batch_id"], s["account"], s["state"]) for s in sends] == [
        (second.batch_id, "slow-dxt", "sent"),
        (first.batch_id, "shop-dxt", "failed"),
    ]
    assert sends[1]["code"] == "20" and sends[1]["updated_at"].endswith("+08:00")

    table = smsq(stack, "status", "--number", "13500000201")
    assert table.returncode == 0 and "Beijing time" in table.stdout
    assert table.stdout.index(f"{second.batch_id}  slow-dxt") < table.stdout.index(f"{first.batch_id}  shop-dxt")
    bad = smsq(stack, "status", "--number", "12345")
    assert bad.returncode == 2 and "not a mainland mobile" in bad.stderr and "Traceback" not in bad.stderr
    both = smsq(stack, "status", str(first.batch_id), "--number", "13500000201")
    assert both.returncode == 2 and "not both" in both.stderr


def test_export_writes_the_failed_and_unknown_numbers_as_csv(stack, sim):
    failing = {f"1350000030{i}" for i in range(3)}
    numbers = [f"135000003{i:02d}" for i in range(10)]
    sim.fail_numbers = failing
    try:
        receipt = send_sms("shop-dxt", numbers + ["not-a-number"], CONTENT)
        wait_final(receipt.batch_id)
        open_window()
        assert poll("shop-dxt", "reports").outcome == "ok"
    finally:
        sim.fail_numbers = set()

    result = smsq(stack, "export", str(receipt.batch_id), "--state", "failed,unknown")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["mobile", "state", "code", "detail", "vendor_id", "updated_at", "content"]
    assert all(r["content"] == CONTENT for r in rows)  # the text each number was sent
    assert {r["mobile"] for r in rows} == failing
    assert all(r["state"] == "failed" and r["code"] == "20" and r["vendor_id"] for r in rows)
    assert all(r["updated_at"].endswith("+08:00") for r in rows)
    assert "3 number(s) exported" in result.stderr

    everything = list(csv.DictReader(io.StringIO(smsq(stack, "export", str(receipt.batch_id)).stdout)))
    assert len(everything) == 11 and {r["state"] for r in everything} == {"delivered", "failed", "rejected"}

    wrong = smsq(stack, "export", str(receipt.batch_id), "--state", "failed,lost")
    assert wrong.returncode == 2 and "'lost'" in wrong.stderr and "delivered" in wrong.stderr
    assert wrong.stdout == ""  # no header before the error
    missing = smsq(stack, "export", "987654")
    assert missing.returncode == 2 and "no batch 987654" in missing.stderr


def test_batches_lists_the_recent_ones_with_counts(stack, sim):
    a = send_sms("shop-dxt", ["13500000401", "bad"], CONTENT)
    b = send_sms("slow-dxt", ["13500000402", "13500000403"], CONTENT)
    wait_final(a.batch_id)
    wait_final(b.batch_id)
    result = smsq(stack, "batches", "--limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    listed = json_lines(result.stdout)
    assert [x["batch_id"] for x in listed] == [b.batch_id, a.batch_id]
    assert listed[1]["recipients"] == {"sent": 1, "rejected": 1} and listed[1]["final"] is True
    assert listed[0]["numbers"] == 2 and listed[0]["created_at"].endswith("+08:00")

    only = json_lines(smsq(stack, "batches", "--account", "slow-dxt", "--json").stdout)
    assert {x["account"] for x in only} == {"slow-dxt"} and only[0]["batch_id"] == b.batch_id
    table = smsq(stack, "batches", "--limit", "1")
    assert str(b.batch_id) in table.stdout and "final" in table.stdout and "Beijing time" in table.stdout
    unknown = smsq(stack, "batches", "--account", "nope")
    assert unknown.returncode == 2 and "unknown account 'nope'" in unknown.stderr


def test_a_batch_shows_its_kind(stack, sim):
    sent = smsq(
        stack, "send", "--account", "shop-dxt", "--to", "13500000406", "--content", CONTENT, "--kind", "otp", "--json"
    )
    assert sent.returncode == 0, sent.stderr
    receipt = json.loads(sent.stdout)
    assert (receipt["kind"], receipt["lane"]) == ("otp", "priority")
    wait_final(receipt["batch_id"])
    batch = str(receipt["batch_id"])
    assert json.loads(smsq(stack, "status", batch, "--json").stdout)["kind"] == "otp"
    assert "  kind otp  " in smsq(stack, "status", batch).stdout
    (listed,) = json_lines(smsq(stack, "batches", "--limit", "1", "--json").stdout)
    assert (listed["batch_id"], listed["kind"]) == (receipt["batch_id"], "otp")
    header, row = smsq(stack, "batches", "--limit", "1").stdout.splitlines()
    assert row.split()[:3] == [batch, "shop-dxt", "otp"] and header.split()[2] == "kind"
    notice = send_sms("shop-dxt", ["13500000407"], CONTENT)
    assert json.loads(smsq(stack, "status", str(notice.batch_id), "--json").stdout)["kind"] == "notice"


def test_batches_shows_a_scheduled_one_until_it_is_cancelled(stack, sim):
    at = datetime.now(UTC) + timedelta(hours=1)
    receipt = send_sms("shop-dxt", ["13500000404"], CONTENT, send_at=at)
    (listed,) = json_lines(smsq(stack, "batches", "--limit", "1", "--json").stdout)
    assert listed["batch_id"] == receipt.batch_id and listed["scheduled"] is True, listed
    assert listed["send_at"].endswith("+08:00") and listed["final"] is False
    assert "scheduled" in smsq(stack, "batches", "--limit", "1").stdout
    assert smsq(stack, "cancel", str(receipt.batch_id)).returncode == 0
    assert "cancelled" in smsq(stack, "batches", "--limit", "1").stdout
    assert sim.sends == []


def test_a_cancelled_batch_never_reaches_the_vendor(stack, sim):
    # A busy vendor keeps the chunks waiting (pending, between retries) while the operator cancels.
    sim.set_faults(busy=True)
    numbers = [f"13500005{i:03d}" for i in range(250)]
    try:
        receipt = send_sms("shop-dxt", numbers, CONTENT)
        wait_until(lambda: len(sim.calls) >= 3, 30, what="the first (busy) vendor calls")
        result = smsq(stack, "cancel", str(receipt.batch_id), "--json")
    finally:
        sim.set_faults(busy=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cancelled_chunks"] + report["sending_chunks"] == 3 and not report["done"]

    # A chunk that was being sent comes back for its retry: the claim refuses it, the relay cancels it.
    def all_cancelled():
        run_relay()
        return batch_status(receipt.batch_id).chunks == {"cancelled": 3}

    wait_until(all_cancelled, 30, 0.5, "every chunk cancelled")
    status = batch_status(receipt.batch_id)
    assert status.final and status.recipients == {"cancelled": 250}
    import time

    time.sleep(3)  # the retry messages of the busy calls come and go
    assert not sent_numbers(sim) & set(numbers)

    again = smsq(stack, "cancel", str(receipt.batch_id))
    assert again.returncode == 0 and "cancelled 0 pending chunk(s)" in again.stdout
    assert "already had an outcome: cancelled 3" in again.stdout
    missing = smsq(stack, "cancel", "987654")
    assert missing.returncode == 2 and "no batch 987654" in missing.stderr


def test_a_chunk_back_from_the_vendor_while_cancelling_is_cancelled_and_counted(stack, sim, monkeypatch):
    """A chunk in the vendor's hands when cancel's update runs, whose worker then puts it
    back to pending (a busy answer: it waits for its retry) before cancel counts the batch."""
    from smsq.tasks import cancel as cancelling

    receipt = send_sms(
        "shop-dxt", [f"13500007{i:03d}" for i in range(250)], CONTENT, send_at=datetime.now(UTC) + timedelta(hours=2)
    )  # held: no worker takes them
    wait_until(lambda: sum(batch_status(receipt.batch_id).chunks.values()) == 3, 30, what="the batch cut")
    with session_scope(settings().database_url) as s:
        s.execute(update(Chunk).where(Chunk.batch_id == receipt.batch_id, Chunk.seq == 0).values(state="sending"))
    original, calls = cancelling.cancel_pending, []

    def then_the_worker_gives_it_back(session, batch_ids):
        result = original(session, batch_ids)
        if not calls:
            session.execute(
                update(Chunk).where(Chunk.batch_id == receipt.batch_id, Chunk.seq == 0).values(state="pending")
            )
        calls.append(result)
        return result

    monkeypatch.setattr(cancelling, "cancel_pending", then_the_worker_gives_it_back)
    report = cancelling.cancel_batch(receipt.batch_id)
    assert (report.cancelled_chunks, report.cancelled_numbers, report.sending_chunks, report.done) == (3, 250, 0, {})
    assert batch_status(receipt.batch_id).chunks == {"cancelled": 3}


def test_cancel_reports_what_was_already_sent(stack, sim):
    receipt = send_sms("shop-dxt", ["13500000601"], CONTENT)
    wait_final(receipt.batch_id)
    result = smsq(stack, "cancel", str(receipt.batch_id))
    assert result.returncode == 0, result.stderr
    assert "cancelled 0 pending chunk(s)" in result.stdout and "already had an outcome: accepted 1" in result.stdout
    assert batch_status(receipt.batch_id).recipients == {"sent": 1}


def test_settle_a_batchs_unknown_chunks_in_one_command(stack, sim):
    sim.set_faults(hang=True, hang_seconds=3)  # accepted by the vendor, answers lost
    try:
        took = send_sms("slow-dxt", [f"13500007{i:03d}" for i in range(150)], CONTENT)
        lost = send_sms("slow-dxt", [f"13500008{i:03d}" for i in range(150)], CONTENT)
        for receipt in (took, lost):
            assert wait_final(receipt.batch_id, timeout=60).chunks == {"unknown": 2}
    finally:
        sim.set_faults(hang=False)
    sim.reset()

    accepted = smsq(
        stack,
        "settle",
        "--batch",
        str(took.batch_id),
        "--state",
        "unknown",
        "accepted",
        "--note",
        "vendor console shows them",
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "2 unknown chunk(s), 150 number(s)" in accepted.stdout
    assert batch_status(took.batch_id).recipients == {"sent": 150}

    resend = smsq(stack, "settle", "--batch", str(lost.batch_id), "resend", "--json")
    assert resend.returncode == 0, resend.stderr
    assert json.loads(resend.stdout)["chunks"] == 2
    assert wait_final(lost.batch_id).chunks == {"accepted": 2}
    assert sorted(len(s.numbers) for s in sim.sends) == [50, 100]  # each chunk once more, nothing else

    nothing = smsq(stack, "settle", "--batch", str(lost.batch_id), "failed")
    assert nothing.returncode == 0 and "no unknown chunk" in nothing.stdout
    wrong = smsq(stack, "settle", "--batch", str(lost.batch_id), "--state", "failed", "accepted")
    assert wrong.returncode == 2 and "cannot be settled as accepted" in wrong.stderr


def test_a_resent_chunk_keeps_the_first_send_in_the_numbers_history(stack, sim):
    number = "13500009001"
    sim.fail_numbers = {number}  # the vendor's report for the first send: failed (20)
    sim.set_faults(hang=True, hang_seconds=3)  # accepted by the vendor, its answer lost
    try:
        receipt = send_sms("slow-dxt", [number], CONTENT)
        assert wait_final(receipt.batch_id, timeout=60).chunks == {"unknown": 1}
    finally:
        sim.set_faults(hang=False)
        sim.fail_numbers = set()
    [chunk] = problem_chunks(receipt.batch_id)

    resend = smsq(stack, "settle", str(chunk["chunk_id"]), "resend", "--note", "not in the vendor console")
    assert resend.returncode == 0, resend.stderr
    assert wait_final(receipt.batch_id).chunks == {"accepted": 1}
    first, again = [send.smsids[send.numbers.index(number)] for send in sim.sends if number in send.numbers]
    open_window("slow-dxt")
    assert poll("slow-dxt", "reports").outcome == "ok"  # both sends' reports, the first one's late

    result = smsq(stack, "status", "--number", number, "--json")
    assert result.returncode == 0, result.stderr
    sends = json_lines(result.stdout)
    assert [(s["batch_id"], s["vendor_id"], s["state"], s["code"]) for s in sends] == [
        (receipt.batch_id, again, "delivered", "10"),
        (receipt.batch_id, first, "failed", "20"),
    ]
    assert sends[0]["resent_at"] is None and sends[1]["resent_at"].endswith("+08:00")
    table = smsq(stack, "status", "--number", number).stdout
    assert "vendor id" in table and table.index(again) < table.index(first) and "sent again" in table

    _age(Batch, "created_at", [receipt.batch_id])  # a purge takes both sends with the batch
    purged = smsq(stack, "purge", "--older-than", "90d")
    assert purged.returncode == 0 and "removed 1 batches, 1 chunks, 1 recipients" in purged.stdout, purged.stderr
    assert json_lines(smsq(stack, "status", "--number", number, "--json").stdout) == []


def _age(model, column, ids, days: int = 100) -> None:
    with session_scope(settings().database_url) as s:
        s.execute(update(model).where(model.id.in_(ids)).values({column: utcnow() - timedelta(days=days)}))


def test_purge_removes_old_finished_work_and_keeps_what_is_in_flight_or_unparsed(stack, sim):
    old = send_sms("shop-dxt", ["13500000901", "13500000902"], CONTENT)
    in_flight = send_sms("shop-dxt", ["13500000903"], CONTENT)
    recent = send_sms("shop-dxt", ["13500000904"], CONTENT)
    for receipt in (old, in_flight, recent):
        wait_final(receipt.batch_id)
    sim.add_inbound("13500000901", "收到")
    open_window()
    inbound = poll("shop-dxt", "inbound")
    open_window()
    reports = poll("shop-dxt", "reports")
    assert inbound.outcome == reports.outcome == "ok"
    with session_scope(settings().database_url) as s:
        # A chunk waiting for a retry, 100 days on: still in flight.
        s.execute(
            update(Chunk)
            .where(Chunk.batch_id == in_flight.batch_id)
            .values(state="pending", next_attempt_at=utcnow() + timedelta(days=1))
        )
        unparsed = PollJournal(account="shop-dxt", kind="inbound", body="17,13500000999,lost?", state="failed")
        s.add(unparsed)
        s.flush()
        unparsed_id = unparsed.id
        report_ids = list(s.execute(select(StatusReport.id)).scalars())
        inbound_ids = list(s.execute(select(InboundMessage.id)).scalars())
    _age(Batch, "created_at", [old.batch_id, in_flight.batch_id])
    _age(PollJournal, "fetched_at", [inbound.journal_id, reports.journal_id, unparsed_id])
    _age(StatusReport, "created_at", report_ids)
    _age(InboundMessage, "created_at", inbound_ids)

    dry = smsq(stack, "purge", "--older-than", "90d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 1 batches, 1 chunks, 2 recipients, 2 poll_journal" in dry.stdout
    assert batch_status(old.batch_id).accepted == 2  # nothing removed yet

    result = smsq(stack, "purge", "--older-than", "90d")
    assert result.returncode == 0, result.stderr
    assert "removed 1 batches, 1 chunks, 2 recipients, 2 poll_journal" in result.stdout
    assert "kept 1 old batch(es) still in flight" in result.stdout
    assert "kept 1 old journal row(s) never parsed" in result.stdout
    gone = smsq(stack, "status", str(old.batch_id))
    assert gone.returncode == 2 and f"no batch {old.batch_id}" in gone.stderr
    assert batch_status(in_flight.batch_id).chunks == {"pending": 1}
    assert batch_status(recent.batch_id).recipients == {"delivered": 1}
    with session_scope(settings().database_url) as s:
        assert s.get(PollJournal, unparsed_id).state == "failed"
        assert s.get(PollJournal, inbound.journal_id) is None
        assert not s.execute(select(StatusReport.id).where(StatusReport.id.in_(report_ids))).first()
        assert len(s.execute(select(InboundMessage.id).where(InboundMessage.id.in_(inbound_ids))).all()) == len(
            inbound_ids
        )  # the application's data: kept without --inbound

    with_inbound = smsq(stack, "purge", "--older-than", "90d", "--inbound")
    assert with_inbound.returncode == 0 and f"{len(inbound_ids)} inbound_messages" in with_inbound.stdout
    with session_scope(settings().database_url) as s:
        s.execute(update(Chunk).where(Chunk.batch_id == in_flight.batch_id).values(state="accepted"))


@on_stacks("embedded")  # the age is read before the database is opened: any stack tells the same
@pytest.mark.parametrize(
    "age, message", [("2h", "younger than 1 day"), ("90", "90d (days) or 36h"), ("0d", "90d (days) or 36h")]
)
def test_purge_refuses_a_bad_or_too_young_age(stack, age, message):
    result = smsq(stack, "purge", "--older-than", age)
    assert result.returncode == 2 and message in result.stderr


def test_blocked_list_add_remove_and_sends_skip_it(stack, sim):
    added = smsq(stack, "blocked", "--account", "shop-dxt", "--add", "+86 135 0000 1001", "--reason", "complaint")
    assert added.returncode == 0, added.stderr
    listed = json_lines(smsq(stack, "blocked", "--account", "shop-dxt", "--json").stdout)
    assert {"account": "shop-dxt", "mobile": "13500001001", "reason": "complaint", "source": "manual"}.items() <= next(
        b for b in listed if b["mobile"] == "13500001001"
    ).items()
    receipt = send_sms("shop-dxt", ["13500001001", "13500001002"], CONTENT)
    assert receipt.rejected == [("13500001001", "blocked for this account: complaint")]
    wait_final(receipt.batch_id)
    assert sent_numbers(sim) == {"13500001002"}

    removed = smsq(stack, "blocked", "--account", "shop-dxt", "--remove", "13500001001")
    assert removed.returncode == 0 and "no longer blocked" in removed.stdout
    assert send_sms("shop-dxt", ["13500001001"], CONTENT).rejected == []
    twice = smsq(stack, "blocked", "--account", "shop-dxt", "--remove", "13500001001")
    assert twice.returncode == 2 and "is not blocked" in twice.stderr
    unknown = smsq(stack, "blocked", "--account", "nope", "--add", "13500001003")
    assert unknown.returncode == 2 and "unknown account 'nope'" in unknown.stderr
    no_account = smsq(stack, "blocked", "--add", "13500001003")
    assert no_account.returncode == 2 and "need --account" in no_account.stderr

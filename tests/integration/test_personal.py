"""Personal texts end to end: one send_sms with a text per number (a template filled per
row, or (mobile, content) pairs) -> a real worker -> the dxt simulator over HTTP. Judged
from the simulator's record: each good number got exactly its own text, once, and
numbers with the same text shared vendor calls."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import pytest
from sqlalchemy import func, select

from smsq.store.models import Batch, Chunk
from smsq.tasks import send_sms
from smsq.tasks.lookup import export_batch, number_history
from smsq.tasks.producer import NoValidNumbersError
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, stack_fixture, wait_final
from .conftest import smsq

stack = stack_fixture(*MODES)

TEMPLATE = "【某某科技】{name}您好，您的快递已到{station}，请凭{code}取件"
NAMES = ["张三", "李四", "王五", "赵六", "孙七"]
STATIONS = ["东门驿站", "西门驿站", "南门驿站"]


def good_rows(count: int) -> list[dict]:
    """Rows whose texts repeat: a name and a station each, and one of two pickup codes, so
    30 distinct texts among ``count`` numbers."""
    return [
        {
            "mobile": f"1360000{i:04d}",
            "name": NAMES[i % 5],
            "station": STATIONS[i % 3],
            "code": 8000 + i % 2,  # an int, as a spreadsheet gives a number
        }
        for i in range(count)
    ]


def bad_rows() -> list[tuple[object, str]]:
    """Every kind of bad row, each with the reason it must be rejected for."""
    base = {"name": "周八", "station": "北门驿站", "code": "1"}
    return [
        ({**base, "mobile": "12345"}, "not a mainland mobile"),
        ({"mobile": "13700000001", "name": "吴九", "code": "2"}, "no variable 'station'"),
        ({**base, "mobile": "13700000002", "name": "  "}, "empty variable 'name'"),
        ({**base, "mobile": "13700000003", "name": "很长" * 200}, "accepts at most 335"),
        ({**base, "mobile": "13700000004", "name": "😀"}, "gbk"),
        ({**base, "mobile": "13600000007"}, "in an earlier row"),  # the number of good row 8
        (["13700000005", "郑十"], "not a mapping"),
    ]


def texts_of(rows: list[dict]) -> dict[str, str]:
    return {row["mobile"]: TEMPLATE.format(**row) for row in rows}


def test_a_template_filled_per_row_reaches_each_number_once_with_its_own_text(stack, sim):
    good = good_rows(1200)
    bad = bad_rows()
    rows: list = good[:600] + [row for row, _ in bad] + good[600:]
    receipt = send_sms("shop-dxt", template=TEMPLATE, rows=rows)

    assert receipt.accepted == len(good)
    # each bad row named by its place in the rows (1-based) and why
    assert len(receipt.rejected) == len(bad)
    for (given, reason), (row, why), place in zip(receipt.rejected, bad, range(601, 601 + len(bad)), strict=True):
        assert reason.startswith(f"row {place}: ") and why in reason, reason
        assert given == str(row["mobile"] if isinstance(row, dict) else row)
    assert receipt.billable == len(good)  # every text fits one segment

    status = wait_final(receipt.batch_id, timeout=120)
    # a row repeating a number is in the receipt only: the number has its recipient row
    assert status.recipients == {"sent": len(good), "rejected": len(bad) - 1}
    wanted = texts_of(good)
    received = defaultdict(list)
    for call in sim.sends:
        assert len(set(call.numbers)) == len(call.numbers) <= 100
        for number in call.numbers:
            received[number].append(call.content)
    assert received == {number: [text] for number, text in wanted.items()}  # its own text, once
    per_text = Counter(wanted.values())
    assert len(per_text) == 30
    # the same text travels together: as few calls as the vendor's 100 a call allows
    assert len(sim.sends) == sum(math.ceil(n / 100) for n in per_text.values())


def test_messages_each_with_its_text_show_in_status_and_export(stack, sim):
    messages = [
        ("13611110001", "【某某科技】张三您好，您的订单 8812 已发货"),
        ("+86 136-1111-0002", "【某某科技】李四您好，您的订单 8813 已发货"),
        ("13611110003", "【某某科技】张三您好，您的订单 8812 已发货"),
        ("13611110004", ""),
    ]
    receipt = send_sms("shop-dxt", messages=messages)
    assert receipt.accepted == 3 and receipt.lane == "priority"
    assert receipt.rejected == [("13611110004", "row 4: content is empty")]
    wait_final(receipt.batch_id)
    calls = sorted((call.content, sorted(call.numbers)) for call in sim.sends)
    assert calls == [
        ("【某某科技】张三您好，您的订单 8812 已发货", ["13611110001", "13611110003"]),
        ("【某某科技】李四您好，您的订单 8813 已发货", ["13611110002"]),
    ]
    [history] = number_history("13611110002")
    assert history.content == "【某某科技】李四您好，您的订单 8813 已发货"
    exported = {row[0]: row[-1] for row in export_batch(receipt.batch_id)}
    assert exported["13611110001"] == "【某某科技】张三您好，您的订单 8812 已发货"
    assert exported["13611110004"] is None  # rejected: no text was sent
    with session_scope(settings().database_url) as s:
        assert s.get(Batch, receipt.batch_id).personal
        assert set(s.scalars(select(Chunk.content).where(Chunk.batch_id == receipt.batch_id))) == {
            text for _, text in messages[:2]
        }


def test_a_send_of_personal_texts_whose_every_row_is_bad_stores_nothing(stack, sim):
    with pytest.raises(NoValidNumbersError) as refused:
        send_sms("shop-dxt", template="【某某科技】{name}您好", rows=[{"mobile": "13611119999"}, {"mobile": "x"}])
    assert [reason for _, reason in refused.value.rejected] == [
        "row 1: no variable 'name' in the row",
        "row 2: no variable 'name' in the row",
    ]
    assert not sim.sends


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"to": ["13611110001"], "messages": [("13611110001", "x")]}, "not both"),
        ({"template": "【某某科技】{name}"}, "go together"),
        ({"rows": [{"mobile": "13611110001"}]}, "go together"),
        ({"template": "【某某科技】您好", "rows": []}, "no variable"),
        ({"messages": "13611110001,hello"}, "not one str"),
        ({}, "give the numbers and the text"),
    ],
)
def test_arguments_that_do_not_go_together_are_one_clear_error(stack, kwargs, message):
    with pytest.raises(ValueError, match=message):
        send_sms("shop-dxt", **kwargs)


# -- the command line: --template with --rows, a file of a few thousand rows -----------------


def write_rows_csv(path, good: list[dict], encoding: str) -> dict[int, str]:
    """``good`` with every kind of bad row among them, as a spreadsheet exports it; returns
    each bad row's number in the file (header = row 1) with what its reason must say."""
    bad = {
        "12345,周八,北门驿站,1": "not a mainland mobile",
        "13700000001,吴九,,2": "empty variable 'station'",
        "13700000003," + "很长" * 200 + ",北门驿站,3": "accepts at most 335",
        "13600000007,周八,北门驿站,4": "in an earlier row",
        "13700000006,周八,北门驿站,5,多出来的": "5 cells, the header has 4",
    }
    lines = ["手机号,name,station,code"]
    wanted: dict[int, str] = {}
    for i, row in enumerate(good):
        lines.append(f"{row['mobile']},{row['name']},{row['station']},{row['code']}")
        if i % 600 == 300 and bad:  # the bad rows spread through the file
            text, why = bad.popitem()
            lines.append(text)
            wanted[len(lines)] = why
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return wanted


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gbk"])
def test_smsq_send_rows_from_a_csv_sends_each_number_its_text_and_writes_the_rejects(stack, sim, tmp_path, encoding):

    good = good_rows(3000)
    wanted = write_rows_csv(tmp_path / "rows.csv", good, encoding)
    assert len(wanted) == 5
    result = smsq(
        "send",
        "--account",
        "shop-dxt",
        "--template",
        TEMPLATE,
        "--rows",
        str(tmp_path / "rows.csv"),
        "--rejects",
        str(tmp_path / "rejects.csv"),
        "--json",
        env=stack.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    receipt = json.loads(result.stdout)
    assert receipt["accepted"] == len(good) and receipt["billable"] == len(good)
    rejects = (tmp_path / "rejects.csv").read_text(encoding="utf-8-sig").splitlines()
    assert rejects[0] == "mobile,reason" and len(rejects) == 1 + len(wanted)
    for line, (row, why) in zip(rejects[1:], sorted(wanted.items()), strict=True):
        assert f"row {row}: " in line and why in line, line

    wait_final(receipt["batch_id"], timeout=180)
    expected = texts_of(good)
    received = defaultdict(list)
    for call in sim.sends:
        for number in call.numbers:
            received[number].append(call.content)
    assert received == {number: [text] for number, text in expected.items()}
    assert len(sim.sends) == sum(math.ceil(n / 100) for n in Counter(expected.values()).values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rows", "rows.csv"], "--rows needs --template"),
        (["--to", "13800000000", "--template", "{name}"], "--template goes with --rows"),
        (["--rows", "rows.csv", "--template", "{name}", "--content", "x"], "--content sends one text"),
        (["--to", "13800000000"], "--content is required"),
        (["--rows", "missing.csv", "--template", "【某某科技】{name}"], "missing.csv"),
        (["--rows", "rows.csv", "--template", "【某某科技】{0}"], "positional"),
    ],
)
def test_smsq_send_with_rows_that_cannot_go_exits_2_with_one_line(env, tmp_path, args, message):

    (tmp_path / "rows.csv").write_text("mobile,name\n13800000000,张三\n", encoding="utf-8")
    result = smsq("send", "--account", "shop-dxt", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    said = [line for line in result.stderr.splitlines() if "WARNING smsq.config" not in line]  # the test config's
    assert len(said) == 1 and said[0].startswith("smsq: error: ") and message in said[0], result.stderr


def test_a_preview_of_personal_texts_counts_each_rows_segments_and_stores_nothing(stack, sim, tmp_path):
    from smsq.tasks.preview import preview_send

    long_name = "欧阳" * 40  # its text is over 70 characters: two segments
    rows = [
        {"mobile": "13622220001", "name": "张三", "station": "东门驿站", "code": 1},
        {"mobile": "13622220002", "name": long_name, "station": "东门驿站", "code": 2},
        {"mobile": "13622220003", "station": "东门驿站", "code": 3},
    ]
    with session_scope(settings().database_url) as s:
        batches = s.scalar(select(func.count()).select_from(Batch))
    preview = preview_send("shop-dxt", template=TEMPLATE, rows=rows)
    assert preview.accepted == 2 and preview.billable == 3 and preview.segments == 2
    assert preview.rejected == [("13622220003", "row 3: no variable 'name' in the row")]
    assert preview.characters == len(TEMPLATE.format(**rows[1])) and preview.content == TEMPLATE
    with session_scope(settings().database_url) as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == batches  # nothing stored

    path = tmp_path / "rows.csv"
    path.write_text("mobile,name,station,code\n13622220001,张三,东门驿站,1\n13622220004,李四,,4\n", encoding="utf-8")
    args = ["send", "--account", "shop-dxt", "--template", TEMPLATE, "--rows", str(path), "--dry-run", "--json"]
    result = smsq(*args, env=stack.env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["accepted"], shown["billable"], shown["personal"]) == (1, 1, True)
    assert shown["rejected"] == [["13622220004", "row 3: empty variable 'station'"]]
    assert not sim.sends

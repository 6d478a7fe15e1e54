"""Personal texts end to end: one send_sms with a text per number (a template filled per
row, or (mobile, content) pairs) -> a real worker -> the dxt simulator over HTTP. Judged
from the simulator's record: each good number got exactly its own text, once, and
numbers with the same text shared vendor calls."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
from sqlalchemy import select

from smsq.store.models import Batch, Chunk
from smsq.tasks import send_sms
from smsq.tasks.lookup import export_batch, number_history
from smsq.tasks.producer import NoValidNumbersError
from smsq.worker.config import settings
from smsq.worker.db import session_scope

from ..conftest import MODES, stack_fixture, wait_final

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

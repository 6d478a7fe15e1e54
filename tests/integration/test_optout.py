"""Opt-out: a reply that is an unsubscribe keyword puts the number on the account's
blocked list, through a real poll of the simulator's inbound queue; later sends skip it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from smsq.tasks import send_sms
from smsq.tasks.blocklist import optout_keywords, reply_key
from smsq.tasks.polls import parse_journal, poll
from smsq.worker.config import ConfigError, parse_account, settings

from ..conftest import wait_final
from .conftest import open_window, sent_numbers, smsq

CONTENT = "【某某科技】您的订单已发货"


def blocked(stack, account: str = "shop-dxt") -> dict[str, dict]:
    result = smsq("blocked", "--account", account, "--json", env=stack.env)
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
    assert sorted(receipt.rejected) == [(n, "blocked for this account: opted out")
                                        for n in ("13600002001", "13600002003", "13600002004")]
    wait_final(receipt.batch_id)
    assert sent_numbers(sim) == {"13600002002"}
    # Opt-out is per account: the same number can still be sent through another one.
    assert send_sms("slow-dxt", ["13600002001"], CONTENT).rejected == []

    # An operator takes a number off the list; parsing the same body again does not put it back.
    removed = smsq("blocked", "--account", "shop-dxt", "--remove", "13600002001", env=stack.env)
    assert removed.returncode == 0, removed.stderr
    again = parse_journal(settings(), result.journal_id)
    assert again.outcome == "ok" and again.new_inbound == []
    assert "13600002001" not in blocked(stack)


def test_keywords_compare_whole_replies_after_nfkc_and_case_folding():
    defaults = optout_keywords({})
    assert {reply_key(r) in defaults for r in ("TD", "td", "Ｔｄ", "\u3000退订\u3000", "取消", "T", "退")} == {True}
    assert {reply_key(r) in defaults for r in ("TD?", "退订了吗", "好的", "", "不要退订")} == {False}
    assert optout_keywords({"optout_keywords": ("STOP",)}) == {"stop"}
    assert optout_keywords({"optout_keywords": ()}) == frozenset()  # off


def _account(**extra):
    table = {"provider": "dxt", "base_url": "http://127.0.0.1:9/", "username": "u", "password": "p", **extra}
    return parse_account("a", table, Path("."))


def test_optout_keywords_in_the_config():
    assert _account(optout_keywords=["STOP", "退订"]).options["optout_keywords"] == ("STOP", "退订")
    assert _account(optout_keywords=[]).options["optout_keywords"] == ()
    assert "optout_keywords" not in _account().options  # the defaults apply
    for wrong in ("TD", ["TD", ""], [1]):
        with pytest.raises(ConfigError, match="optout_keywords must be a list of words"):
            _account(optout_keywords=wrong)

"""Opt-out keywords: which replies are an unsubscribe, and how an account names its own.
A reply polled from a vendor that puts its number on the blocked list:
tests/integration/test_polls_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsq.tasks.blocklist import optout_keywords, reply_key
from smsq.worker.config import ConfigError, parse_account


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

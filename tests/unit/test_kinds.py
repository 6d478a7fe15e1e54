"""Message kinds: each kind's rules read from the accounts file, with their defaults, an
account's own on top, and every mistake said in one line naming the file, the table and
the key."""

from __future__ import annotations

from datetime import datetime

import pytest

from smsq.providers.base import BEIJING
from smsq.tasks.intake import _chunk_rows
from smsq.worker.config import ConfigError, Settings, _load_file, load_accounts
from smsq.worker.kinds import (
    DEFAULTS,
    Cap,
    KindRules,
    SendWindow,
    check_kind,
    parse_caps,
    parse_duration,
    parse_window,
)

from .conftest import GOOD, write


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("SHOP_DXT_PASSWORD", "x-secret")


def settings_of(tmp_path, text: str) -> Settings:
    path = write(tmp_path, text)
    content, _ = _load_file(path)
    return Settings(path, "sqlite://", "sqla+sqlite://", None, content.accounts, kinds=content.kinds)


def test_the_defaults_of_each_kind(tmp_path):
    conf = settings_of(tmp_path, GOOD)
    otp = conf.kind_rules("shop-dxt", "otp")
    assert otp == KindRules("otp", (Cap(1, 60), Cap(5, 3600), Cap(10, 86400)), 30, 300, None)
    assert otp.describe() == {
        "kind": "otp",
        "per_number": ["1/1m", "5/1h", "10/1d"],
        "duplicate_window": "30s",
        "valid_for": "5m",
        "send_window": None,
    }
    assert conf.kind_rules("shop-dxt", "notice") == KindRules("notice")
    marketing = conf.kind_rules("shop-dxt", "marketing")
    assert (marketing.per_number, marketing.valid_for, str(marketing.send_window)) == ((), None, "08:00-21:00")
    assert conf.daily_quota("shop-dxt") is None
    assert conf.kinds == DEFAULTS


KINDS_AND_ACCOUNT = (
    GOOD
    + """daily_quota = 5000

[accounts.shop-dxt.kinds.marketing]
send_window = "09:00-20:00"

[accounts.shop-dxt.kinds.otp]
valid_for = "10m"

[kinds.otp]
per_number = ["3/1h", "1/30s"]
duplicate_window = "0"

[kinds.notice]
duplicate_window = "2m"
"""
)


def test_the_file_and_the_account_change_only_what_they_name(tmp_path):
    conf = settings_of(tmp_path, KINDS_AND_ACCOUNT)
    otp = conf.kind_rules("shop-dxt", "otp")
    # the file's [kinds.otp], then the account's valid_for; the caps sorted by period
    assert otp == KindRules("otp", (Cap(1, 30), Cap(3, 3600)), 0, 600, None)
    assert conf.kind_rules("shop-dxt", "notice").duplicate_window == 120
    assert conf.kind_rules("shop-dxt", "marketing").send_window == SendWindow(9 * 60, 20 * 60)
    assert conf.kinds["marketing"].send_window == SendWindow(8 * 60, 21 * 60)  # the kind's own is unchanged
    assert conf.daily_quota("shop-dxt") == 5000


def test_an_unknown_kind_is_one_clear_error(tmp_path):
    conf = settings_of(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"^unknown kind 'sms'; the kinds are otp, notice, marketing$"):
        conf.kind_rules("shop-dxt", "sms")
    with pytest.raises(ValueError, match="unknown kind None"):
        check_kind(None)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[kinds.sms]\nduplicate_window = "1m"', "[kinds.sms] is not a kind; the kinds are otp, notice, marketing"),
        ("kinds = 3", "kinds must hold tables, one per kind: [kinds.otp]"),
        ("[kinds]\notp = 1", "[kinds.otp] must be a table"),
        ('[kinds.otp]\nper_numbers = ["1/1m"]', "[kinds.otp]: unknown key 'per_numbers'; allowed: per_number, "),
        ('[kinds.otp]\nper_number = "1/1m"', '[kinds.otp] per_number must be a list of caps like ["1/1m"'),
        ('[kinds.otp]\nper_number = ["1/1w"]', "[kinds.otp] per_number holds '1/1w': a cap is COUNT/PERIOD"),
        ('[kinds.otp]\nper_number = ["0/1m"]', "[kinds.otp] per_number holds '0/1m'"),
        ('[kinds.otp]\nper_number = ["5/0h"]', "[kinds.otp] per_number holds '5/0h'"),
        ("[kinds.otp]\nper_number = [5]", "[kinds.otp] per_number holds 5"),
        ('[kinds.otp]\nper_number = ["1/1m", "2/60s"]', "[kinds.otp] per_number gives two caps for the same period"),
        ('[kinds.otp]\nduplicate_window = "30"', '[kinds.otp] duplicate_window must be a duration like "30s"'),
        ("[kinds.otp]\nduplicate_window = 30", "[kinds.otp] duplicate_window must be a duration"),
        ("[kinds.otp]\nduplicate_window = false", "[kinds.otp] duplicate_window must be a duration"),
        ('[kinds.otp]\nvalid_for = "-5m"', "[kinds.otp] valid_for must be a duration like"),
        ('[kinds.marketing]\nsend_window = "8-21"', '[kinds.marketing] send_window must be "HH:MM-HH:MM"'),
        ('[kinds.marketing]\nsend_window = "08:00-08:00"', "start and end apart"),
        ('[kinds.marketing]\nsend_window = "00:00-00:00"', "start and end apart"),
        ('[kinds.marketing]\nsend_window = "08:00-24:30"', "[kinds.marketing] send_window must be"),
        ('[kinds.marketing]\nsend_window = "08:60-21:00"', "[kinds.marketing] send_window must be"),
        ('[kinds.marketing]\nsend_window = "25:00-26:00"', "[kinds.marketing] send_window must be"),
    ],
)
def test_a_bad_kind_table_names_the_file_the_table_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text + "\n" + GOOD)  # (a top-level key comes before any table)
    with pytest.raises(ConfigError) as exc:
        load_accounts(path)
    said = str(exc.value)
    assert said.startswith(f"{path}: ") and message in said, said
    assert "\n" not in said


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[accounts.shop-dxt.kinds.marketing]\nsend_window = "07:00-20:00"',
            "account 'shop-dxt': [accounts.shop-dxt.kinds.marketing] send_window '07:00-20:00' widens the "
            "kind's window '08:00-21:00'; an account may only narrow it",
        ),
        (
            '[accounts.shop-dxt.kinds.marketing]\nsend_window = "00:00-24:00"',
            "send_window '00:00-24:00' widens the kind's window '08:00-21:00'",
        ),
        (
            '[accounts.shop-dxt.kinds.otp]\nvalid_for = "soon"',
            "account 'shop-dxt': [accounts.shop-dxt.kinds.otp] valid_for must be a duration",
        ),
        ('[accounts.shop-dxt.kinds.sms]\nvalid_for = "5m"', "[accounts.shop-dxt.kinds.sms] is not a kind"),
        ("[accounts.shop-dxt.kinds.otp]\nrate = 1", "[accounts.shop-dxt.kinds.otp]: unknown key 'rate'"),
        ("kinds = 3", "accounts.shop-dxt.kinds must hold tables, one per kind: [accounts.shop-dxt.kinds.otp]"),
    ],
)
def test_a_bad_account_override_names_the_file_the_account_and_the_key(tmp_path, text, message):
    path = write(tmp_path, GOOD + "\n" + text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_accounts(path)
    said = str(exc.value)
    assert said.startswith(f"{path}: account 'shop-dxt': ") and message in said, said


@pytest.mark.parametrize("quota", ["0", "-1", '"5000"', "1.5", "true"])
def test_a_daily_quota_is_a_whole_number(tmp_path, quota):
    path = write(tmp_path, GOOD + f"daily_quota = {quota}\n")
    with pytest.raises(ConfigError, match=r"account 'shop-dxt': \[accounts.shop-dxt\] daily_quota must be a whole"):
        load_accounts(path)


def test_an_account_may_narrow_a_window_the_file_widened(tmp_path):
    text = GOOD + '[accounts.shop-dxt.kinds.marketing]\nsend_window = "07:00-22:00"\n'
    text += '[kinds.marketing]\nsend_window = "00:00-24:00"\n'  # the kind: any time
    conf = settings_of(tmp_path, text)
    assert conf.kinds["marketing"].send_window is None
    assert conf.kind_rules("shop-dxt", "marketing").send_window == SendWindow(7 * 60, 22 * 60)


def test_the_parsers():
    assert [parse_duration(v, "k") for v in ("0", 0, "45s", "5m", "2h", "1d")] == [0, 0, 45, 300, 7200, 86400]
    assert parse_caps(["10/1d", "5/h", "1/90s"], "k") == (Cap(1, 90), Cap(5, 3600), Cap(10, 86400))
    assert [str(c) for c in parse_caps(["1/90s", "2/60m"], "k")] == ["1/90s", "2/1h"]
    assert parse_caps([], "k") == ()
    assert parse_window("00:00-24:00", "k") is None
    assert str(parse_window("9:05-20:30", "k")) == "09:05-20:30"


def test_a_window_is_read_in_beijing_time():
    window = SendWindow(8 * 60, 21 * 60)
    assert window.contains(datetime(2026, 3, 1, 8, 0, tzinfo=BEIJING))
    assert not window.contains(datetime(2026, 3, 1, 21, 0, tzinfo=BEIJING))
    assert window.contains(datetime(2026, 3, 1, 0, 30))  # naive: UTC, 08:30 in Beijing
    assert not window.contains(datetime(2026, 3, 1, 23, 30))  # 07:30 the next morning in Beijing
    assert SendWindow(9 * 60, 20 * 60).within(window) and not window.within(SendWindow(9 * 60, 20 * 60))


@pytest.mark.parametrize("ahead", [False, True], ids=["in-line", "ahead"])
def test_intake_passes_each_block_through_the_policy_check(ahead):
    seen: list[list[str]] = []

    def admit(block: list[str]) -> list[str]:
        seen.append(list(block))
        return [m for m in block if not m.endswith("2")]

    blocks = [["13800000001", "13800000002", "13800000001", "13800000003"], ["13800000004", "13800000002"]]
    found: set[str] = set()
    blocked = {int("1" + "13800000003")}
    rows = [row for chunk in _chunk_rows(blocks, 2, blocked, found, admit, ahead) for row in chunk]
    # the check sees each block's numbers once, unblocked, in list order
    assert seen == [["13800000001", "13800000002"], ["13800000004"]]
    assert rows == [(0, 2, "13800000001,13800000004")]
    assert found == {"13800000003"}

"""A running process reads its accounts file again when it changed: whole and validated,
or not at all; accounts that did not change keep their objects, and their clients."""

from __future__ import annotations

import logging
import threading

import pytest

from smsq.worker import clients
from smsq.worker.config import ConfigError, knowing, refresh, refused, settings

from .conftest import GOOD, write

LATE = """
[accounts.late-dxt]
provider = "dxt"
base_url = "http://127.0.0.1:8802/"
username = "late"
password_env = "SHOP_DXT_PASSWORD"
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_DXT_PASSWORD", "x-secret-pw")
    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, GOOD)))
    settings.cache_clear()
    yield tmp_path / "smsq.toml"
    settings.cache_clear()
    clients.close_all()


def test_an_unchanged_file_is_not_read_again(config):
    first = settings()
    assert refresh() is first and knowing("shop-dxt") is first
    config.touch()  # a new mtime, the same content
    assert refresh() is first


def test_an_added_account_is_known_and_the_others_stay_the_same_objects(config, caplog):
    first = settings()
    config.write_text(GOOD + LATE, encoding="utf-8")
    with caplog.at_level(logging.WARNING, "smsq.config"):
        conf = knowing("late-dxt")
    assert conf is settings() and conf is not first
    assert sorted(conf.accounts) == ["late-dxt", "shop-dxt"]
    assert conf.accounts["shop-dxt"] is first.accounts["shop-dxt"]
    assert conf.config_version.digest != first.config_version.digest
    assert conf.database_url == first.database_url
    assert "added: late-dxt; changed: none; removed: none" in caplog.text


def test_a_file_that_does_not_validate_is_not_used_and_said_once(config, caplog, monkeypatch):
    first = settings()
    first.require_credentials()  # as a worker does at start: it will call every account's vendor
    config.write_text(GOOD + LATE.replace("SHOP_DXT_PASSWORD", "NOT_SET_ANYWHERE_PW"), encoding="utf-8")
    with caplog.at_level(logging.ERROR, "smsq.config"):
        assert knowing("late-dxt") is first
        assert refresh() is first
    assert caplog.text.count("changed but cannot be used") == 1
    assert "NOT_SET_ANYWHERE_PW, which is not set" in refused()
    assert "late-dxt" not in settings().accounts

    config.write_text(GOOD + LATE + "\n", encoding="utf-8")  # fixed (another size: a sure change)
    assert "late-dxt" in refresh().accounts
    assert refused() is None


def test_a_file_gone_away_keeps_the_accounts(config):
    first = settings()
    config.unlink()
    assert refresh() is first and "shop-dxt" in first.accounts
    assert "is not there any more" in refused()


def test_a_changed_account_gets_a_new_client_and_the_old_one_is_not_closed_under_a_call(config):
    old_account = settings().account("shop-dxt")
    old = clients.provider_for(old_account)
    config.write_text(GOOD.replace('"20/s"', '"5/s"'), encoding="utf-8")
    new_account = refresh().account("shop-dxt")
    assert new_account.rate_limit == 5 and old_account.rate_limit == 20
    new = clients.provider_for(new_account)
    assert new is not old
    assert not old.client.is_closed  # a thread still on the settings before may be calling with it
    assert clients.provider_for(old_account) is old  # ...and gets the same one, not a third
    assert clients.provider_for(new_account) is new


def test_threads_see_one_settings_object_per_version(config):
    config.write_text(GOOD + LATE, encoding="utf-8")
    seen: list = []
    threads = [threading.Thread(target=lambda: seen.append(knowing("late-dxt"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1 and "late-dxt" in seen[0].accounts


def test_an_unknown_account_still_raises_for_the_sender(config):
    from smsq.worker.config import UnknownAccountError

    with pytest.raises(UnknownAccountError):
        knowing("nobody").account("nobody")


def test_the_password_of_an_account_read_later_is_masked_too(config, monkeypatch, caplog):
    from smsq.worker.logs import MASK, mask_secrets

    mask_secrets(settings().secrets())  # as every command does at start
    monkeypatch.setenv("LATE_DXT_PASSWORD", "late-Pw-4471")
    config.write_text(GOOD + LATE.replace("SHOP_DXT_PASSWORD", "LATE_DXT_PASSWORD"), encoding="utf-8")
    refresh().require_credentials(["late-dxt"])  # read, as building its vendor client does
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.library").debug("Pwd=%s and Pwd=%s", "late-Pw-4471", "x-secret-pw")
    assert "late-Pw-4471" not in caplog.text and "x-secret-pw" not in caplog.text
    assert caplog.text.count(MASK) == 2


def test_a_process_that_calls_no_vendor_takes_a_new_account_whose_password_it_lacks(config):
    """An application's send_sms or a read-only command reads passwords only to call a vendor."""
    settings()
    config.write_text(GOOD + LATE.replace("SHOP_DXT_PASSWORD", "NOT_SET_ANYWHERE_PW"), encoding="utf-8")
    conf = knowing("late-dxt")
    assert "late-dxt" in conf.accounts and refused() is None
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE_PW, which is not set"):
        conf.require_credentials(["late-dxt"])


def test_changed_kind_rules_are_read_again_and_the_accounts_stay_the_same_objects(config):
    first = settings()
    assert first.kind_rules("shop-dxt", "otp").valid_for == 300
    config.write_text('[kinds.otp]\nvalid_for = "2m"\n' + GOOD, encoding="utf-8")
    conf = refresh()
    assert conf.kind_rules("shop-dxt", "otp").valid_for == 120
    assert conf.accounts["shop-dxt"] is first.accounts["shop-dxt"]  # its client carries on
    # one that would widen the kind's window for an account is refused whole
    config.write_text('[accounts.shop-dxt.kinds.marketing]\nsend_window = "06:00-21:00"\n' + GOOD, encoding="utf-8")
    assert refresh() is conf and "widens the kind's window" in refused()

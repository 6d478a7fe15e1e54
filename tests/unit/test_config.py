"""Configuration mistakes are reported at start-up, naming the account and the key."""

from __future__ import annotations

import logging

import pytest

from smsq.worker.config import ConfigError, UnknownAccountError, load_accounts, parse_rate

from .conftest import GOOD, write


def test_a_good_account_loads_with_its_secret_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOP_DXT_PASSWORD", "hunter2-secret")
    account = load_accounts(write(tmp_path, GOOD))["shop-dxt"]
    assert (account.provider, account.username, account.charset, account.rate_limit) == ("dxt", "demo", "gbk", 20.0)
    assert account.password.reveal() == "hunter2-secret"
    assert "hunter2-secret" not in repr(account) and "hunter2-secret" not in str(account.password)


@pytest.mark.parametrize(
    "change, message",
    [
        (('provider = "dxt"', 'provider = "nosuch"'), "account 'shop-dxt': provider 'nosuch' is unknown"),
        (('provider = "dxt"', 'provider = "qxs"'), "account 'shop-dxt': userid (the enterprise id"),
        (('provider = "dxt"', 'provider = "orgws"'), "account 'shop-dxt': option 'org_id'"),
        (('provider = "dxt"', 'provider = "linkws"\ntransport = "ftp"'), "account 'shop-dxt': transport must be"),
        (('charset = "gbk"', 'charset = "gbk"\ncolour = "red"'), "account 'shop-dxt': unknown key 'colour'"),
        (('password_env = "SHOP_DXT_PASSWORD"', ""), "account 'shop-dxt': no credential"),
        (('password_env = "SHOP_DXT_PASSWORD"', 'password_env = ""'), "password_env must be a non-empty string"),
        (('password_env = "SHOP_DXT_PASSWORD"', 'password_env = "A"\npassword_file = "b"'), "give only one of"),
        (('rate_limit = "20/s"', 'rate_limit = "fast"'), "account 'shop-dxt': rate_limit must look like"),
        (('charset = "gbk"', 'charset = "klingon"'), "charset 'klingon' is not a known encoding"),
        (('signature = "【某某科技】"', 'signature = "某某科技"'), "signature must look like 【某某科技】"),
        (('base_url = "http://127.0.0.1:8801/"', 'base_url = "127.0.0.1:8801"'), "base_url must start with http"),
        (('username = "demo"', ""), "account 'shop-dxt': username is required"),
    ],
)
def test_mistakes_name_the_account_and_the_key(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("SHOP_DXT_PASSWORD", "x-secret")
    with pytest.raises(ConfigError) as exc:
        load_accounts(write(tmp_path, GOOD.replace(*change)))
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ('password_env = "SHOP_DXT_PASSWORD"', 'password_env = "NOT_SET_ANYWHERE"'),
            "account 'shop-dxt': password_env names NOT_SET_ANYWHERE, which is not set in the environment",
        ),
        (('password_env = "SHOP_DXT_PASSWORD"', 'password_file = "missing.txt"'), "account 'shop-dxt': password_file "),
    ],
)
def test_a_password_kept_elsewhere_is_read_only_when_needed(tmp_path, monkeypatch, change, message):
    from smsq.worker.config import load_settings

    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, GOOD.replace(*change))))
    monkeypatch.setenv("SMSQ_HOME", str(tmp_path))
    for name in ("SMSQ_DATABASE_URL", "SMSQ_BROKER_URL", "SMSQ_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    conf = load_settings()  # what only reads the database needs no vendor password
    assert conf.account("shop-dxt").password and conf.secrets() == []
    with pytest.raises(ConfigError) as exc:
        conf.require_credentials()  # what calls the vendor stops on it, naming the account and the key
    assert message in str(exc.value)
    with pytest.raises(ConfigError):
        conf.require_credentials(["shop-dxt"])


def test_a_password_read_late_is_masked_from_then_on(tmp_path, monkeypatch):
    from smsq.worker import logs

    monkeypatch.setenv("SHOP_DXT_PASSWORD", "late-read-secret-42")
    password = load_accounts(write(tmp_path, GOOD))["shop-dxt"].password
    assert "late-read-secret-42" not in logs._secrets
    assert password.reveal() == "late-read-secret-42"
    assert "late-read-secret-42" in logs._secrets
    assert "late-read-secret-42" not in repr(password) and "late-read-secret-42" not in str(password)


def test_password_in_the_file_works_but_is_warned_about(tmp_path, caplog):
    text = GOOD.replace('password_env = "SHOP_DXT_PASSWORD"', 'password = "in-file-secret"')
    with caplog.at_level(logging.WARNING):
        account = load_accounts(write(tmp_path, text))["shop-dxt"]
    assert account.password.reveal() == "in-file-secret"
    assert "password is written in the config file" in caplog.text
    assert "in-file-secret" not in caplog.text


def test_password_file_relative_to_the_config(tmp_path):
    (tmp_path / "dxt.secret").write_text("from-a-file\n")
    text = GOOD.replace('password_env = "SHOP_DXT_PASSWORD"', 'password_file = "dxt.secret"')
    assert load_accounts(write(tmp_path, text))["shop-dxt"].password.reveal() == "from-a-file"


def test_not_toml_and_stray_tables(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_accounts(write(tmp_path, "[accounts.x\n"))
    with pytest.raises(ConfigError, match="unknown top-level table"):
        load_accounts(write(tmp_path, "[acounts.x]\nprovider='dxt'\n"))


@pytest.mark.parametrize("value, per_second", [("20/s", 20.0), ("600/m", 10.0), ("3600/h", 1.0), (5, 5.0)])
def test_rates(value, per_second):
    assert parse_rate(value, "here") == per_second


def test_unknown_account_lists_the_configured_ones(tmp_path, monkeypatch):
    from smsq.worker.config import settings

    monkeypatch.setenv("SHOP_DXT_PASSWORD", "x-secret")
    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, GOOD)))
    settings.cache_clear()
    try:
        with pytest.raises(UnknownAccountError) as exc:
            settings().account("shop-dtx")
        assert str(exc.value).startswith("unknown account 'shop-dtx'")
        assert "shop-dxt" in str(exc.value)
    finally:
        settings.cache_clear()


def test_urls_from_secret_files(tmp_path, monkeypatch):
    from smsq.worker.config import load_settings

    url = tmp_path / "database_url"
    url.write_text("postgresql://smsq:pg-file-pw-5@db/smsq\n", encoding="utf-8")
    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, "")))
    monkeypatch.delenv("SMSQ_DATABASE_URL", raising=False)
    monkeypatch.setenv("SMSQ_DATABASE_URL_FILE", str(url))
    assert load_settings().database_url == "postgresql+psycopg://smsq:pg-file-pw-5@db/smsq"

    monkeypatch.setenv("SMSQ_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SMSQ_DATABASE_URL_FILE: .*missing cannot be read"):
        load_settings()


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SMSQ_DATABASE_URL", "notaurl", "SMSQ_DATABASE_URL is not a database URL: 'notaurl'"),
        ("SMSQ_DATABASE_URL", "mysql://app:db-pw-77@h/db", "SMSQ_DATABASE_URL mysql://app:***@h/db: smsq keeps"),
        ("SMSQ_DATABASE_URL", "postgresql+psycopg2://h/db", "its driver 'postgresql+psycopg2' cannot be loaded"),
        ("SMSQ_BROKER_URL", "foo://x", "SMSQ_BROKER_URL 'foo://x' is not a broker smsq knows"),
        ("SMSQ_BROKER_URL", "redis//127.0.0.1:6379/0", "is not a broker smsq knows"),
        ("SMSQ_BROKER_URL", "sqla+nosuch:///b.db", "SMSQ_BROKER_URL (after sqla+) nosuch:///b.db"),
        ("SMSQ_REDIS_URL", "http://127.0.0.1:6379", "SMSQ_REDIS_URL 'http://127.0.0.1:6379' is not a Redis URL"),
    ],
)
def test_urls_smsq_cannot_use_are_configuration_errors(tmp_path, monkeypatch, name, value, message):
    from smsq.worker.config import load_settings

    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, "")))
    for key in ("SMSQ_DATABASE_URL", "SMSQ_BROKER_URL", "SMSQ_REDIS_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert message in str(exc.value)
    assert "db-pw-77" not in str(exc.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://h:6380/0",
        "amqp://guest:guest@h:5672/v",
        "amqps://h/v",
        "sqla+sqlite:///b.db",
    ],
)
def test_brokers_smsq_runs_on_are_accepted(tmp_path, monkeypatch, url):
    from smsq.worker.config import load_settings

    monkeypatch.setenv("SMSQ_CONFIG", str(write(tmp_path, "")))
    monkeypatch.setenv("SMSQ_BROKER_URL", url)
    monkeypatch.delenv("SMSQ_REDIS_URL", raising=False)
    monkeypatch.delenv("SMSQ_DATABASE_URL", raising=False)
    assert load_settings().broker_url == url

"""No vendor password in logs, reprs or errors — even with every library logging at DEBUG."""

from __future__ import annotations

import logging

import httpx
import pytest

from smsq.providers import Account, ProviderError, Secret
from smsq.providers.linkws import LinkwsProvider
from smsq.simulator.linkws import LinkwsState, create_app
from smsq.simulator.server import serve
from smsq.worker.logs import MASK, mask_secrets

PASSWORD = "Linkws-Pw-55231"


@pytest.fixture
def linkws():
    state = LinkwsState({"corp": PASSWORD})
    running = serve(create_app(state), port=0)
    yield state, running.url
    running.stop()


def test_a_send_logs_no_password_even_at_debug(linkws, caplog):
    state, url = linkws
    account = Account(
        name="t",
        provider="linkws",
        base_url=url,
        username="corp",
        password=Secret(PASSWORD),
        signature="【某某科技】",
        options={"transport": "soap"},
    )
    with caplog.at_level(logging.DEBUG), httpx.Client(timeout=5) as client:
        result = LinkwsProvider(account, client).send(["13800138000"], "您好【某某科技】")
    assert result.outcome.value == "ok" and len(state.sends) == 1
    assert len(caplog.records) > 5  # httpx/httpcore did log at DEBUG
    assert PASSWORD not in caplog.text


def test_any_log_line_that_carries_a_password_is_masked(caplog):
    """Defence in depth: a library (or a careless line) logging a request body."""
    mask_secrets([PASSWORD])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.library").debug("POST body: CorpID=corp&Pwd=%s&Mobile=138", PASSWORD)
        logging.getLogger("zeep.transports").debug(f"<Pwd>{PASSWORD}</Pwd>")
    assert PASSWORD not in caplog.text
    assert caplog.text.count(f"Pwd={MASK}") == 1 and f"<Pwd>{MASK}</Pwd>" in caplog.text


def test_reprs_and_errors_hide_the_password(linkws):
    _, url = linkws
    account = Account(
        name="t",
        provider="linkws",
        base_url=url,
        username="corp",
        password=Secret("wrong-Pw-1"),
        options={"transport": "http"},
    )
    with httpx.Client(timeout=5) as client:
        provider = LinkwsProvider(account, client)
        with pytest.raises(ProviderError) as exc:
            provider.parse_balance(provider.fetch("balance"))
    shown = " ".join([repr(account), str(account), repr(provider), repr(exc.value), str(exc.value), exc.value.raw])
    assert "wrong-Pw-1" not in shown and exc.value.outcome.value == "auth"

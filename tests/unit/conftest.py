"""What the unit tests share: no service, no subprocess, no server.

For the provider tests (``test_*_provider.py``), only what is the same for every
vendor: a request-recording ``httpx.MockTransport`` handler and the transport
faults and HTTP statuses that the ``Provider`` base class classifies before any
vendor parser runs. For the configuration tests, one good accounts file.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lxml import etree

from smsq.providers.base import Outcome

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


class Recorder:
    """A MockTransport handler that records every request and answers with ``reply``.

    Without a ``reply`` it answers with ``default_reply``, which each vendor's
    test module sets in a subclass (an accepted send, in the vendor's format),
    along with the ``charset`` its forms are read in by default.
    """

    charset = "utf-8"

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None):
        self.reply = reply if reply is not None else self.default_reply
        self.requests: list[httpx.Request] = []

    def default_reply(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.reply(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def request(self, index: int | None = None) -> httpx.Request:
        """The request at ``index``; without one, the only request made (there must be exactly one)."""
        if index is None:
            (request,) = self.requests
            return request
        return self.requests[index]

    def form(self, charset: str | None = None, index: int | None = None) -> dict[str, list[str]]:
        """The form of a recorded request, percent-decoded in ``charset`` as the vendor reads it."""
        return urllib.parse.parse_qs(
            self.request(index).content.decode("ascii"), keep_blank_values=True, encoding=charset or self.charset
        )

    def soap(self, index: int | None = None) -> tuple[str, dict[str, str]]:
        """(operation element name, parameters) of a recorded SOAP request, read as the vendor reads it."""
        root = etree.fromstring(self.request(index).content)
        (operation,) = root.find(f"{{{SOAP_ENV}}}Body")
        return etree.QName(operation).localname, {etree.QName(c).localname: c.text or "" for c in operation}


def raising(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    """A reply that fails the way httpx fails with ``exc_type``."""

    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return reply


# (reply, outcome) rows: what Provider.send makes of each, whatever the vendor.
# A vendor's test adds its own rows (its codes, a SOAP fault body...).
TRANSPORT_FAULTS = [
    pytest.param(raising(httpx.ReadTimeout), Outcome.AMBIGUOUS, id="read-timeout"),
    pytest.param(raising(httpx.RemoteProtocolError), Outcome.AMBIGUOUS, id="dropped-mid-response"),
    pytest.param(raising(httpx.ConnectError), Outcome.TRANSIENT, id="connect-error"),
    pytest.param(raising(httpx.ConnectTimeout), Outcome.TRANSIENT, id="connect-timeout"),
    pytest.param(lambda r: httpx.Response(500, text="Internal Server Error"), Outcome.TRANSIENT, id="http-500"),
    pytest.param(lambda r: httpx.Response(503, text="busy"), Outcome.TRANSIENT, id="http-503"),
    pytest.param(lambda r: httpx.Response(401, text="no"), Outcome.AUTH, id="http-401"),
    pytest.param(lambda r: httpx.Response(403, text="no"), Outcome.AUTH, id="http-403"),
    pytest.param(lambda r: httpx.Response(404, text="not found"), Outcome.INVALID_REQUEST, id="http-404"),
    pytest.param(lambda r: httpx.Response(200, text="<html>junk"), Outcome.AMBIGUOUS, id="garbled-200"),
]

# (reply, outcome) rows: what a poll makes of each, whatever the vendor. As on a send,
# 401/403 are auth (they open the account's circuit) and any other 4xx a refused request.
POLL_TRANSPORT_FAULTS = [
    pytest.param(raising(httpx.ConnectError), Outcome.TRANSIENT, id="connect-error"),
    pytest.param(raising(httpx.ReadTimeout), Outcome.AMBIGUOUS, id="read-timeout"),
    pytest.param(lambda r: httpx.Response(500, text="oops"), Outcome.TRANSIENT, id="http-500"),
    pytest.param(lambda r: httpx.Response(401, text="no"), Outcome.AUTH, id="http-401"),
    pytest.param(lambda r: httpx.Response(403, text="no"), Outcome.AUTH, id="http-403"),
    pytest.param(lambda r: httpx.Response(404, text="nope"), Outcome.INVALID_REQUEST, id="http-404"),
]


# An accounts file that loads (test_config.py, test_config_refresh.py).
GOOD = """
[accounts.shop-dxt]
provider = "dxt"
base_url = "http://127.0.0.1:8801/"
username = "demo"
password_env = "SHOP_DXT_PASSWORD"
charset = "gbk"
signature = "【某某科技】"
rate_limit = "20/s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smsq.toml"
    path.write_text(text, encoding="utf-8")
    return path


# The command line's parser (test_readme.py, test_cli_help.py).
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}

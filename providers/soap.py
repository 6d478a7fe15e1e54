"""zeep over the account's httpx client, for the SOAP vendors.

zeep ships a requests-based transport; we hand it the same ``httpx.Client``
(one pool per account, explicit timeouts) that the HTTP vendors use. An
``httpx.Response`` has what zeep reads from a reply (status_code, headers,
content), so it passes through unchanged, and with ``raw_response=True`` a
provider gets the body itself: polls journal it before parsing.

The WSDLs are shipped in ``providers/wsdl/`` (the vendors publish none) and the
service address is the account's ``base_url``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import httpx
import zeep
from zeep.transports import Transport

# Vendor XML is parsed with DTDs, entities and external references refused.
SAFE = dict(forbid_dtd=True, forbid_entities=True, forbid_external=True, strict=True, xml_huge_tree=False)


class HttpxTransport(Transport):
    """zeep transport that sends through an httpx.Client. The WSDL comes from a local file."""

    def __init__(self, client: httpx.Client):
        super().__init__(cache=None)
        self.client = client

    def post(self, address: str, message: bytes | str, headers: dict) -> httpx.Response:
        return self.client.post(address, content=message, headers=headers)

    def load(self, url: str) -> bytes:
        if url.startswith(("http://", "https://")):
            raise ValueError(f"refusing to fetch {url}: smsq uses the WSDLs it ships")
        return super().load(url)


def wsdl_path(name: str) -> str:
    return str(resources.files("smsq.providers") / "wsdl" / name)


def soap_client(wsdl: str, client: httpx.Client) -> zeep.Client:
    """A zeep client for a shipped WSDL (built once per account: the provider keeps it)."""
    return zeep.Client(wsdl_path(wsdl), transport=HttpxTransport(client), settings=zeep.Settings(**SAFE))


def service(zc: zeep.Client, binding: str, address: str) -> Any:
    """The operations of ``binding`` (a QName string) posted to ``address``."""
    return zc.create_service(binding, address)

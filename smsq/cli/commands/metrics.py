"""`smsq metrics`: serve Prometheus metrics read from the database and the broker."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, start_http_server

from ..metrics import SmsqCollector
from .common import load


def cmd_metrics(args) -> int:
    conf = load()
    registry = CollectorRegistry(auto_describe=False)  # only smsq's own metrics, read at scrape time
    registry.register(SmsqCollector(conf))
    try:
        _server, thread = start_http_server(args.port, addr=args.address, registry=registry)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.address}:{args.port}: {exc.strerror or exc}") from None
    print(f"serving Prometheus metrics on http://{args.address}:{args.port}/metrics", file=sys.stderr, flush=True)
    thread.join()
    return 0

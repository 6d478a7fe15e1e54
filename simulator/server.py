"""Run simulator ASGI apps on real sockets.

Tests and the benchmark talk to the simulators over real HTTP (not an
in-process transport) so that timeouts, keep-alive and encodings behave as
they do against a vendor. ``serve`` runs one app in a background thread;
``serve_forever`` runs several in the foreground for ``smsq simulate``.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = ["Running", "serve", "serve_forever"]

# How long a stopping server waits for in-flight requests (e.g. a request
# parked by the "hang" fault) before cancelling them.
_GRACEFUL_SHUTDOWN_SECONDS = 1


@dataclass
class Running:
    """A simulator app listening on a socket in a daemon thread."""

    host: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    # Binding here rather than inside uvicorn makes "address in use" raise in
    # the caller's thread and gives us the real port when port=0 was asked.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on
    # accepted sockets whose proto says TCP; without it every keep-alive
    # request stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def serve(app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0) -> Running:
    """Start ``app`` in a daemon thread; return once it accepts connections."""
    sock = _bind(host, port)
    real_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"simulator:{real_port}", daemon=True)
    thread.start()

    deadline = time.monotonic() + startup_timeout
    while not (server.started and _accepts(host, real_port)):
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"simulator on {host}:{real_port} failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"simulator on {host}:{real_port} did not start in {startup_timeout}s")
        time.sleep(0.01)
    return Running(host, real_port, server, thread)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_forever(apps: dict[str, tuple[Any, int]], host: str = "127.0.0.1") -> None:
    """Run several simulators (name -> (app, port)) until Ctrl-C or SIGTERM."""
    running: dict[str, Running] = {}
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A process manager stops us with SIGTERM; shut down as for Ctrl-C.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name, (app, port) in apps.items():
            running[name] = serve(app, host, port)
            print(f"{name:10} {running[name].url}", flush=True)
        print("simulators running; Ctrl-C to stop", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for sim in running.values():
            sim.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

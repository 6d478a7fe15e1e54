"""A TCP proxy that injects network faults between smsq and a real server.

    proxy = FaultProxy("127.0.0.1", 6379)   # forwards 127.0.0.1:proxy.port -> Redis
    proxy.blackhole()   # connections are accepted, bytes are swallowed, nothing ever answers
    proxy.refuse()      # connects are refused; open connections are cut
    proxy.heal()        # forward again (open connections are cut, so clients start clean)
    proxy.close()

Threads, not asyncio, so a test can drive it from synchronous code.
"""
from __future__ import annotations

import socket
import threading

PASS, BLACKHOLE, REFUSE = "pass", "blackhole", "refuse"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.mode = PASS
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    # -- faults ---------------------------------------------------------------

    def blackhole(self) -> None:
        """Accept connections, read what comes, answer nothing (a host that went silent)."""
        self.mode = BLACKHOLE

    def refuse(self) -> None:
        """Nothing listens any more: a connect is refused, an open connection is reset."""
        self.mode = REFUSE
        self._stop_listening()
        self._cut_all()

    def heal(self) -> None:
        """Forward again. Connections opened during a fault are cut: what they sent was lost."""
        was = self.mode
        self.mode = PASS
        if was != PASS:
            self._cut_all()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.mode = REFUSE
        self._stop_listening()
        self._cut_all()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))  # port 0 the first time; the same port after refuse()
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="faultproxy-accept").start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            self._track(client)
            if self.mode == PASS:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    self._drop(client)
                    continue
                self._track(upstream)
                self._pump(client, upstream)
                self._pump(upstream, client)
            else:
                self._pump(client, None)  # swallow

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        def run() -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if dst is not None and self.mode == PASS:
                        dst.sendall(data)
                    # any other mode: the bytes vanish
            except OSError:
                pass
            self._drop(src)
            if dst is not None:
                self._drop(dst)

        threading.Thread(target=run, daemon=True, name="faultproxy-pump").start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

"""A TCP proxy that breaks the network on demand, between smsq and a real server.

Modes:
  pass       forward both ways (the start, and ``heal()``)
  blackhole  accept connections, answer nothing: open connections stall, their
             bytes held (not lost) until ``heal()``; new ones are accepted and
             never connected upstream meanwhile — a silent firewall, a dead route
  drop       close every open connection, and each new one as it arrives
  refuse     nothing listens: a connect is refused, open connections are cut
  delay      forward, ``seconds`` late
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

PAUSE = 0.05  # seconds a stalled connection sleeps between looks at the mode


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode, self.seconds = "pass", 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0  # connections accepted so far
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        # The same port again after refuse(): whoever points at the proxy keeps its URL.
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    # -- switches ---------------------------------------------------------------
    def blackhole(self) -> None:
        self.mode = "blackhole"

    def drop(self) -> None:
        self.mode = "drop"
        self._close_all()

    def refuse(self) -> None:
        self.mode = "refuse"
        self._stop_listening()
        self._close_all()

    def delay(self, seconds: float) -> None:
        self.mode, self.seconds = "delay", seconds

    def heal(self) -> None:
        if self.mode == "refuse":
            self._listen()
        self.mode = "pass"

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self._close_all()

    # -- plumbing ---------------------------------------------------------------
    def _stop_listening(self) -> None:
        # close() alone does not stop a listener that a thread is blocked in accept() on
        # (Linux): the socket keeps listening, and the next connection is still accepted
        # and forwarded. shutdown() wakes that accept() with an error.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _close_all(self) -> None:
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.mode == "drop":
                client.close()
                continue
            self.accepted += 1
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        while self.mode == "blackhole" and not self._closed:
            time.sleep(PAUSE)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        self._track(upstream)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        self._pump(upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "blackhole" and not self._closed:
                    time.sleep(PAUSE)  # held, in order, until healed
                if self.mode == "delay":
                    time.sleep(self.seconds)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (src, dst):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

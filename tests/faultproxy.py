"""A small fault-injecting TCP proxy for outage tests.

``FaultProxy(host, port)`` listens on 127.0.0.1:``.port`` and forwards every
connection to the real server. Modes:

  pass       forward (``heal()``)
  blackhole  accept, never answer: open connections stall, new ones hang (a partition;
             what was sent is delivered if it heals)
  drop       close every open connection, and each new one as soon as it comes
  refuse     close every open connection and stop listening: connects are refused

Threads, no asyncio, so a test can drive it from plain code.
"""
from __future__ import annotations

import socket
import threading

PASS, BLACKHOLE, DROP, REFUSE = "pass", "blackhole", "drop", "refuse"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._listener: socket.socket | None = None
        self.port = self._listen(port)

    # -- modes ---------------------------------------------------------------
    def heal(self) -> None:
        with self._lock:
            self.mode = PASS
        if self._listener is None and not self._closed:
            self._listen(self.port)

    def blackhole(self) -> None:
        with self._lock:
            self.mode = BLACKHOLE

    def drop(self) -> None:
        with self._lock:
            self.mode = DROP
        self._close_all()

    def refuse(self) -> None:
        with self._lock:
            self.mode = REFUSE
        self._stop_listening()
        self._close_all()

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self._close_all()

    # -- plumbing ------------------------------------------------------------
    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.update(socks)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped listening
            mode = self.mode
            if mode in (DROP, REFUSE):
                client.close()
                continue
            self._track(client)
            if mode == BLACKHOLE:
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self._track(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # A partition: the bytes are held (TCP would retransmit them), and arrive if it heals.
                while self.mode == BLACKHOLE and not self._closed:
                    threading.Event().wait(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

"""Real processes to break: a private redis-server, smsq worker and beat processes
with their own logs, and waiting on what they say."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, empty at every start, that can be killed."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        import redis

        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                      "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Process:
    """``smsq <args>`` in the background, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, tmp: Path) -> None:
        self.name, self.log = name, tmp / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "smsq", *args], cwd=tmp,
                                     env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, said: str, timeout: float = 60, after: int = 0) -> float:
        """Seconds until the log says ``said`` (past offset ``after``); fails if the process ends."""
        started = time.monotonic()
        while said not in self.text()[after:]:
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.text()[-3000:]}"
            assert time.monotonic() - started < timeout, \
                f"{self.name} did not say {said!r} in {timeout:.0f} s:\n{self.text()[-3000:]}"
            time.sleep(0.1)
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

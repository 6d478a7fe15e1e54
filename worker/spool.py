"""A durable local spool: JSON lines a worker could not write to the database yet.

Each process appends to its own file, ``<host>-<pid>.jsonl`` in the spool
directory, and fsyncs every line before going on: once ``append`` returns, the
line survives the process and the machine. Any process may drain any file
(a worker that died leaves its file to the next one). ``flock`` keeps a
writer and a drainer, or two drainers, out of each other's way; a drainer
takes the lines it could apply out of the file and leaves the others.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("smsq.spool")


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def own_file(self) -> Path:
        return self.directory / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def append(self, entry: dict) -> Path:
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.own_file
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    continue  # a drainer removed the file between our open and our lock
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.directory)  # the file's name is durable too
            return path

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def pending(self) -> int:
        """Lines waiting in every file (for logs and tests)."""
        return sum(len(p.read_bytes().splitlines()) for p in self.files())

    def drain(
        self, path: Path, apply: Callable[[dict], None], must_stop: Callable[[Exception], bool]
    ) -> tuple[int, int]:
        """Apply each line of ``path``; a line whose ``apply`` raises stays in the file, and an
        error ``must_stop`` says is an outage ends the pass. Returns (applied, left).
        A file another process is draining is skipped."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0, 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, 0
            if os.fstat(fd).st_nlink == 0:
                return 0, 0
            with open(fd, "rb", closefd=False) as f:
                lines = f.read().splitlines()
            keep: list[bytes] = []
            applied = 0
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    log.error("spool %s: line %s is not JSON and is dropped", path.name, n + 1)
                    continue
                try:
                    apply(entry)
                    applied += 1
                except Exception as exc:
                    keep.append(line)
                    if must_stop(exc):
                        keep.extend(lines[n + 1 :])
                        break
                    log.exception("spool %s: line %s could not be applied; kept", path.name, n + 1)
            if applied:
                _rewrite(path, keep)
            return applied, len(keep)
        finally:
            os.close(fd)


def ensure_writable(directory: Path) -> None:
    """Make ``directory`` (0700) if need be and write, fsync and remove a file in it; raises
    OSError (read-only file system, permission, a file in the way). The probe's name is this
    process's own, with a suffix nothing else reads."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # a file of that name: say what is wrong with it
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)) from None
    probe = directory / f".{socket.gethostname()}-{os.getpid()}.probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)
    _fsync_dir(directory)


def _rewrite(path: Path, keep: list[bytes]) -> None:
    """Leave only ``keep`` in the (locked) file; remove it when nothing is left."""
    if not keep:
        os.unlink(path)
        _fsync_dir(path.parent)
        return
    # A new file renamed over the old one: a crash leaves one or the other, whole. A
    # writer that opened the old file sees it unlinked once it holds the lock, and reopens.
    fresh = path.with_suffix(".rewrite")
    with open(fresh, "wb") as f:
        f.write(b"".join(line + b"\n" for line in keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(fresh, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

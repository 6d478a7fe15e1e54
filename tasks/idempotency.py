"""Idempotency keys: the same key replays its batch, but only for the same request.

A caller that retries a send (a timeout, a crash before it saw the receipt) sends
the same key with the same content, send time, kind, validity and numbers, and gets the
first batch's receipt. The same key with anything else is a mistake (a key reused for
a new message) and is refused: replaying would silently send nothing new.

What was asked is kept as a SHA-256 with the batch (``batches.body_digest``),
fed while the numbers stream in a block at a time: a million-number send is
never held as a list for it, and a replay is checked without reading back one
stored number.

The message kind is part of what was asked: the same key for an ``otp`` and then a
``marketing`` send of the same text is a key reused, not a retry (the kinds are held
to different rules). A ``notice``, the default, adds nothing to the hash, so a batch
stored before kinds existed (a notice) still replays for the retry that names none.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
from collections.abc import Iterator
from datetime import datetime

from smsq.worker.kinds import DEFAULT_KIND

from .intake import BLOCK  # numbers hashed per update


class IdempotencyConflictError(ValueError):
    """The idempotency key names a batch that asked for something else: nothing was stored."""

    def __init__(self, key: str, batch_id: int):
        self.key, self.batch_id = key, batch_id
        super().__init__(
            f"idempotency key {key!r} was used for batch {batch_id} with another content, send "
            f"time, kind or numbers; a new send needs a new key"
        )


class BodyDigest:
    """The digest of a send's content, send time, kind and numbers as given, in their order."""

    def __init__(
        self, content: str, send_at: datetime | None, kind: str = DEFAULT_KIND, valid_for: float | None = None
    ):
        self._hash = hashlib.sha256()
        self._hash.update(
            f"{len(content)}:{content}\0{send_at.isoformat() if send_at else ''}\0".encode("utf-8", "surrogatepass")
        )
        if kind != DEFAULT_KIND:  # a notice hashes as every send did before kinds (see above)
            self._hash.update(f"kind:{kind}\0".encode())
        if valid_for is not None:  # given (0: no limit); left to the kind's default, it adds nothing
            self._hash.update(f"valid_for:{valid_for:g}\0".encode())

    def through(self, numbers: Iterator) -> Iterator:
        """``numbers``, passed on unchanged, each hashed as it goes by (a block at a time)."""
        update = self._hash.update
        while block := list(itertools.islice(numbers, BLOCK)):
            try:
                text = "\0".join(block)
            except TypeError:  # not only strings: hashed as printed
                text = "\0".join(map(str, block))
            # Each number ends with a NUL, so where the blocks fall changes nothing.
            update(text.encode("utf-8", "surrogatepass"))
            update(b"\0")
            yield from block

    def finish(self, rest: Iterator) -> str:
        """The hex digest, once whatever is left of the numbers (from ``through``) is read."""
        collections.deque(rest, maxlen=0)
        return self._hash.hexdigest()


def check_replay(stored: str | None, asked: str, key: str, batch_id: int) -> None:
    """Raise IdempotencyConflictError unless the batch was asked for the same thing. A batch
    stored without a digest (before it was kept) replays as it always did."""
    if stored is not None and stored != asked:
        raise IdempotencyConflictError(key, batch_id)

"""How many worker slots this process has, and how many are free to take a chunk handed on.

The HTTP pools follow the number of slots (worker/clients.py): every slot may
be in a vendor call at once.

A group of chunks (tasks/send.py) is sent by one slot in turn. Handing the rest
of a group on to other slots only helps when some slot of the process is idle:
when every slot is busy, nobody would take the handed-on chunks sooner, and the
trips through the broker cost the very CPU the slots are short of. A thread
pool's size is known here (`smsq worker` says it); a prefork child's is not,
and says None.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_total: int | None = None
_busy = 0


def configure(total: int | None) -> None:
    """The number of slots sharing this process (a thread pool's size), or None."""
    global _total
    _total = total


@contextmanager
def occupied() -> Iterator[None]:
    """One slot of this process at work for the duration."""
    global _busy
    with _lock:
        _busy += 1
    try:
        yield
    finally:
        with _lock:
            _busy -= 1


def total() -> int | None:
    """The process's slots, when it knows them."""
    return _total


def idle() -> int | None:
    """Slots of this process doing nothing now; None when the process does not know."""
    return None if _total is None else max(0, _total - _busy)

"""Intake: a stream of numbers, as given, becomes a batch's staged chunks.

The numbers stream through Python a block of 5,000 entries at a time: each is
normalised (an invalid one is rejected with a reason, each spelling once),
de-duplicated against the numbers seen so far (the first spelling wins the
position), left out if the account has blocked it, and appended to the chunk
being filled. A full chunk becomes one ``split_chunks`` row (the numbers
comma-separated, in list order), written by the bulk path of the database:
PostgreSQL one ``COPY`` for the whole list, SQLite a prepared ``executemany``
per block. That is ten thousand rows for a million numbers, and no statement
reads them back: the chunk and recipient rows, with their indexes, are
written later by workers (tasks/split.py), so the producer stays light.

What is held in memory: the unique numbers seen so far, one int key each
(``1`` followed by the digits, so that a landline's leading zero counts), in a
``SeenNumbers`` (tasks/seen.py): a plain set for the first 1.2 million (about
65 MB per million, 67 MB at the peak), then sorted arrays of 4 bytes a number
behind a 32 MB filter, with a set of at most 1.2 million recent ones: a send
of 10 million numbers peaked at 266 MB of RSS for the whole process, 88 MB of
them before the call (bench/memory.py; 660 MB with a set of them all).
Besides it only the current block, the chunk being filled, the rejected
entries (each spelling once, for the receipt) and the blocked numbers found:
never the list itself, nor the chunks written.

Blocked numbers: a list that ends within its first block (an OTP, a small
campaign) looks its numbers up in ``blocked_numbers`` (one query on the
primary key). A longer list first loads the keys of all the account's blocked
numbers into a set, fetched a block at a time: about 65 MB and 0.5-1 s per
million blocked numbers (``_load_blocked``); an account with none costs one
empty query.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session

from smsq.providers.numbers import normalise_block
from smsq.store.models import BlockedNumber, Recipient
from smsq.store.sql import fit
from smsq.store.staging import Row, blocked_numbers, write_staged

from .seen import SeenNumbers

BLOCK = 5000  # entries normalised per round, blocked numbers looked up or loaded per fetch

# The send policy's check (tasks/policy.py ``admission``): a block of unique, unblocked
# numbers in, the ones it admits out; it records the ones it refuses itself.
Admit = Callable[[list[str]], list[str]]
# What stage_chunks does with the rows: write them (write_staged), or count them (a dry run).
Write = Callable[..., int]  # (session, batch id, blocks of rows, *, copy_per_block) -> numbers written


def stage_chunks(
    session: Session,
    batch_id: int | None,
    account: str,
    numbers: Iterable[str],
    landline: bool,
    size: int,
    rejected: list[tuple[str, str]],
    admit: Admit | None = None,
    write: Write = write_staged,
    admit_queries: bool = True,
) -> tuple[int, set[str]]:
    """Store ``numbers`` as the batch's ``split_chunks`` rows of ``size``: return how many
    numbers were accepted and the account's blocked numbers found (left out). Invalid
    entries are appended to ``rejected`` (each spelling once), in list order. ``admit``:
    the send policy's check, which the unique unblocked numbers pass block by block.
    ``write``: what becomes of the rows (``count_rows``: nothing, a preview's dry run).
    ``admit_queries``: ``admit`` queries the database (the policy's counters without Redis)
    between blocks, so no COPY may span them: each block gets a COPY of its own. Without
    (its counters in Redis) a list of more than one block has it checked one block ahead,
    in a thread, while the next block is read (``_admitted_ahead``).

    Unique numbers are numbered in the order of their first appearance; number n
    goes to chunk n // size, so chunks follow the list and only the last is short."""
    numbers = iter(numbers)
    seen_rejects: set[str] = set()
    first = list(itertools.islice(numbers, BLOCK))
    head = _valid(first, landline, rejected, seen_rejects)
    if len(first) < BLOCK:  # the whole list: look its numbers up
        blocked = _blocked_among(session, account, head)
        blocks: Iterable[list[str]] = [head]
    else:
        blocked = _load_blocked(session, account)
        blocks = itertools.chain([head], _valid_blocks(numbers, landline, rejected, seen_rejects))
    found: set[str] = set()
    rows = _chunk_rows(blocks, size, blocked, found, admit, ahead=not admit_queries and len(first) == BLOCK)
    # A check may query the database between blocks: then no COPY may span them.
    return write(session, batch_id, rows, copy_per_block=admit is not None and admit_queries), found


def count_rows(
    session: Session, batch_id: int | None, rows: Iterable[list[Row]], *, copy_per_block: bool = False
) -> int:
    """A dry run's ``write``: the numbers the rows hold, each block dropped once counted."""
    return sum(row[1] for block in rows for row in block)  # (seq, size, numbers[, text])


def chunk_short_list(
    session: Session,
    account: str,
    numbers: list,
    landline: bool,
    size: int,
    rejected: list[tuple[str, str]],
    admit: Admit | None = None,
) -> tuple[list[Row], set[str]]:
    """A list known to be short (at most a block: an OTP, a small batch) cut into its chunks,
    as rows, with nothing written: the caller writes chunk and recipient rows directly, not
    through the stage. Returns the rows and the account's blocked numbers found (left out);
    invalid entries are appended to ``rejected`` and ``admit`` checks them as stage_chunks does."""
    head = _valid(numbers, landline, rejected, set())
    found: set[str] = set()
    blocks = _chunk_rows([head], size, _blocked_among(session, account, head), found, admit)
    return [row for block in blocks for row in block], found


def _chunk_rows(
    blocks: Iterable[list[str]],
    size: int,
    blocked: set[int],
    found: set[str],
    admit: Admit | None = None,
    ahead: bool = False,
) -> Iterator[list[Row]]:
    """The chunks filled by each block of valid numbers (first appearance only, blocked ones
    left out and added to ``found``, then those ``admit`` keeps), then the short last one.
    ``ahead``: ``admit`` touches no database session (the send policy's counters in Redis),
    so it runs in a thread of its own, one block ahead (``_admitted_ahead``)."""
    fresh = _fresh(blocks, blocked, found)
    if admit is None:
        admitted: Iterable[list[str]] = fresh
    elif ahead:
        admitted = _admitted_ahead(admit, fresh)
    else:
        admitted = (admit(block) if block else block for block in fresh)
    return _filled(admitted, size)


def _fresh(blocks: Iterable[list[str]], blocked: set[int], found: set[str]) -> Iterator[list[str]]:
    """Each block's numbers not seen in an earlier place of the list, less the blocked ones
    (added to ``found``)."""
    seen = SeenNumbers()
    for valid in blocks:
        # ASCII digits: a key per spelling, and back; "1" keeps a leading 0. A number
        # given twice in the block keeps its first place (and the one spelling it has).
        mobiles = {int("1" + mobile): mobile for mobile in valid}
        new = seen.novel(mobiles)
        if blocked:
            found.update(mobiles[key] for key in new if key in blocked)
            yield [mobiles[key] for key in new if key not in blocked]
        else:
            yield [mobiles[key] for key in new]


def _admitted_ahead(admit: Admit, blocks: Iterable[list[str]]) -> Iterator[list[str]]:
    """``admit`` of each block, in order, run in one thread while this one reads, checks
    and de-duplicates the next block and writes the rows of the one before: the checks'
    Redis scripts (a million numbers guarded: about 1-2 s of Redis time) then overlap the
    Python work and the COPY instead of adding to them. At most two blocks are in flight;
    an error in a check is raised here, at its block."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="smsq-admit")
    try:
        waiting: Future[list[str]] | None = None
        for block in blocks:
            submitted = pool.submit(admit, block) if block else None
            if waiting is not None:
                yield waiting.result()
            waiting = submitted
        if waiting is not None:
            yield waiting.result()
    finally:  # a send that failed checks no block it has not begun to check
        pool.shutdown(cancel_futures=True)


def _filled(admitted: Iterable[list[str]], size: int) -> Iterator[list[Row]]:
    """The full chunks each block of admitted numbers completes, then the short last one."""
    pending: list[str] = []
    seq = 0
    for block in admitted:
        pending += block
        full = len(pending) - len(pending) % size
        if full:
            yield [
                (seq + i, size, ",".join(pending[start : start + size])) for i, start in enumerate(range(0, full, size))
            ]
            seq += full // size
            del pending[:full]
    if pending:
        yield [(seq, len(pending), ",".join(pending))]


def _valid(block: list, landline: bool, rejected: list[tuple[str, str]], seen_rejects: set[str]) -> list[str]:
    valid, invalid = normalise_block(block, landline=landline)
    for raw, reason in invalid:
        key = fit(Recipient.mobile, str(raw))  # as its rejected recipient row keeps it
        if key not in seen_rejects:
            seen_rejects.add(key)
            rejected.append((str(raw), reason))
    return valid


def _valid_blocks(
    numbers: Iterator[str], landline: bool, rejected: list[tuple[str, str]], seen_rejects: set[str]
) -> Iterator[list[str]]:
    while block := list(itertools.islice(numbers, BLOCK)):
        yield _valid(block, landline, rejected, seen_rejects)


def _keys(mobiles: Iterable[str]) -> list[int]:
    """The keys of stored blocked numbers; none for one that no normalised number can equal."""
    return [int("1" + m) for m in mobiles if m.isascii() and m.isdigit()]


def _blocked_among(session: Session, account: str, mobiles: list[str]) -> set[int]:
    """Keys of those of ``mobiles`` (at most a block) that the account has blocked."""
    if not mobiles:
        return set()
    return set(
        _keys(
            session.scalars(
                select(BlockedNumber.mobile).where(
                    BlockedNumber.account == account, BlockedNumber.mobile.in_(list(set(mobiles)))
                )
            )
        )
    )


def _load_blocked(session: Session, account: str) -> set[int]:
    """Keys of all the account's blocked numbers, fetched BLOCK rows at a time (PostgreSQL: a
    server-side cursor), so that only the keys are ever held. A million blocked numbers:
    about 65 MB and 0.5-1 s (measured; the ORM's own streaming took three times as long)."""
    keys: set[int] = set()
    for mobiles in blocked_numbers(session, account, BLOCK):
        keys.update(_keys(mobiles))
    return keys


def blocked_reasons(session: Session, account: str, mobiles: set[str]) -> list[tuple[str, str]]:
    """(mobile, reason) of the account's blocked ``mobiles``, ordered by number."""
    ordered = sorted(mobiles)
    found: list[tuple[str, str]] = []
    for start in range(0, len(ordered), BLOCK):
        found += session.execute(
            select(BlockedNumber.mobile, BlockedNumber.reason).where(
                BlockedNumber.account == account, BlockedNumber.mobile.in_(ordered[start : start + BLOCK])
            )
        ).all()
    return sorted((mobile, reason) for mobile, reason in found)

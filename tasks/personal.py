"""Personal texts: one send whose numbers each get a text of their own.

``send_sms(account, messages=[(mobile, text), ...])``, or a template filled per row:
``send_sms(account, template="【某某商城】{name}您好，您的订单{order}已发货", rows=[...])``
(rows are mappings holding ``mobile`` and the template's variables). One batch, one
receipt, one ``status``.

Each row is checked on its own before anything is stored, and a bad row is rejected
with its row number (1-based, in the order given) and why: a number that is not one, a
variable missing from the row, a text the account cannot carry (charset, the vendor's
maximum length, a signature it cannot place: ``Provider.prepare_content``), a number
given in an earlier row (a batch sends a number once). The send policy's checks apply
per row: the caps and the quota per number, the duplicate guard per text.

Grouping. None of the five vendors takes a text per number in one call, so numbers
whose texts come out the same travel together, up to the vendor's chunk size, and each
distinct text goes in calls of its own: the chunks carry their text
(``split_chunks.content``, then ``chunks.content``), and everything downstream (the
rate limiter, retries, ``unknown``, cancel, settle, purge, narrowing) works on chunks as
for one text. Texts are gathered as the rows stream in: a text's chunk is written when
it is full; at most ``OPEN_TEXTS`` texts wait with a part-filled chunk, and beyond that
the one waiting longest is written short. So memory stays bounded however long the list,
and identical texts far apart in a list of many distinct ones may travel in two calls.
The numbers seen so far are kept as tasks/intake.py keeps them (``SeenNumbers``,
tasks/seen.py): a set for the first 1.2 million, then 4 bytes a number.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from smsq.providers.base import ContentError, Provider, segments
from smsq.providers.numbers import normalise
from smsq.store.models import Recipient
from smsq.store.sql import fit
from smsq.store.staging import TextRow, write_staged_texts

from .intake import BLOCK, _blocked_among, _load_blocked
from .seen import SeenNumbers
from .templates import RowRefused, Template

# A row whose number an earlier row has: in the receipt, never stored as a rejected
# recipient (the number has its recipient row, and a batch holds one per number).
REPEATED = "the number is in an earlier row; a send takes each number once"


def stored_rejections(rejected: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rejections of a personal send that become rejected recipient rows."""
    return [entry for entry in rejected if not entry[1].endswith(REPEATED)]


OPEN_TEXTS = 1000  # texts held with a part-filled chunk at once (see the module's docstring)
PREPARED_CACHE = 4096  # distinct texts whose preparation is remembered

# The send policy's check of one text's numbers (tasks/policy.py ``text_admission``):
# (text, numbers) in, the numbers admitted out; it records the ones it refuses itself.
TextAdmit = Callable[[str, list[str]], list[str]]


@dataclass(frozen=True)
class Entry:
    """One row of a personal send: its place (1-based), its number as given, and its text,
    or why the row cannot be used."""

    row: int
    mobile: object
    text: str | None
    problem: str | None = None


def from_messages(messages: Iterable) -> Iterator[Entry]:
    """The entries of ``messages``: ``(mobile, text)`` pairs."""
    for row, item in enumerate(messages, 1):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            yield Entry(row, item, None, "not a (mobile, content) pair")
        elif not isinstance(item[1], str):
            yield Entry(row, item[0], None, f"the content is {type(item[1]).__name__}, not text")
        else:
            yield Entry(row, item[0], item[1])


@dataclass(frozen=True)
class NumberedRow:
    """A row of ``rows`` that carries its own number (a file's row, as a spreadsheet shows
    it: the command line's ``--rows``) and, when it cannot be used, why."""

    number: int
    values: Mapping[str, object]
    problem: str | None = None


def from_rows(template: Template, rows: Iterable) -> Iterator[Entry]:
    """The entries of ``rows`` (mappings holding ``mobile`` and the variables, or
    ``NumberedRow``), each text the ``template`` filled with its row."""
    for row, values in enumerate(rows, 1):
        problem = None
        if isinstance(values, NumberedRow):
            row, problem, values = values.number, values.problem, values.values
        if not isinstance(values, Mapping):
            yield Entry(row, values, None, "not a mapping of mobile and variables")
            continue
        mobile = values.get("mobile")
        if problem is not None:
            yield Entry(row, mobile, None, problem)
            continue
        try:
            yield Entry(row, mobile, template.render(values))
        except RowRefused as refused:
            yield Entry(row, mobile, None, str(refused))


class Texts:
    """Each distinct text prepared once for the account (signature placed, length and
    charset checked), with its segments; the last ``PREPARED_CACHE`` remembered."""

    def __init__(self, provider: Provider):
        self._prepare = provider.prepare_content
        # An OrderedDict: the oldest goes in O(1) (a dict's first key, after many deletions at
        # its front, is found by skipping each deleted slot: measured 1.4 s per 100,000 texts).
        self._known: OrderedDict[str, tuple[str, int] | str] = OrderedDict()

    def prepare(self, text: str) -> tuple[str, int] | str:
        """(the text as sent, its segments), or why the account cannot send it."""
        known = self._known.get(text)
        if known is None:
            try:
                prepared = self._prepare(text)
                known = (prepared, segments(prepared))
            except ContentError as refused:
                known = str(refused)
            if len(self._known) >= PREPARED_CACHE:
                self._known.popitem(last=False)
            self._known[text] = known
        return known


@dataclass
class Staged:
    """What a personal send's intake took in."""

    accepted: int = 0
    billable: int = 0  # messages billed: each accepted number times its text's segments
    most_segments: int = 1
    most_characters: int = 0  # the longest text's characters, signature included
    blocked: set[str] | None = None  # the account's blocked numbers found (left out)


class _Intake:
    """The rows' checks and the grouping into chunks, a block of rows at a time."""

    def __init__(
        self,
        texts: Texts,
        landline: bool,
        size: int,
        rejected: list[tuple[str, str]],
        admit: TextAdmit | None,
        refused: list[tuple[str, str]],
        blocked: set[int],
    ):
        self.texts, self.landline, self.size, self.rejected, self.admit = texts, landline, size, rejected, admit
        self.refused = refused  # where ``admit`` puts the numbers it refuses
        self.blocked, self.seen = blocked, SeenNumbers()
        # text -> numbers of its part-filled chunk, the one waiting longest first
        self.open: OrderedDict[str, list[str]] = OrderedDict()
        self.segments: dict[str, int] = {}  # the block's texts' segments
        self.seq = 0
        self.staged = Staged(blocked=set())

    def block(self, entries: list[Entry]) -> list[TextRow]:
        """The chunks the block fills (and any written short to bound the open texts)."""
        groups: dict[str, list[tuple[str, int]]] = {}
        self.segments.clear()
        checked = [self._check(entry) for entry in entries]
        firsts = set(self.seen.novel(int("1" + mobile) for mobile, _ in checked if mobile is not None))
        for entry, (mobile, reason) in zip(entries, checked, strict=True):
            if mobile is not None:
                key = int("1" + mobile)  # as tasks/intake.py keys a number
                if key in firsts:
                    firsts.remove(key)  # a later row of the number is a repeat
                    self._take(entry, mobile, key, reason, groups)
                    continue
                reason = REPEATED
            self.rejected.append((fit(Recipient.mobile, str(entry.mobile)), f"row {entry.row}: {reason}"))
        rows: list[TextRow] = []
        for text, members in groups.items():
            mobiles = self._admitted(text, members)
            if not mobiles:
                continue
            self.staged.accepted += len(mobiles)
            count = self.segments[text]
            self.staged.billable += len(mobiles) * count
            self.staged.most_segments = max(self.staged.most_segments, count)
            self.staged.most_characters = max(self.staged.most_characters, len(text))
            waiting = self.open.pop(text, [])  # re-inserted last: the open texts stay oldest first
            waiting += mobiles
            while len(waiting) >= self.size:
                rows.append(self._row(text, waiting[: self.size]))
                del waiting[: self.size]
            if waiting:
                self.open[text] = waiting
        while len(self.open) > OPEN_TEXTS:
            text, waiting = self.open.popitem(last=False)
            rows.append(self._row(text, waiting))
        return rows

    def rest(self) -> list[TextRow]:
        """The part-filled chunks left at the end."""
        rows = [self._row(text, mobiles) for text, mobiles in self.open.items()]
        self.open.clear()
        return rows

    def _check(self, entry: Entry) -> tuple[str, str] | tuple[None, str]:
        """(the entry's number, its text as sent), or (None, why the row is rejected)."""
        reason = entry.problem
        mobile = None
        if reason is None:
            mobile, reason = normalise(entry.mobile, landline=self.landline)
        if reason is None:
            assert entry.text is not None and mobile is not None
            prepared = self.texts.prepare(entry.text)
            if isinstance(prepared, str):
                return None, prepared
            self.segments[prepared[0]] = prepared[1]
            return mobile, prepared[0]
        return None, reason

    def _take(self, entry: Entry, mobile: str, key: int, text: str, groups: dict[str, list[tuple[str, int]]]) -> None:
        """A number's first row joins its text's group, or the blocked numbers found."""
        if key in self.blocked:
            assert self.staged.blocked is not None
            self.staged.blocked.add(mobile)
        else:
            groups.setdefault(text, []).append((mobile, entry.row))

    def _admitted(self, text: str, members: list[tuple[str, int]]) -> list[str]:
        """The group's numbers the send policy admits; those it refuses (into ``refused``)
        join ``rejected`` with their rows."""
        mobiles = [mobile for mobile, _ in members]
        if self.admit is None:
            return mobiles
        admitted = self.admit(text, mobiles)
        if self.refused:
            rows = dict(members)
            self.rejected.extend((mobile, f"row {rows[mobile]}: {why}") for mobile, why in self.refused)
            self.refused.clear()
        return admitted

    def _row(self, text: str, mobiles: list[str]) -> TextRow:
        row = (self.seq, len(mobiles), ",".join(mobiles), text)
        self.seq += 1
        return row


def stage_personal(
    session: Session,
    batch_id: int | None,
    account: str,
    entries: Iterator[Entry],
    texts: Texts,
    landline: bool,
    size: int,
    rejected: list[tuple[str, str]],
    admission: Callable[[list[tuple[str, str]]], TextAdmit | None],
    admit_queries: bool = True,
    write: Callable[..., int] = write_staged_texts,
) -> Staged:
    """Stage a personal send's rows as the batch's ``split_chunks``, each chunk a text's
    numbers (see the module's docstring); rejected rows join ``rejected``. ``admission``
    gives the send policy's check, which puts what it refuses in the list it is given.
    ``admit_queries``: the check queries the database between blocks (see stage_chunks).
    ``write``: what becomes of the rows (tasks/intake.py ``count_rows``: a preview's dry run)."""
    first = list(itertools.islice(entries, BLOCK))
    if len(first) < BLOCK:
        heads = (normalise(e.mobile, landline=landline)[0] for e in first if e.problem is None)
        blocked = _blocked_among(session, account, [m for m in heads if m])
    else:
        blocked = _load_blocked(session, account)
    refused: list[tuple[str, str]] = []
    admit = admission(refused)
    intake = _Intake(texts, landline, size, rejected, admit, refused, blocked)

    def rows() -> Iterator[list[TextRow]]:
        for block in itertools.chain([first], iter(lambda: list(itertools.islice(entries, BLOCK)), [])):
            if block:
                yield intake.block(block)
        yield intake.rest()

    write(session, batch_id, rows(), copy_per_block=admit is not None and admit_queries)
    return intake.staged

"""The numbers a send has taken so far, to take each once, in bounded memory.

An intake (tasks/intake.py, tasks/personal.py) asks, a block at a time, which of the
block's keys it sees for the first time. A key is an int (``1`` followed by the
number's digits, so that a landline's leading zero counts); a key repeated within
the block is new at its first place only. The answer is exact: a key is new if and
only if no earlier block and no earlier place held it.

How the keys are held (measured with the bench's numbers, Python 3.11, x86-64;
a loop over 10 million keys in blocks of 5,000, bench/memory.py for the whole send):

- Up to ``SET_KEYS`` (1.2 million) new keys sit in a plain ``set``: about 63 MB per
  million, 67 MB at the peak while its table doubles. A list of up to 1.2 million
  unique numbers -- nearly every send -- costs what a set costs and nothing else
  (a block's keys in one list comprehension: quicker than a test per number).
- When the set is full it is spilled into ``PARTS`` (4093, a prime) sorted arrays of
  unsigned 32-bit ints: key ``k`` goes to part ``k % PARTS`` as ``k // PARTS``,
  which for a 13-digit key (a landline: ``1`` and 12 digits) is below 2**29. That is
  4 bytes a number instead of 63, and the set starts empty again. Each spill merges
  the set's keys into every part, one part at a time, so at most one part (about
  10 KB at 10 million numbers) is ever held twice or as Python ints.
- From the first spill on, a filter of ``FILTER_BITS`` bits (32 MB) has the bit
  ``k % FILTER_BITS`` set for every key seen. A block's keys are checked against it
  by ``map`` over ``operator`` functions and one ``itemgetter``: C loops, no Python
  statement per key. A key whose bit is clear is new for certain (at 10 million
  random keys a new one finds its bit set 1 - e**(-10/268), about 4 % of the time;
  numbers of a range: never);
  only the others are looked up in the set and their part (``bisect``).
- 10 million unique numbers hold 40 MB of arrays, the 32 MB filter and a set of at
  most 1.2 million: the whole process of a send of 10 million peaked at 266 MB
  (88 MB before the call; 282 MB with personal texts, 1,000 distinct), against
  660 MB with a set of every number. The arrays still grow 4 bytes a number past
  that.

Why these: a part is found by a modulo, so numbers that come in order (a sorted
list, a range) spread evenly; the modulo's quotient is what makes 4 bytes enough.
Without the filter, a Python loop per key (``divmod``, ``bisect`` on an array)
cost about 2 us a key beyond the set: 10 million keys took 29 s instead of the
set's 13 s; with it 16 s, of which the spills (every part rewritten, about 0.5 s
each at 10 million) are most. Numbers in random order: 41 s against the set's 22 s
(the filter's bytes and the parts then miss the CPU's caches). A SQLite table keyed by the number, a block looked
up and inserted at a time, cost 1.7 us a key for numbers in order and 5.6 us in
random order. A key that does not fit an array item (negative, or 2**32 * PARTS or
more: no number is that long) stays in a set of its own, for good.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from itertools import compress, islice, repeat
from operator import and_, itemgetter, lshift, mod, not_, or_, rshift

SET_KEYS = 1_200_000  # new keys held in a set before a spill (below the 1,258,291 that grow its table again)
PARTS = 4093  # sorted arrays the keys are spilled into (a prime: see the module's docstring)
_QUOTIENT = 2**32  # what an array item ("I") holds for certain
FILTER_BITS = 268_435_399  # a prime below 2**28: the filter's 32 MB, 1 bit a key's remainder


class SeenNumbers:
    """The keys seen so far (see the module's docstring). ``set_keys`` and ``parts``
    are there for tests, to make spills happen with few keys."""

    def __init__(self, set_keys: int = SET_KEYS, parts: int = PARTS):
        self._set_keys, self._parts = set_keys, parts
        self._recent: set[int] = set()  # keys seen since the last spill
        self._sorted: list[array] = []  # per part, quotients of the keys spilled, ascending
        self._odd: set[int] = set()  # keys no array item can hold
        self._filter = bytearray()  # after a spill: bit k % FILTER_BITS set for every key seen
        self.spills = 0

    def __len__(self) -> int:
        return len(self._recent) + sum(map(len, self._sorted)) + len(self._odd)

    def novel(self, keys: Iterable[int]) -> list[int]:
        """The keys of the block seen for the first time, in the order of their first
        place; from now on they count as seen."""
        recent = self._recent
        if self._sorted:
            new = self._filtered(list(dict.fromkeys(keys)))
        else:  # nothing spilled yet: the set is all there is
            new = [key for key in dict.fromkeys(keys) if key not in recent]
        recent.update(new)
        if len(recent) >= self._set_keys:
            self._spill()
        return new

    def _filtered(self, keys: list[int]) -> list[int]:
        """Those of ``keys`` (each once) not seen: a key whose filter bit is clear is new
        for certain; only the others are looked up. Every step is a C loop (``map``)."""
        if not keys:
            return keys
        at, masks = _bits(keys)
        hits = list(map(and_, self._gather(at), masks))
        maybe = list(compress(keys, hits))
        held = set(maybe).difference(self._unspilled(maybe)) if maybe else ()
        new = [key for key in keys if key not in held] if held else keys
        self._mark(*(_bits(new) if len(new) != len(keys) else (at, masks)))
        return new

    def _gather(self, at: list[int]) -> tuple[int, ...]:
        return itemgetter(*at)(self._filter) if len(at) > 1 else (self._filter[at[0]],)

    def _mark(self, at: list[int], masks: list[int]) -> None:
        """Set the bits; two keys of one byte: the second write may undo the first's
        bit, so each byte is read back and what is missing is set again."""
        if not at:
            return
        bits = self._filter
        deque(map(bits.__setitem__, at, map(or_, self._gather(at), masks)), maxlen=0)
        for byte, mask in compress(zip(at, masks, strict=True), map(not_, map(and_, self._gather(at), masks))):
            bits[byte] |= mask

    def _unspilled(self, keys: Iterable[int]) -> list[int]:
        """Those of ``keys`` (each once) neither in the set nor in an array."""
        recent, odd, parts, count = self._recent, self._odd, self._sorted, self._parts
        new: list[int] = []
        for key in keys:
            if key in recent:
                continue
            quotient, part = divmod(key, count)
            held = parts[part]
            at = bisect_left(held, quotient)
            if (at == len(held) or held[at] != quotient) and key not in odd:
                new.append(key)
        return new

    def _spill(self) -> None:
        """The set's keys merged into the arrays, one part at a time; the set emptied."""
        count = self._parts
        if not self._sorted:
            self._sorted = [array("I") for _ in range(count)]
            self._filter = bytearray(FILTER_BITS // 8 + 1)
            keys = iter(self._recent)
            while block := list(islice(keys, 5000)):  # a block's lists at a time, not the set's
                self._mark(*_bits(block))
        incoming = [array("I") for _ in range(count)]  # 4 bytes a key, not a Python int
        for key in self._recent:
            quotient, part = divmod(key, count)
            if 0 <= quotient < _QUOTIENT:
                incoming[part].append(quotient)
            else:
                self._odd.add(key)
        self._recent.clear()
        for part, quotients in enumerate(incoming):
            if quotients:
                merged = self._sorted[part].tolist()
                merged += quotients.tolist()
                merged.sort()  # two sorted runs and a shuffled one: timsort merges them
                self._sorted[part] = array("I", merged)
                incoming[part] = quotients[:0]
        self.spills += 1


def _bits(keys: list[int]) -> tuple[list[int], list[int]]:
    """The filter's byte and bit mask of each key."""
    places = list(map(mod, keys, repeat(FILTER_BITS)))
    return list(map(rshift, places, repeat(3))), list(map(lshift, repeat(1), map(and_, places, repeat(7))))

"""Message templates: one text with ``{variables}`` filled per number from a row, for a
send where each number gets its own text (``【某某商城】{name}您好，您的订单{order}已发货``).

Pure: no I/O. The command line reads the rows (smsq/cli/rows.py); the send fills a
``Template`` once per row with ``render``.

What a template may hold, and why the rest is refused (``TemplateError``, one line
saying what and at which character, counted from 1):

* ``{name}``: a variable, any identifier-like name, Chinese ones too (``{姓名}``);
  ``{{`` and ``}}`` are literal braces;
* not ``{}`` or ``{0}`` (positional: a row has names, not places), not ``{a.b}`` or
  ``{a[0]}`` (attribute and index access reach into Python objects), not ``{a:>5}`` or
  ``{a!r}`` (format specs and conversions: a row's values are text, and ``!r`` would put
  quotes in a customer's message);
* not ``{mobile}`` or another name of the number's column (``NUMBER_COLUMNS``): the
  number is where the text goes, not a variable in it, and the rows file maps all those
  headers to ``mobile``, so the variable could never be found;
* at least one variable: a text without one is the same for every number, and
  ``content=`` (``--content``) sends that.

Values (``render``): ``str(value).strip()``; an int as it is; an integral float without
``.0`` (a spreadsheet gives 8812.0 for 8812). Refused per row (``RowRefused``, the reason
as its message): a variable absent from the row; one that is None, empty or blank; a
float NaN (what pandas gives for an empty cell) counts as empty; an infinite float; a
``bool`` (``True`` in a customer's text is never meant: a row holding one was built
wrong; the rows file gives a spreadsheet's TRUE/FALSE cells as the text ``TRUE``/``FALSE``).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator, Mapping

# The headers a rows file may name the number's column by (ASCII ones in any case); the
# file reader maps each to NUMBER_COLUMN. Kept here so a template refuses the same names.
NUMBER_COLUMN = "mobile"
NUMBER_COLUMNS = ("mobile", "手机号", "手机号码", "手机", "电话", "phone")


class TemplateError(ValueError):
    """A template that cannot be used; the message is one line saying what and where."""


class RowRefused(ValueError):
    """A row that cannot fill the template; the message is the reason."""


def is_number_column(name: str) -> bool:
    """Whether a header or variable name is one of ``NUMBER_COLUMNS`` (ASCII in any case)."""
    return name.strip().lower() in NUMBER_COLUMNS


class Template:
    """A template parsed once; ``render`` fills it from a row.

    It is kept as its literal pieces with an empty place between each two (``_parts``)
    and the variable that goes in each place (``_slots``). Rendering copies that list
    with the row's values in their places and joins it. Measured with timeit on
    ``【某某商城】{name}您好，您的订单{order}已发货`` and a row of three str values
    (Python 3.11): 0.6-0.8 µs a row, against 1.7 µs for the same values checked and
    stripped, then given to the text's ``str.format_map``.
    """

    __slots__ = ("text", "variables", "_parts", "_slots")

    def __init__(self, text: str):
        self.text = text
        pieces: list[str] = []
        names: list[str] = []
        literal = ""
        for chunk, name in _fields(text):
            literal += chunk
            if name is not None:
                pieces.append(literal)
                names.append(name)
                literal = ""
        pieces.append(literal)
        if not names:
            raise TemplateError(
                "template has no variable such as {name}: for the same text to every number, use content= (--content)"
            )
        self.variables: tuple[str, ...] = tuple(dict.fromkeys(names))
        # parts: the pieces with a place after each but the last, for the values.
        self._parts: list[str] = [part for piece in pieces[:-1] for part in (piece, "")] + [pieces[-1]]
        self._slots: tuple[tuple[int, str], ...] = tuple((2 * i + 1, name) for i, name in enumerate(names))

    def render(self, row: Mapping[str, object]) -> str:
        """The text for one row. ``RowRefused`` if a variable is missing from the row,
        empty, or of a kind that is never text (see the module's docstring)."""
        parts = self._parts.copy()
        for place, name in self._slots:
            value = row.get(name)
            # The common case inline (a str with text); value_text for everything else.
            text = value.strip() if type(value) is str else ""
            parts[place] = text or value_text(row, name)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def value_text(row: Mapping[str, object], name: str) -> str:
    """Variable ``name``'s text in ``row``, or ``RowRefused`` with the reason."""
    try:
        value = row[name]
    except KeyError:
        raise RowRefused(f"no variable '{name}' in the row") from None
    if isinstance(value, str):
        text = value.strip()
    elif value is None:
        text = ""
    elif isinstance(value, bool):
        raise RowRefused(f"variable '{name}' is {value}, not text")
    elif isinstance(value, float):
        text = _float_text(value, name)
    else:
        text = str(value).strip()
    if not text:
        raise RowRefused(f"empty variable '{name}'")
    return text


def _float_text(value: float, name: str) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value):
        raise RowRefused(f"variable '{name}' is {value}, not a number a text can hold")
    return str(int(value)) if value.is_integer() else repr(value)


def _fields(text: str) -> Iterator[tuple[str, str | None]]:
    """``(literal text, variable name or None)`` in order, with every refusal of the
    module's docstring raised as ``TemplateError`` at the character it starts at."""
    offset = 0  # where in ``text`` the next parsed item starts
    parsed = iter(string.Formatter().parse(text))
    while True:
        try:
            literal, field, spec, conversion = next(parsed)
        except StopIteration:
            return
        except ValueError as error:
            raise TemplateError(_unbalanced(text, offset, str(error))) from None
        offset += len(literal) + literal.count("{") + literal.count("}")  # {{ and }} came in as one
        if field is None:
            yield literal, None
            continue
        end = _field_end(text, offset)
        problem = _field_problem(field, spec, conversion)
        if problem:
            raise TemplateError(f"template, character {offset + 1}: {text[offset:end]} {problem}")
        yield literal, field
        offset = end


def _field_problem(field: str, spec: str | None, conversion: str | None) -> str | None:
    """Why a ``{...}`` field is not a variable, or None if it is one."""
    if field == "" or field.isdigit():
        return "is positional; name the variable, e.g. {name}"
    if "." in field or "[" in field:
        return "reaches into a value (attribute or index); a variable is a plain name, e.g. {name}"
    if spec or conversion:
        return "has a format (':' or '!'); a variable is a plain name, e.g. {name}"
    if not field.isidentifier():
        return "is not a variable name (letters, digits and _, no spaces; {{ and }} for a brace)"
    if is_number_column(field):
        return "is the number's column, not a variable of the text"
    return None


def _field_end(text: str, start: int) -> int:
    """Index just past the ``}`` closing the field that opens at ``text[start]`` (a
    format spec may nest one ``{...}``)."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return len(text)


def _unbalanced(text: str, offset: int, why: str) -> str:
    """The line for a template ``string.Formatter`` could not parse from ``offset`` on:
    its first brace that is neither doubled nor a whole field."""
    index = offset
    while index < len(text):
        pair = text[index : index + 2]
        if pair in ("{{", "}}"):
            index += 2
            continue
        if text[index] == "}":
            return f"template, character {index + 1}: '}}' with no '{{' before it (write }}}} for a brace in the text)"
        if text[index] == "{":
            close = text.find("}", index)
            if close < 0:
                return f"template, character {index + 1}: '{{' never closed (write {{{{ for a brace in the text)"
            return f"template, character {index + 1}: {text[index : close + 1]} is not a variable ({why})"
        index += 1
    return f"template: {why}"

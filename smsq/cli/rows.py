"""Reading a rows file (``smsq send --rows rows.csv``): a number and the variables of its
text per row, streamed a row at a time, so a list of 10 million rows costs what one row
costs.

    with open_rows(Path("rows.csv")) as rows:
        rows.columns                 # ("mobile", "name", "order"): read at open
        for row in rows:             # Row(number=2, values={"mobile": ..., ...}, problem=None)
            ...

Formats, by the file's suffix (in any case):

* ``.csv``, ``.txt``: comma-separated, or tab- or semicolon-separated when the header
  line holds more of those than of commas (what a spreadsheet's other exports give; a
  header's names hardly ever hold any of the three, which ``csv.Sniffer``'s guesses over
  whole lines of data cannot say). ``.tsv``: tab-separated. The encoding, from the
  first bytes: a UTF-8 BOM: UTF-8; a UTF-16 BOM (a spreadsheet's "Unicode text"):
  UTF-16; else the first 64 KB decoding as UTF-8 (a character cut at the 64 KB edge
  allowed): UTF-8; else GB18030, which reads GBK and GB2312 (what Chinese spreadsheets
  export). First 64 KB of plain ASCII say neither (a GBK list may start with rows of
  digits): then the 64 KB from the file's first byte that is not ASCII decide, the same
  way, and the file is read from its start again; a file all ASCII is read as UTF-8.
* ``.xlsx``: the first worksheet, through openpyxl's read-only mode (rows streamed from
  the archive; formulas give the value the spreadsheet last computed). A sheet holds at
  most 1,048,576 rows, and openpyxl keeps its table of distinct texts in memory: larger
  lists come as CSV.

The header is the first row that is not blank. Its names are stripped (and a BOM left in
the first); empty names after the last named column are dropped, and any other empty
name, a name given twice, or no number column is a ``RowsFileError``. The number column
is ``mobile`` or one of the usual other names (``NUMBER_COLUMNS``: 手机号, 手机号码, 手机,
电话, phone; ASCII in any case) and is keyed ``mobile`` in ``RowsFile.columns`` and each
row's ``values``; two of them is an error too.

Each row after it: its cells stripped, an empty one None. A spreadsheet's numbers as it
shows them: an integral one as its digits (13800138000.0 gives "13800138000"), others to
15 significant digits; dates as ISO text (``2026-12-03``, ``2026-12-03 09:30:00``);
TRUE/FALSE as those words; a formula's error (#N/A, #DIV/0!, ...) None, as an empty cell:
no customer's text should hold it, in whichever format it came. A wholly blank row is
skipped; one with fewer cells than the header has the missing ones None. A row comes
with a ``problem`` when it has a non-empty cell past the header's last column (its
header's cells still in ``values``), or when its number is in scientific notation
(``1.38001E+10``: a spreadsheet shows a long number so and saves it so in a CSV, its
last digits gone).

Every failure is a ``RowsFileError`` of one line naming the file (and the row where
there is one): at ``open_rows``, a file missing, a directory or unreadable, a format not
read, a workbook that is not a valid .xlsx, a header refused; while iterating, a CSV row
that is not text in the encoding the file was read in, one the csv module refuses (a
quote never closed, once its cell passes the module's 131,072 characters), a read error.
The rows are read once, inside the ``with``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import TracebackType

from smsq.tasks.templates import NUMBER_COLUMN, NUMBER_COLUMNS, is_number_column

HEAD = 64 * 1024  # bytes the encoding and the delimiter are told from
CSV_SUFFIXES = (".csv", ".txt", ".tsv")
XLSX_SUFFIX = ".xlsx"
# utf-8-sig and utf-16 read past their BOM.
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# A workbook named .csv: its first bytes, and what it is.
WORKBOOKS = (
    (b"PK\x03\x04", "not CSV text but a zip archive, as an .xlsx workbook is: name a workbook .xlsx"),
    (b"\xd0\xcf\x11\xe0", "not CSV text but an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV"),
)
ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "gb18030": "GBK (GB18030)"}
NON_ASCII = re.compile(rb"[\x80-\xff]")
ESCAPED = re.compile("[\udc80-\udcff]")  # an undecodable byte, read with errors="surrogateescape"

# What a spreadsheet shows for a formula that failed (openpyxl's ERROR_CODES): no text of a
# message's, so an empty cell.
SPREADSHEET_ERRORS = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"})
# A long number a spreadsheet shows in its General format and saves so in a CSV: 1.38001E+10.
SCIENTIFIC = re.compile(r"\d(\.\d+)?[eE]\+\d+")

Records = Iterator[tuple[int, list[str | None]]]  # (row number, its cells' texts), the header's row first


class RowsFileError(ValueError):
    """A rows file that cannot be read; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a rows file. ``number``: its row as a spreadsheet shows it (the header's
    is 1 when it is the first line). ``values``: each column's text or None, keyed by
    ``RowsFile.columns``. ``problem``: why the row cannot be used, or None."""

    number: int
    values: dict[str, str | None]
    problem: str | None = None


class RowsFile:
    """An open rows file: ``columns`` read at open, its rows iterated once, a row at a
    time. A context manager; ``close`` closes the file."""

    def __init__(self, name: str, records: Records, close: Callable[[], None]):
        self.name = name
        self._records = records
        self._close = close
        try:
            self.columns: tuple[str, ...] = header_columns(name, _first_filled(name, records))
        except BaseException:
            close()
            raise

    def __iter__(self) -> Iterator[Row]:
        columns = self.columns
        width = len(columns)
        for number, texts in self._records:
            if not any(texts):
                continue  # a blank row
            if not SPREADSHEET_ERRORS.isdisjoint(texts):
                texts = [None if text in SPREADSHEET_ERRORS else text for text in texts]
            problem = None
            if len(texts) < width:
                texts.extend([None] * (width - len(texts)))
            elif len(texts) > width:
                problem = _too_long(texts, width)
            values = dict(zip(columns, texts, strict=False))
            mobile = values[NUMBER_COLUMN]
            if problem is None and mobile is not None and "+" in mobile:  # the call only for 1.38E+10 and +86...
                problem = _number_problem(mobile)
            yield Row(number, values, problem)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> RowsFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def open_rows(path: Path) -> RowsFile:
    """Open the rows file at ``path`` and read its header; ``RowsFileError`` if it cannot
    be used (see the module's docstring)."""
    name = str(path)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise RowsFileError(f"{name}: an Excel 97-2003 workbook (.xls) is not read; save it as .xlsx or CSV")
    if suffix not in (*CSV_SUFFIXES, XLSX_SUFFIX):
        raise RowsFileError(f"{name}: not a rows file; use .csv, .tsv, .txt or .xlsx")
    binary = _open_binary(path, name)
    try:
        if suffix == XLSX_SUFFIX:
            records, close = _xlsx_records(binary, name)
        else:
            records, close = _csv_records(binary, name, tab=suffix == ".tsv"), binary.close
    except BaseException:
        binary.close()
        raise
    return RowsFile(name, records, close)


def header_columns(name: str, cells: Sequence[str | None]) -> tuple[str, ...]:
    """The column keys of a header row's texts, the number column keyed ``mobile``;
    ``RowsFileError`` for an empty or repeated name, or none or two number columns."""
    names = [cell or "" for cell in cells]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    while names and not names[-1]:
        names.pop()
    unnamed = [column_label(index) for index, column in enumerate(names) if not column]
    if unnamed:
        raise RowsFileError(f"{name}: the header has no name for column {', '.join(unnamed)}")
    repeated = sorted({column for column in names if names.count(column) > 1}, key=names.index)
    if repeated:
        raise RowsFileError(f"{name}: the header names {', '.join(repeated)} more than once")
    numbers = [column for column in names if is_number_column(column)]
    if not numbers:
        raise RowsFileError(
            f"{name}: no mobile column (one of: {', '.join(NUMBER_COLUMNS)}); columns: {', '.join(names)}"
        )
    if len(numbers) > 1:
        raise RowsFileError(f"{name}: more than one number column: {', '.join(numbers)}")
    return tuple(NUMBER_COLUMN if is_number_column(column) else column for column in names)


def column_label(index: int) -> str:
    """Column ``index`` (from 0) as a spreadsheet names it, with its place: ``3 (C)``."""
    letters, rest = "", index + 1
    while rest:
        rest, digit = divmod(rest - 1, 26)
        letters = chr(ord("A") + digit) + letters
    return f"{index + 1} ({letters})"


def cell_text(value: object) -> str | None:
    """A cell as the text a spreadsheet shows, stripped; None for an empty one."""
    if isinstance(value, str):
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(value, ".15g")
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value).strip() or None


def _too_long(texts: list[str | None], width: int) -> str | None:
    """Why a row with cells past the header's last column cannot be used; None if those
    cells are all empty."""
    filled = len(texts)
    while texts[filled - 1] is None:
        filled -= 1
    return f"{filled} cells, the header has {width}" if filled > width else None


def _number_problem(number: str) -> str | None:
    """Why the number column's text is no number a spreadsheet could have meant: one it
    wrote in scientific notation has lost its last digits."""
    if SCIENTIFIC.fullmatch(number):
        return (
            f"mobile {number} is in scientific notation, its last digits lost: "
            "format the column as text in the spreadsheet and save again"
        )
    return None


def _first_filled(name: str, records: Records) -> list[str | None]:
    """The texts of the first row that is not blank: the header."""
    for _, texts in records:
        if any(texts):
            return texts
    raise RowsFileError(f"{name}: empty: no header row")


def _open_binary(path: Path, name: str) -> io.BufferedReader:
    try:
        return io.BufferedReader(io.FileIO(path), buffer_size=HEAD)  # closed by the RowsFile
    except FileNotFoundError:
        raise RowsFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise RowsFileError(f"{name}: a directory, not a file") from None
    except PermissionError:
        raise RowsFileError(f"{name}: cannot be read: permission denied") from None
    except OSError as error:
        raise RowsFileError(f"{name}: cannot be read: {error.strerror or error}") from None


# CSV


def _csv_records(binary: io.BufferedReader, name: str, *, tab: bool) -> Records:
    """The CSV's records as texts, numbered from 1, a blank line counting as one, as a
    spreadsheet counts them (a quoted cell may span lines: its record is one row)."""
    for magic, what in WORKBOOKS:
        if binary.peek(len(magic)).startswith(magic):
            raise RowsFileError(f"{name}: {what}")
    encoding = csv_encoding(binary)
    head = binary.peek(HEAD)[:HEAD].decode(encoding, errors="replace")
    delimiter = "\t" if tab else _delimiter(head)
    reader = csv.reader(io.TextIOWrapper(binary, encoding=encoding, newline=""), delimiter=delimiter)
    number = 0  # the last record read: an error is in the next one
    try:
        for number, cells in enumerate(reader, 1):  # noqa: B007 - read in the handlers
            yield number, [cell.strip() or None for cell in cells]
    except UnicodeDecodeError:
        where = _undecodable_row(binary, encoding, delimiter, number + 1)
        raise RowsFileError(
            f"{name}, {where}: not {ENCODING_NAMES[encoding]} text, as the file was read; save it as CSV UTF-8"
        ) from None
    except csv.Error as error:  # a quote never closed ends here: at the cell size limit, 131,072 characters
        raise RowsFileError(f"{name}, row {number + 1}: {error}") from None
    except OSError as error:
        raise RowsFileError(f"{name}, row {number + 1}: cannot be read: {error.strerror or error}") from None


def _undecodable_row(binary: io.BufferedReader, encoding: str, delimiter: str, first: int) -> str:
    """``row N``: the first row holding bytes not in ``encoding``, ``first`` or after it.
    The decoder reads ahead by blocks, so its error comes rows early: the file is read
    again, the bytes it cannot decode kept as escapes, to the row with the first of them
    (only when a file fails)."""
    unknown = f"row {first} or one after it"
    if not binary.seekable():
        return unknown
    binary.seek(0)
    text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
    try:
        for number, cells in enumerate(csv.reader(text, delimiter=delimiter), 1):
            if ESCAPED.search("".join(cells)):
                return f"row {number}"
        return unknown
    except (UnicodeDecodeError, csv.Error):  # UTF-16 has no escapes for a byte short
        return unknown
    finally:
        text.detach()  # the file stays the RowsFile's to close


def csv_encoding(binary: io.BufferedReader) -> str:
    """The encoding of a CSV file (the module's docstring), its position left at the start."""
    head = binary.peek(HEAD)[:HEAD]
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding
    sample = _from_first_non_ascii(binary) if head.isascii() else head
    return "utf-8" if sample is None else _utf8_or_gb18030(sample)


def _from_first_non_ascii(binary: io.BufferedReader) -> bytes | None:
    """Up to 64 KB from the file's first byte that is not ASCII; None if there is none, or
    if the file cannot be read again from its start (a pipe)."""
    if not binary.seekable():
        return None
    try:
        while chunk := binary.read(HEAD):
            found = None if chunk.isascii() else NON_ASCII.search(chunk)  # isascii: 60 MB of digits in 20 ms
            if found:
                return chunk[found.start() :] + binary.read(found.start())
        return None
    finally:
        binary.seek(0)


def _utf8_or_gb18030(sample: bytes) -> str:
    """UTF-8 if ``sample`` decodes as UTF-8, but for a character its end cuts; else GB18030."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def _delimiter(head: str) -> str:
    """Tab or semicolon if the header line holds more of it than of commas, else comma."""
    line = next((line for line in head.lstrip("\ufeff").splitlines() if line.strip()), "")
    counts = {delimiter: line.count(delimiter) for delimiter in (",", "\t", ";")}
    return max(counts, key=lambda delimiter: counts[delimiter])  # a tie: the first, comma


# XLSX


def _xlsx_records(binary: io.BufferedReader, name: str) -> tuple[Records, Callable[[], None]]:
    """The first worksheet's rows numbered from 1, and how to close the workbook."""
    import openpyxl  # only for a workbook: the command line starts without it

    try:
        workbook = openpyxl.load_workbook(binary, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises whatever the zip and XML parsers raise
        raise RowsFileError(f"{name}: not a valid .xlsx workbook ({_reason(error)})") from None

    def close() -> None:
        workbook.close()
        binary.close()

    if not workbook.worksheets:
        close()
        raise RowsFileError(f"{name}: the workbook has no worksheet")
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()  # read-only: the stored size may be wrong; read every row
    return _sheet_records(sheet.iter_rows(values_only=True), name), close


def _sheet_records(rows: Iterable[Sequence[object]], name: str) -> Records:
    """``rows`` numbered from 1: openpyxl's read-only sheets give a missing row as empty."""
    iterator = iter(rows)
    number = 0
    while True:
        number += 1
        try:
            cells = next(iterator)
        except StopIteration:
            return
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, SyntaxError) as error:  # SyntaxError: XML's
            raise RowsFileError(f"{name}, row {number}: the workbook cannot be read ({_reason(error)})") from None
        yield number, [cell_text(cell) for cell in cells]


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

"""Rows files (smsq/cli/rows.py): CSV in its encodings and delimiters, .xlsx, the header's
number column, the rows as a spreadsheet numbers them, and one line for every file that
cannot be read. Files are written into tmp_path."""

from __future__ import annotations

import codecs
import gc
import io
import os
import tracemalloc
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pytest

from smsq.cli import rows as rows_module
from smsq.cli.rows import HEAD, Row, RowsFileError, open_rows
from smsq.tasks.templates import NUMBER_COLUMNS


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read(path: Path) -> tuple[tuple[str, ...], list[Row]]:
    with open_rows(path) as rows:
        return rows.columns, list(rows)


def values(path: Path) -> list[dict[str, str | None]]:
    return [row.values for row in read(path)[1]]


def open_descriptors_of(path: Path) -> list[str]:
    """This process's file descriptors open on ``path`` (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            if Path(os.readlink(fd)) == path.resolve():
                found.append(fd.name)
        except OSError:
            continue  # the descriptor listing the folder itself, gone by now
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")

SHOP_CSV = "mobile,name,order\n13800138000,张三,8812\n13800138001,李四,9\n"
SHOP_ROWS = [
    {"mobile": "13800138000", "name": "张三", "order": "8812"},
    {"mobile": "13800138001", "name": "李四", "order": "9"},
]


# Encodings


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("gbk", b""), ("gb2312", b""), ("gb18030", b"")],
    ids=["utf-8", "utf-8 with BOM", "gbk", "gb2312", "gb18030"],
)
def test_a_csv_in_each_encoding_a_spreadsheet_exports(tmp_path, encoding, prefix):
    path = tmp_path / "rows.csv"
    path.write_bytes(prefix + SHOP_CSV.replace("mobile", "手机号").encode(encoding))
    columns, rows = read(path)
    assert columns == ("mobile", "name", "order")
    assert [row.values for row in rows] == SHOP_ROWS


def test_a_unicode_text_export_in_utf16_with_tabs(tmp_path):
    path = write(tmp_path / "rows.txt", "\ufeff手机号\t姓名\r\n13800138000\t张三\r\n", "utf-16-le")
    assert values(path) == [{"mobile": "13800138000", "姓名": "张三"}]


def test_a_gbk_file_whose_first_64_kb_are_ascii_is_still_read_as_gbk(tmp_path):
    lines = [f"1380013{i:04d},{i}" for i in range(HEAD // 10)]  # > 64 KB of digits and commas
    path = write(tmp_path / "rows.csv", "mobile,order\n" + "\n".join(lines) + "\n13900139000,王五\n", "gbk")
    rows = values(path)
    assert len(rows) == len(lines) + 1
    assert rows[-1] == {"mobile": "13900139000", "order": "王五"}


def test_a_utf8_character_cut_by_the_64_kb_edge_is_still_utf8(tmp_path):
    start = "mobile,name\n" + "13800138000,a\n" * ((HEAD - 100) // 14) + "13800138000,"
    pad = "x" * (HEAD - 1 - len(start))  # 张, three bytes, starts one byte before the edge
    path = write(tmp_path / "rows.csv", start + pad + "张三\n")
    assert path.read_bytes()[HEAD - 1 : HEAD + 2] == "张".encode()
    assert values(path)[-1] == {"mobile": "13800138000", "name": pad + "张三"}


def test_a_file_in_two_encodings_is_refused_at_the_row_that_breaks(tmp_path):
    utf8 = "mobile,name\n" + "13800138000,张三\n" * (HEAD // 10)  # past the 64 KB the encoding is told from
    path = tmp_path / "rows.csv"
    path.write_bytes(utf8.encode() + "13800138001,李四\n".encode("gbk"))
    with open_rows(path) as rows, pytest.raises(RowsFileError, match=rf"rows\.csv, row {HEAD // 10 + 2}: not UTF-8"):
        list(rows)


def test_a_utf16_file_cut_in_a_character_is_refused_near_where(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_bytes("\ufeffmobile\n13800138000\n1".encode("utf-16-le") + b"\x00\x00"[:1])
    with open_rows(path) as rows, pytest.raises(RowsFileError, match=r"rows\.txt, row 3 or one after it: not UTF-16"):
        list(rows)


# Delimiters


@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_the_header_line_tells_the_delimiter(tmp_path, delimiter):
    path = write(tmp_path / "rows.csv", SHOP_CSV.replace(",", delimiter))
    assert values(path) == SHOP_ROWS


def test_a_tsv_is_tab_separated_whatever_its_header(tmp_path):
    path = write(tmp_path / "rows.tsv", "mobile\tname\n13800138000\t张,三\n")
    assert values(path) == [{"mobile": "13800138000", "name": "张,三"}]


def test_a_comma_inside_quotes_is_a_cell_s_text(tmp_path):
    path = write(tmp_path / "rows.csv", 'mobile,name\n13800138000,"张,三"\n')
    assert values(path) == [{"mobile": "13800138000", "name": "张,三"}]


# Header


@pytest.mark.parametrize("header", [*NUMBER_COLUMNS, "Mobile", "PHONE", " 手机 "])
def test_each_name_of_the_number_column_is_keyed_mobile(tmp_path, header):
    path = write(tmp_path / "rows.csv", f"name,{header}\n张三,13800138000\n")
    columns, rows = read(path)
    assert columns == ("name", "mobile")
    assert rows[0].values == {"name": "张三", "mobile": "13800138000"}


def test_header_names_are_stripped_and_a_bom_left_in_the_first_removed(tmp_path):
    # GB18030 has a BOM of its own, which nothing tells from text: the decoded file starts with it.
    path = write(tmp_path / "rows.csv", "\ufeff name ,mobile , 订单号\n张三,13800138000,1\n", "gb18030")
    assert read(path)[0] == ("name", "mobile", "订单号")
    xlsx = workbook(tmp_path / "rows.xlsx", ["\ufeffmobile", " name "])
    assert read(xlsx)[0] == ("mobile", "name")


def test_empty_names_after_the_last_column_are_dropped(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,,\n13800138000,张三,,\n")
    assert read(path) == (("mobile", "name"), [Row(2, {"mobile": "13800138000", "name": "张三"})])


def test_blank_lines_before_the_header_keep_the_row_numbers(tmp_path):
    path = write(tmp_path / "rows.csv", "\n,,\nmobile,name\n13800138000,张三\n")
    assert [row.number for row in read(path)[1]] == [4]


# Rows


def test_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path):
    text = 'mobile,name\n13800138000,"张\n三"\n\n , \n13800138001,李四\n'
    rows = read(write(tmp_path / "rows.csv", text))[1]
    assert rows == [
        Row(2, {"mobile": "13800138000", "name": "张\n三"}),  # one row, two lines
        Row(5, {"mobile": "13800138001", "name": "李四"}),  # rows 3 and 4 blank, skipped
    ]


def test_cells_are_stripped_and_an_empty_one_is_none(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,order\n 13800138000 ,\t张三 ,  \n")
    assert values(path) == [{"mobile": "13800138000", "name": "张三", "order": None}]


def test_a_short_row_has_its_missing_cells_none(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,order\n13800138000\n13800138001,李四\n")
    assert read(path)[1] == [
        Row(2, {"mobile": "13800138000", "name": None, "order": None}),
        Row(3, {"mobile": "13800138001", "name": "李四", "order": None}),
    ]


def test_a_long_row_has_a_problem(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name\n13800138000,张三,8812\n13800138001,李四,,\n")
    assert read(path)[1] == [
        Row(2, {"mobile": "13800138000", "name": "张三"}, "3 cells, the header has 2"),
        Row(3, {"mobile": "13800138001", "name": "李四"}),  # empty cells past the header: nothing lost
    ]


def test_a_spreadsheet_s_error_is_an_empty_cell(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,order\n13800138000,#N/A,#DIV/0!\n13800138001,#N/A?,#NAME?\n")
    assert values(path) == [
        {"mobile": "13800138000", "name": None, "order": None},
        {"mobile": "13800138001", "name": "#N/A?", "order": None},
    ]


@pytest.mark.parametrize("number", ["1.38001E+10", "1.38E+10", "1e+10", "1.38001e+10"])
def test_a_number_in_scientific_notation_has_a_problem(tmp_path, number):
    [row] = read(write(tmp_path / "rows.csv", f"mobile,name\n{number},张三\n"))[1]
    assert row.problem == (
        f"mobile {number} is in scientific notation, its last digits lost: "
        "format the column as text in the spreadsheet and save again"
    )


@pytest.mark.parametrize("number", ["+8613800138000", "13800138000", "138 0013 8000"])
def test_a_number_with_a_plus_or_spaces_is_left_to_the_send(tmp_path, number):
    [row] = read(write(tmp_path / "rows.csv", f"mobile,name\n{number},张三\n"))[1]
    assert row == Row(2, {"mobile": number, "name": "张三"})


def test_a_header_alone_has_no_rows(tmp_path):
    assert read(write(tmp_path / "rows.csv", "mobile,name\n")) == (("mobile", "name"), [])


# .xlsx


def workbook(path: Path, *rows: list, other_sheet: bool = False) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if other_sheet:
        book.create_sheet("second").append(["not", "read"])
    book.save(path)
    return path


def test_an_xlsx_gives_numbers_as_the_spreadsheet_shows_them(tmp_path):
    path = workbook(
        tmp_path / "rows.xlsx",
        ["手机号码", "姓名", "订单", "金额", "日期", "时间", "会员"],
        [13800138000, "张三", 8812, 12.5, date(2026, 12, 3), datetime(2026, 12, 3, 9, 30), True],
        [13800138001.0, " 李四 ", 8813.0, None, None, None, False],
        [13800138002, "#N/A", "#REF!", None, None, None, None],  # formulas that failed: error cells
    )
    columns, rows = read(path)
    assert columns == ("mobile", "姓名", "订单", "金额", "日期", "时间", "会员")
    assert [row.values for row in rows] == [
        dict(
            zip(
                columns,
                ["13800138000", "张三", "8812", "12.5", "2026-12-03", "2026-12-03 09:30:00", "TRUE"],
                strict=True,
            )
        ),
        dict(zip(columns, ["13800138001", "李四", "8813", None, None, None, "FALSE"], strict=True)),
        dict(zip(columns, ["13800138002", None, None, None, None, None, None], strict=True)),
    ]


def test_an_xlsx_s_blank_and_missing_rows_keep_the_row_numbers(tmp_path):
    path = tmp_path / "rows.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["A3"], sheet["B3"] = "mobile", "name"  # the header on row 3
    sheet["A4"], sheet["B4"] = "13800138000", "张三"
    sheet["A5"] = "  "
    sheet["A8"], sheet["D8"] = 13800138001, "x"  # a cell past the header
    book.save(path)
    columns, rows = read(path)
    assert columns == ("mobile", "name")
    assert rows == [
        Row(4, {"mobile": "13800138000", "name": "张三"}),
        Row(8, {"mobile": "13800138001", "name": None}, "4 cells, the header has 2"),
    ]


def test_an_xlsx_with_an_empty_column_a_names_it(tmp_path):
    path = workbook(tmp_path / "rows.xlsx", [None, "mobile"], [None, "13800138000"])
    with pytest.raises(RowsFileError, match=r"no name for column 1 \(A\)"):
        open_rows(path)


def test_only_the_first_sheet_of_a_workbook_is_read(tmp_path):
    path = workbook(tmp_path / "rows.xlsx", ["mobile"], ["13800138000"], other_sheet=True)
    assert values(path) == [{"mobile": "13800138000"}]


def test_the_suffix_is_read_in_any_case(tmp_path):
    assert values(workbook(tmp_path / "ROWS.XLSX", ["mobile"], [13800138000])) == [{"mobile": "13800138000"}]
    assert values(write(tmp_path / "ROWS.CSV", "mobile\n13800138000\n")) == [{"mobile": "13800138000"}]


@needs_proc
@pytest.mark.parametrize("name", ["rows.csv", "rows.xlsx"])
def test_the_file_is_closed_after_its_rows_and_after_a_refused_header(tmp_path, name):
    good, bad = tmp_path / name, tmp_path / f"bad-{name}"
    if name.endswith(".xlsx"):
        workbook(good, ["mobile"], ["13800138000"])
        workbook(bad, ["name"], ["张三"])
    else:
        write(good, "mobile\n13800138000\n")
        write(bad, "name\n张三\n")
    with open_rows(good) as rows:
        assert open_descriptors_of(good)
        next(iter(rows))
    assert open_descriptors_of(good) == []
    with pytest.raises(RowsFileError):
        open_rows(bad)
    assert open_descriptors_of(bad) == []


# What cannot be read: one line each


def refusal(path: Path) -> str:
    with pytest.raises(RowsFileError) as refused:
        read(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(str(path))
    return message[len(str(path)) :]


def test_a_missing_file(tmp_path):
    assert refusal(tmp_path / "rows.csv") == ": no such file"


def test_a_directory(tmp_path):
    (tmp_path / "rows.csv").mkdir()
    assert refusal(tmp_path / "rows.csv") == ": a directory, not a file"


def test_a_file_under_a_file(tmp_path):
    write(tmp_path / "rows.csv", "mobile\n")
    assert refusal(tmp_path / "rows.csv" / "rows.csv") == ": cannot be read: Not a directory"


def test_an_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "rows.csv", "mobile\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root reads a file whatever its mode: the refusal is the operating system's, stood in for.
    monkeypatch.setattr(rows_module, "io", SimpleNamespace(FileIO=refuse, BufferedReader=io.BufferedReader))
    assert refusal(path) == ": cannot be read: permission denied"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rows.json", ": not a rows file; use .csv, .tsv, .txt or .xlsx"),
        ("rows", ": not a rows file; use .csv, .tsv, .txt or .xlsx"),
        ("rows.xls", ": an Excel 97-2003 workbook (.xls) is not read; save it as .xlsx or CSV"),
    ],
)
def test_a_format_not_read(tmp_path, name, message):
    assert refusal(write(tmp_path / name, "mobile\n13800138000\n")) == message


@pytest.mark.parametrize(
    "content",
    [b"", b"mobile,name\n13800138000,x\n", b"PK\x03\x04 not really a zip"],
    ids=["empty", "csv", "broken zip"],
)
def test_a_file_that_is_not_a_valid_workbook(tmp_path, content):
    path = tmp_path / "rows.xlsx"
    path.write_bytes(content)
    assert refusal(path).startswith(": not a valid .xlsx workbook (")


def test_a_workbook_named_csv(tmp_path):
    xlsx = workbook(tmp_path / "rows.xlsx", ["mobile"], ["13800138000"])
    assert refusal(xlsx.rename(tmp_path / "rows.csv")) == (
        ": not CSV text but a zip archive, as an .xlsx workbook is: name a workbook .xlsx"
    )
    xls = tmp_path / "old.csv"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))  # an OLE2 file's header, as .xls has
    assert refusal(xls) == ": not CSV text but an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV"


@pytest.mark.parametrize("text", ["", "\n\n", " , \n,,\n"], ids=["empty", "blank lines", "blank cells"])
def test_a_file_without_a_header(tmp_path, text):
    assert refusal(write(tmp_path / "rows.csv", text)) == ": empty: no header row"


def test_a_header_without_a_number_column(tmp_path):
    path = write(tmp_path / "rows.csv", "a,b\n1,2\n")
    assert refusal(path) == ": no mobile column (one of: mobile, 手机号, 手机号码, 手机, 电话, phone); columns: a, b"


def test_a_header_with_two_number_columns(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,手机号\n")
    assert refusal(path) == ": more than one number column: mobile, 手机号"


def test_a_header_with_an_empty_name(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,,name, ,order\n")
    assert refusal(path) == ": the header has no name for column 2 (B), 4 (D)"


def test_a_header_naming_a_column_twice(tmp_path):
    path = write(tmp_path / "rows.csv", "mobile,name,order,name,order,x\n")
    assert refusal(path) == ": the header names name, order more than once"


def test_a_quote_never_closed_is_refused_at_its_row_not_read_to_the_end(tmp_path):
    text = 'mobile,name\n13800138000,a\n13800138001,"b\n' + "13800138002,c\n" * 20_000
    assert refusal(write(tmp_path / "rows.csv", text)) == ", row 3: field larger than field limit (131072)"


# Memory: a row at a time


def test_a_long_file_is_read_a_row_at_a_time(tmp_path):
    """200,000 rows: no row is kept once the next is read, and 20,000 rows read midway
    leave the memory held where it was (rows kept would take megabytes)."""
    path = tmp_path / "rows.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("mobile,name,order\n")
        f.writelines(f"138{i:08d},张{i},{i}\n" for i in range(200_000))
    with open_rows(path) as rows:
        for row in rows:
            if row.number == 100_000:
                alive = sum(isinstance(thing, Row) for thing in gc.get_objects())
                tracemalloc.start()
            elif row.number == 120_000:
                held, _ = tracemalloc.get_traced_memory()
                tracemalloc.stop()
    assert row.number == 200_001 and row.values["name"] == "张199999"
    assert alive == 1  # the row in hand
    assert held < 64 * 1024, f"{held / 1e6:.1f} MB held after 20,000 rows"

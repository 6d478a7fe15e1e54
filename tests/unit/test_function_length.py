"""No function in smsq runs over 60 lines, argument tables excepted: a longer one
hides steps that deserve names. Pure: reads the package's source, needs no service."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60

# Functions that are tables, read a row at a time, and lose nothing by their length.
ARGUMENT_TABLES = {
    "build_parser": "the smsq command's argparse table: one add_argument per option and subcommand",
}
# Folders of tables: each alembic revision's upgrade() is the schema as it changed that
# day, column by column, and is never edited again.
TABLE_FOLDERS = {
    "store/migrations/versions": "alembic revisions: create_table and add_column calls, one per column",
}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def package_files() -> list[Path]:
    """Every .py file of the smsq package (the folders pyproject.toml maps under it),
    the folders of tables left out."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        folders = tomllib.load(f)["tool"]["setuptools"]["package-dir"].values()
    tables = [ROOT / folder for folder in TABLE_FOLDERS]
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if not any(path.is_relative_to(table) for table in tables)
    )


def length(node: Function) -> int:
    """Lines from the ``def`` to the function's last line, its docstring not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def functions_of(source: str) -> list[Function]:
    """Every function in ``source``, nested ones and methods too."""
    return [node for node in ast.walk(ast.parse(source)) if isinstance(node, Function)]


def functions(path: Path) -> list[Function]:
    return functions_of(path.read_text(encoding="utf-8"))


def test_the_length_counts_from_def_to_the_last_line_without_the_docstring():
    [node] = functions_of('def f(a,\n      b):\n    """One.\n\n    Two."""\n    x = a\n\n    return x + b\n')
    assert length(node) == 5


def test_no_function_is_longer_than_60_lines():
    too_long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length(node)} lines)"
        for path in package_files()
        for node in functions(path)
        if length(node) > LIMIT and node.name not in ARGUMENT_TABLES
    ]
    assert not too_long, "split these into named steps:\n" + "\n".join(too_long)


def test_every_exception_still_names_something():
    names = {node.name for path in package_files() for node in functions(path)}
    assert set(ARGUMENT_TABLES) <= names
    assert all((ROOT / folder).is_dir() for folder in TABLE_FOLDERS)

"""``smsq send``'s texts: one ``--content``, or ``--template`` filled from each row of
``--rows`` (README, Personal texts); and ``--rejects``, every refusal written to a file."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smsq.tasks import send_sms
from smsq.tasks.personal import NumberedRow
from smsq.tasks.producer import Receipt

from ..rows import open_rows
from .common import send_options


def check_text_options(args) -> None:
    """One clear line (ValueError, exit 2) for texts asked for in a way that does not go together."""
    if args.rows is not None:
        if args.template is None:
            raise ValueError("--rows needs --template: the text with {variables} that each row fills")
        if args.content is not None:
            raise ValueError("--content sends one text; with --rows each number's text comes from --template")
    elif args.template is not None:
        raise ValueError("--template goes with --rows, the file whose rows fill it")
    elif args.content is None:
        raise ValueError("--content is required (or --template with --rows, a text per number)")


@contextmanager
def numbered_rows(path: str) -> Iterator[Iterator[NumberedRow]]:
    """The rows of ``--rows``: the file is opened and its header checked here, before
    anything is stored, then streamed a row at a time, each named by its row in the file
    as a spreadsheet shows it."""
    with open_rows(Path(path)) as rows:
        yield (NumberedRow(row.number, row.values, row.problem) for row in rows)


def send_rows(args) -> Receipt:
    """``--template`` with ``--rows``."""
    with numbered_rows(args.rows) as rows:
        return send_sms(args.account, template=args.template, rows=rows, **send_options(args))


def write_rejects(path: str, rejected: list[tuple[str, str]]) -> None:
    """Every rejected number (or row) with its reason, as CSV with a header (UTF-8 with a
    BOM, so that a spreadsheet opens the Chinese reasons as they are)."""
    try:
        with open(path, "w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["mobile", "reason"])
            writer.writerows(rejected)
    except OSError as exc:
        raise ValueError(f"cannot write the rejected numbers to {path}: {exc.strerror}") from None

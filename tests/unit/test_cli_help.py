"""What `smsq --help` and `smsq COMMAND --help` print, read from the parser the command
builds (tests/integration/test_cli.py runs the command itself for its help)."""

from __future__ import annotations

from smsq.cli import build_parser

from .conftest import subcommands


def help_of(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = subcommands(parser)[name]
    return parser.format_help()


def test_help_explains_the_operator_commands():
    assert all(c in help_of() for c in ("export", "batches", "cancel", "purge", "blocked"))
    for command, options in {
        "status": ["--number"],
        "settle": ["--batch", "--state"],
        "export": ["--state"],
        "batches": ["--limit", "--account", "--json"],
        "cancel": ["--json"],
        "purge": ["--older-than", "--dry-run", "--inbound", "--force"],
        "blocked": ["--account", "--add", "--remove", "--reason"],
    }.items():
        out = help_of(command)
        assert all(option in out for option in options), (command, out)

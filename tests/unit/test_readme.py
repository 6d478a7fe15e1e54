"""The README and the operator guide (docs/operator.md) say what the code does: the
guide's command-line synopsis, metrics table and environment table, and the README's
benchmark figures, are checked against the code and its measurements, so a change to
either that leaves the other behind fails here. No service needed."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from smsq.cli import build_parser
from smsq.providers.base import Outcome
from smsq.tasks.polls import KINDS
from smsq.worker import config as config_module

from ..conftest import PASSWORD, ROOT, apply_env, restore_env, write_config
from .conftest import subcommands

README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "operator.md").read_text(encoding="utf-8")


def section(title: str, text: str = GUIDE) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# -- the command line ---------------------------------------------------------


def synopsis() -> dict[str, str]:
    """`smsq COMMAND` -> its synopsis entries (a line and the indented lines after it)."""
    block = section("The command line").split("```")[1]
    entries: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("smsq "):
            command = line.split()[1]
            entries[command] = entries.get(command, "") + "\n" + line
        elif line.startswith(" ") and command:
            entries[command] += "\n" + line
    return entries


def options(parser: argparse.ArgumentParser) -> set[str]:
    """The long options of a command and of its own subcommands (`health url --timeout`)."""
    found = {
        opt for action in parser._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"
    }
    for sub in subcommands(parser).values():
        found |= options(sub)
    return found


def test_every_command_and_option_is_in_the_synopsis():
    entries = synopsis()
    missing = []
    for name, parser in subcommands(build_parser()).items():
        if name not in entries:
            missing.append(f"smsq {name}")
            continue
        missing += [
            f"smsq {name} {opt}"
            for opt in sorted(options(parser))
            if not re.search(rf"{re.escape(opt)}\b", entries[name])
        ]
        missing += [f"smsq {name} {sub}" for sub in subcommands(parser) if not re.search(rf"\b{sub}\b", entries[name])]
    assert not missing, f"missing from the guide's synopsis: {missing}"


def test_the_synopsis_names_no_command_or_option_the_cli_lacks():
    commands = subcommands(build_parser())
    for name, text in synopsis().items():
        assert name in commands, f"the guide's synopsis has `smsq {name}`, which does not exist"
        given = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
        assert given <= options(commands[name]), (name, given - options(commands[name]))


# -- the metrics -----------------------------------------------------------------


def metrics_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(smsq_\w+)` \|(.*)$", section("Metrics"), re.M)
    return dict(rows)


@pytest.fixture
def embedded(tmp_path):
    """An embedded installation: SQLite database and broker in tmp_path."""
    config = write_config(tmp_path / "smsq.toml", "http://127.0.0.1:9/")
    saved = apply_env(
        {
            "SMSQ_CONFIG": str(config),
            "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
            "SMSQ_HOME": str(tmp_path),
            "SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'smsq.db'}",
            "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        }
    )
    yield
    restore_env(saved)


def exposition_name(family) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def test_every_metric_and_every_state_it_labels_is_in_the_metrics_table(embedded):
    from smsq.cli.metrics import SmsqCollector
    from smsq.worker.config import settings

    rows = metrics_rows()
    families = SmsqCollector(settings()).collect()
    assert {exposition_name(f) for f in families} >= {"smsq_up", "smsq_chunks", "smsq_account_circuit"}
    for family in families:
        name = exposition_name(family)
        assert name in rows, f"{name} is exported but not in the guide's metrics table"
        for sample in family.samples:
            for label in ("state", "component", "queue", "kind"):
                value = sample.labels.get(label)
                assert value is None or f"`{value}`" in rows[name], f"{name}{{{label}={value!r}}} not in its row"
    # labels that only appear once there is data: every vendor outcome, every poll kind
    assert all(f"`{o.value}`" in rows["smsq_vendor_calls_total"] for o in Outcome)
    assert all(f"`{kind}`" in rows["smsq_poll_age_seconds"] for kind in KINDS)


def test_smsq_account_up_is_defined_once():
    # defined in the metrics table; any other mention only refers to it
    assert not re.search(r"`smsq_account_up`\s+(?:is|means|:)\s+[01]\b", README + GUIDE)
    assert "circuit is not closed" in metrics_rows()["smsq_account_up"]


# -- the environment -------------------------------------------------------------


def env_table() -> dict[str, str]:
    """Environment variable -> the guide's default for it."""
    table: dict[str, str] = {}
    for names, _meaning, default in re.findall(r"^\| ((?:`[A-Z_]+`(?:, )?)+) \| (.*) \| (.*) \|$", GUIDE, re.M):
        for name in re.findall(r"`([A-Z_]+)`", names):
            table[name] = default.strip()
    return table


def read_by_the_code() -> set[str]:
    names = set()
    for folder in ("tasks", "worker", "store", "scheduler", "providers", "smsq"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\"(SMSQ_[A-Z_]+)\"", path.read_text(encoding="utf-8")))
    return names - {"SMSQ_DEMO_PASSWORD"}  # the demo's own account, set by `smsq demo`


def test_every_setting_the_code_reads_is_in_the_environment_table():
    missing = read_by_the_code() - set(env_table())
    assert not missing, f"read by the code, not in the guide's environment table: {sorted(missing)}"


def test_the_environment_tables_defaults_are_the_codes(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("SMSQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SMSQ_CONFIG", str(tmp_path / "smsq.toml"))
    conf = config_module.load_settings()
    source = (ROOT / "worker" / "config.py").read_text(encoding="utf-8")
    numeric = re.findall(r"_number\(\"(SMSQ_[A-Z_]+)\"", source)
    assert "SMSQ_MAX_ATTEMPTS" in numeric
    table = env_table()
    for name in numeric:
        value = getattr(conf, name.removeprefix("SMSQ_").lower())
        assert table.get(name) == f"{value:g}", f"{name}: the guide says {table.get(name)!r}, the code {value:g}"


# -- the intake figures ------------------------------------------------------------


def test_the_million_number_intake_is_measured_in_one_place():
    """Its time and memory are said once, in the table `make bench` writes from
    bench/results; the rest of the README refers to it."""
    import json

    start, end = README.index("<!-- bench:begin -->"), README.index("<!-- bench:end -->")
    table, elsewhere = README[start:end], README[:start] + README[end:]
    measured = json.loads((ROOT / "bench" / "results" / "distributed-1000000.json").read_text())
    assert f"| {measured['send_sms']['wall_s']:.2f} s | raw `COPY` {measured['reference_s']:.2f} s |" in table
    assert not re.findall(
        r"[\d.]+\s*(?:times|×)[^.|]*raw `COPY`|\d+ MB\s+for the numbers|takes about a second", elsewhere
    )

"""`make install` (and so `make demo`, `make test`) as a user runs it: the
editable install prints nothing when it works, and still shows a real error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def editable_install_command(venv: Path) -> str:
    """The Makefile's own `pip install -e` line, as make would run it, into ``venv``:
    a virtualenv of the test's own, so the tests running beside this one keep the
    project's install of smsq (pip's --prefix or --target would still uninstall it)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    plan = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    [line] = [line for line in plan.stdout.splitlines() if "pip install" in line and " -e " in line]
    return line


def run(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_editable_install_prints_nothing_when_it_works(tmp_path):
    # --no-deps: the same build of smsq itself, without installing every dependency again
    done = run(editable_install_command(tmp_path / "venv") + " --no-deps")
    assert done.returncode == 0, done.stderr
    assert "Editable installation" not in done.stderr and "BuildBackendWarning" not in done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == ""


def test_the_editable_install_still_shows_a_real_error(tmp_path):
    broken = run(
        editable_install_command(tmp_path / "venv").replace("-e '.[test,sim,check]'", "-e './no-such-project'")
        + " --no-deps"
    )
    assert broken.returncode != 0 and "no-such-project" in broken.stderr

#!/usr/bin/env python3
"""Lay the repository's folders out as the installed package smsq, as symbolic links under
build/layout, with pyproject.toml beside them. `make check` runs mypy and lint-imports there.

The repository keeps smsq's subpackages in folders beside smsq/ that pyproject.toml's
package-dir maps under it (providers/ is smsq.providers, ...). mypy cannot read
package-dir, the editable install maps the folders with an import hook that neither
tool runs, and import-linter finds a package's modules in the package's own folder:
through these links both see the modules where an installed smsq has them. The
layout is rebuilt on every run, so a new module is always seen.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "build" / "layout"


def package_dirs() -> dict[str, str]:
    """pyproject.toml's package-dir: ``{"smsq.providers": "providers", ...}``."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def build_layout(target: Path = LAYOUT) -> dict[str, str]:
    """The links under ``target``; returns each link folder's path prefix (relative to the
    repository) -> the repository folder's, longest first, for translating reports."""
    dirs = package_dirs()
    shutil.rmtree(target, ignore_errors=True)
    root_pkg = target / "smsq"
    root_pkg.mkdir(parents=True)
    for entry in (ROOT / dirs["smsq"]).iterdir():  # the root package's files and its own subpackages (smsq.cli)
        if entry.name != "__pycache__":
            (root_pkg / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    prefixes = {f"{root_pkg.relative_to(ROOT)}/": f"{dirs['smsq']}/"}
    for package, folder in dirs.items():
        if package != "smsq":
            link = target.joinpath(*package.split("."))
            link.symlink_to(ROOT / folder, target_is_directory=True)
            prefixes[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    (target / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")  # lint-imports reads its contracts there
    return dict(sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True))


if __name__ == "__main__":
    build_layout(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else LAYOUT)

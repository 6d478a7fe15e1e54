"""mypy over the smsq package, as `make check` runs it.

The repository's folders become subpackages of smsq only through pyproject.toml's
package-dir, which mypy cannot read, and the editable install maps them with an
import hook, which mypy does not run. So this builds the package's layout from
symbolic links under build/mypy-tree (rebuilt every run, so a new module is always
seen), runs `mypy -p smsq` there with pyproject.toml's [tool.mypy] settings, and
prints every finding with its repository path (``providers/qxs.py``, not the link's).
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "mypy-tree"


def package_dirs() -> dict[str, str]:
    """pyproject.toml's package-dir: ``{"smsq.providers": "providers", ...}``."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def build_tree(dirs: dict[str, str]) -> dict[str, str]:
    """The links under TREE; returns each link folder's prefix -> the repository folder's."""
    shutil.rmtree(TREE, ignore_errors=True)
    root_pkg = TREE / "smsq"
    root_pkg.mkdir(parents=True)
    for entry in (ROOT / dirs["smsq"]).iterdir():
        if entry.suffix == ".py":
            (root_pkg / entry.name).symlink_to(entry)
    prefixes = {f"{root_pkg.relative_to(ROOT)}/": f"{dirs['smsq']}/"}
    for package, folder in dirs.items():
        if package == "smsq":
            continue
        link = TREE.joinpath(*package.split("."))
        link.symlink_to(ROOT / folder, target_is_directory=True)
        prefixes[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    return prefixes


def repository_paths(report: str, prefixes: dict[str, str]) -> str:
    # longest prefix first: build/mypy-tree/smsq/providers/ before build/mypy-tree/smsq/
    ordered = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)
    lines = []
    for line in report.splitlines(keepends=True):
        for link, folder in ordered:
            if line.startswith(link):
                line = folder + line[len(link) :]
                break
        lines.append(line)
    return "".join(lines)


def main(argv: list[str]) -> int:
    prefixes = build_tree(package_dirs())
    os.chdir(ROOT)
    os.environ["MYPYPATH"] = str(TREE.relative_to(ROOT))
    stdout, stderr, status = api.run(["-p", "smsq", *argv])
    sys.stdout.write(repository_paths(stdout, prefixes))
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

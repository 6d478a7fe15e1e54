"""mypy over the smsq package, as `make check` runs it.

The repository's folders become subpackages of smsq only through pyproject.toml's
package-dir, which mypy cannot read (tools/layout.py). So this lays the package
out under build/layout, runs `mypy -p smsq` there with pyproject.toml's [tool.mypy] settings, and
prints every finding with its repository path (``providers/qxs.py``, not the link's).
"""

from __future__ import annotations

import os
import sys

from layout import LAYOUT, ROOT, build_layout
from mypy import api


def repository_paths(report: str, prefixes: dict[str, str]) -> str:
    lines = []
    for line in report.splitlines(keepends=True):
        for link, folder in prefixes.items():  # longest first: .../smsq/providers/ before .../smsq/
            if line.startswith(link):
                line = folder + line[len(link) :]
                break
        lines.append(line)
    return "".join(lines)


def main(argv: list[str]) -> int:
    prefixes = build_layout()
    os.chdir(ROOT)
    os.environ["MYPYPATH"] = str(LAYOUT.relative_to(ROOT))
    stdout, stderr, status = api.run(["-p", "smsq", *argv])
    sys.stdout.write(repository_paths(stdout, prefixes))
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

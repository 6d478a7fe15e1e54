"""docs/architecture.md shows the chunk and recipient state diagrams as store/lifecycle.py's
transition tables have them (drawn by tools/state_diagram.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def drawing_tool():
    spec = importlib.util.spec_from_file_location("state_diagram", ROOT / "tools" / "state_diagram.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_page_draws_the_transition_tables_as_they_are():
    tool = drawing_tool()
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert page == tool.page_with_diagrams(page), "run: python tools/state_diagram.py --write"
    for drawing in tool.diagrams().values():
        assert drawing in page


def test_every_allowed_move_is_an_arrow_and_only_those():
    from smsq.store.lifecycle import CHUNK_TRANSITIONS

    drawing = drawing_tool().diagrams()["chunk"]
    arrows = {tuple(line.split(":")[0].split(" --> ")) for line in drawing.splitlines() if " --> " in line}
    allowed = {(str(a), str(b)) for a, moves in CHUNK_TRANSITIONS.items() for b in moves}
    assert allowed <= {(a.strip(), b) for a, b in arrows}
    assert ("pending", "accepted") not in {(a.strip(), b) for a, b in arrows}  # only through a claim

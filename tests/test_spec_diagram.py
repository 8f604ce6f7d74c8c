"""§5: the state diagram in specs/protocol.md is exactly ``rudp.core.state.to_mermaid()``.

The diagram is generated from the code's transition table by
specs/render_state_diagram.py; these tests fail when someone edits the table
without regenerating the spec (or edits the diagram by hand).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from rudp.core.state import to_mermaid

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_state_diagram", SPECS / "render_state_diagram.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _embedded_diagram(text: str, begin: str, end: str) -> str:
    """The body of the mermaid fence between the markers, fence lines removed."""
    assert text.count(begin) == 1 and text.count(end) == 1
    block = text.split(begin, 1)[1].split(end, 1)[0]
    lines = block.strip("\n").split("\n")
    assert lines[0] == "```mermaid" and lines[-1] == "```", "diagram must be one mermaid fence"
    return "\n".join(lines[1:-1]) + "\n"


def test_s5_embedded_diagram_equals_to_mermaid() -> None:
    """§5: the mermaid block in protocol.md equals rudp.core.state.to_mermaid() exactly."""
    renderer = _load_renderer()
    text = (SPECS / "protocol.md").read_text(encoding="utf-8")
    assert _embedded_diagram(text, renderer.BEGIN, renderer.END) == to_mermaid()


def test_s5_renderer_is_a_fixed_point_on_the_spec() -> None:
    """§5: regenerating the diagram would not change protocol.md (it is up to date)."""
    renderer = _load_renderer()
    text = (SPECS / "protocol.md").read_text(encoding="utf-8")
    assert renderer.render(text) == text


def test_s5_renderer_replaces_a_stale_diagram(tmp_path: Path) -> None:
    """§5: the renderer rewrites only the block between the markers."""
    renderer = _load_renderer()
    stale = f"intro\n{renderer.BEGIN}\n```mermaid\nstateDiagram-v2\n```\n{renderer.END}\noutro\n"
    target = tmp_path / "spec.md"
    target.write_text(stale, encoding="utf-8")
    assert renderer.main(["--check", "--spec", str(target)]) == 1
    assert renderer.main(["--spec", str(target)]) == 0
    fresh = target.read_text(encoding="utf-8")
    assert fresh.startswith("intro\n") and fresh.endswith("outro\n")
    assert _embedded_diagram(fresh, renderer.BEGIN, renderer.END) == to_mermaid()
    assert renderer.main(["--check", "--spec", str(target)]) == 0

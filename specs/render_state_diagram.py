"""Regenerate the state diagram in specs/protocol.md from ``rudp.core.state.to_mermaid()``.

The diagram is the connection's transition table drawn by the code that owns
it, so the spec cannot drift from the implementation (h11 draws its state
diagrams the same way).  Only the lines between the two marker comments are
rewritten.

Usage::

    python specs/render_state_diagram.py          # rewrite protocol.md in place
    python specs/render_state_diagram.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rudp.core.state import to_mermaid

SPEC = Path(__file__).with_name("protocol.md")
BEGIN = "<!-- BEGIN GENERATED STATE DIAGRAM: specs/render_state_diagram.py -->"
END = "<!-- END GENERATED STATE DIAGRAM -->"


def diagram_block() -> str:
    """The fenced mermaid block that belongs between the markers."""
    return "```mermaid\n" + to_mermaid() + "```\n"


def render(text: str) -> str:
    """Return ``text`` with the block between the markers replaced by ``diagram_block()``.

    Raises ``ValueError`` unless each marker occurs exactly once, BEGIN first.
    """
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError("protocol.md must contain each diagram marker exactly once")
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{diagram_block()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` verify) the diagram in protocol.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    parser.add_argument("--spec", type=Path, default=SPEC, help="the markdown file to update")
    args = parser.parse_args(argv)
    text = args.spec.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.spec}: state diagram is out of date; run {Path(__file__).name}")
            return 1
        return 0
    if new != text:
        args.spec.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

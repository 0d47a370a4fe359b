"""Render the hook reference of docs/plugins.md from the hook specs' docstrings.

    python docs/hook_reference.py          # print the reference
    python docs/hook_reference.py --write  # update the section in docs/plugins.md

tests/core/test_hookspecs.py fails when the docs and the docstrings disagree.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from mm_core import hookspecs

BEGIN, END = "<!-- hook-reference:begin -->", "<!-- hook-reference:end -->"
DOC = Path(__file__).with_name("plugins.md")


def spec_names() -> list[str]:
    """Hook spec names in the order they are declared."""
    functions = [fn for _, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "mm_spec")]
    return [fn.__name__ for fn in sorted(functions, key=lambda fn: fn.__code__.co_firstlineno)]


def render() -> str:
    parts = [BEGIN, ""]
    for name in spec_names():
        fn = getattr(hookspecs, name)
        signature = str(inspect.signature(fn)).replace("'", "")
        parts += [f"### `{name}{signature}`", "", inspect.getdoc(fn) or "", ""]
    parts.append(END)
    return "\n".join(parts)


def current_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = DOC.read_text()
        DOC.write_text(text.replace(current_section(text), render()))
    else:
        print(render())

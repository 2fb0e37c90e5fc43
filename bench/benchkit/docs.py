"""Report text: templates in bench/templates/ (string.Template, `$name` placeholders) filled from
the figures a run measured, and the sections of docs/benchmarks.md each script owns.

Every sentence with a number or a comparison in it is a template fed by the measurement: `render`
uses `substitute`, so a placeholder without a figure is an error, never stale text."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template

from benchkit import TEMPLATES

HEADER = "# Benchmarks\n\nFigures written by the scripts in `bench/`; rerun them to refresh.\n\n"


def render(name: str, figures: Mapping[str, object]) -> str:
    """bench/templates/`name` with every `$placeholder` replaced (KeyError if one has no figure)."""
    template = Template((TEMPLATES / name).read_text())
    return template.substitute({key: str(value) for key, value in figures.items()})


def table(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    """A markdown table; `align` per column, e.g. "---" or "---:"."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdict(ok: bool, met: str = "**met**", not_met: str = "**not met**") -> str:
    return met if ok else not_met


def write_section(path: Path, start: str, end: str, section: str, before_marker: str | None = None) -> None:
    """Replace the block between the `start` and `end` lines of `path` with `section`; a new block goes
    just before the line starting with `before_marker` if there is one, else at the end."""
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + ("\n" + tail.lstrip("\n") if tail.strip() else "")
    elif before_marker and before_marker in text:
        head, tail = text.split(before_marker, 1)
        text = head + block + "\n" + before_marker + tail
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)

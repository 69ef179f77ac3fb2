"""Shared by the benchmark scripts: regenerate one section of docs/performance.md."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_section(heading: str, body: str) -> None:
    """Replaces the section titled `heading` ("## ...") of docs/performance.md with `body`
    (which starts with that heading); appends it if missing; other sections are kept."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")),
                   len(lines))
        tail = "\n".join(lines[end:])
        new = "\n".join(lines[:start]) + "\n" + body + ("\n" + tail if tail else "")
    DOC.write_text(new.rstrip("\n") + "\n")

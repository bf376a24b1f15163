"""Replace one benchmark script's section of ``docs/benchmarks.md`` (between its HTML-comment markers)."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(marker: str, lines: list[str], doc: Path = DOC) -> None:
    """Put ``lines`` between ``<!-- {marker}: start -->`` and ``<!-- {marker}: end -->`` (appended when the
    markers are missing)."""
    start, end = f"<!-- {marker}: start -->", f"<!-- {marker}: end -->"
    block = "\n".join([start, *lines, end])
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nTables written by the scripts in `benchmarks/`.\n"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)

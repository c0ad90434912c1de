"""Generated sections of BENCHMARKS.md: a report renders its Markdown between two HTML comment
markers, and rerunning the report replaces exactly that text (everything else is kept)."""

from __future__ import annotations

from pathlib import Path


def markers(key: str) -> tuple[str, str]:
    """The begin and end markers of the section ``key``."""
    return f"<!-- {key}:begin -->", f"<!-- {key}:end -->"


def update_section(path: Path, key: str, text: str, heading: str) -> None:
    """Put ``text`` between the markers of ``key`` in ``path``: replacing the marked section if
    there is one, else appending it under ``heading`` (a Markdown heading line)."""
    begin, end = markers(key)
    doc = path.read_text()
    body = f"{begin}\n\n{text.strip()}\n\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + body + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + f"\n\n{heading}\n\n{body}\n"
    path.write_text(doc)

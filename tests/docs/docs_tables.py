"""Read the Markdown tables of the docs, so tests can hold them equal to the code they describe."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def cells(line: str) -> list[str]:
    """The cells of one table row, stripped; ``\\|`` inside a cell stays a literal ``|``."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    parts = inner.replace("\\|", "\0").split("|")
    return [p.replace("\0", "|").strip() for p in parts]


def table(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of the first table whose header row is exactly ``header`` (ValueError if there is none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and cells(line) == header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.lstrip().startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    raise ValueError(f"no table with header {header}")


def code_items(cell: str) -> list[str]:
    """The backticked items of a cell (``"`a`, `b`"`` -> ``["a", "b"]``); ``-`` means none."""
    return [part for i, part in enumerate(cell.split("`")) if i % 2 == 1]


def tables(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of every table whose header row is exactly ``header``, concatenated."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and cells(line) == header:
            rows += table("\n".join(lines[i:]), header)
    return rows

"""docs/migration.md lists every old option with the mapping the command really uses (the table)."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_aero_virtio.compat import table

DOC = Path(__file__).resolve().parents[2] / "docs" / "migration.md"
BEGIN, END = "<!-- compat-table:begin -->", "<!-- compat-table:end -->"
REGENERATE = "regenerate it with: python -m pytest_aero_virtio.compat.table"


def doc_rows() -> list[str]:
    text = DOC.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"{DOC} must hold one generated option table"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines()


def flags_of(row: str) -> list[str]:
    first_cell = re.split(r"(?<!\\)\|", row)[1]
    return re.findall(r"`(--[a-z0-9-]+)`", first_cell)


def test_every_old_option_is_in_the_doc_and_no_other() -> None:
    documented = [flag for row in doc_rows()[2:] for flag in flags_of(row)]
    assert len(documented) == len(set(documented)), "an option is documented twice"
    missing = set(table.by_flag()) - set(documented)
    extra = set(documented) - set(table.by_flag())
    assert not missing and not extra, f"missing: {sorted(missing)}, not in the table: {sorted(extra)}; {REGENERATE}"


def test_each_option_has_the_tables_mapping() -> None:
    expected = set(table.markdown_rows())
    changed = [row for row in doc_rows() if row not in expected]
    assert not changed, f"rows that differ from the table: {changed}; {REGENERATE}"
    assert doc_rows() == table.markdown_rows(), f"the rows are out of order or incomplete; {REGENERATE}"

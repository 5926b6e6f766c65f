"""docs/protocol.md must not drift from the code: its tables are compared with the catalog, the reactions,
the host topics, the tokens and the reference guest's arguments, row by row.

The table of checks is hand-written Markdown (readable on GitHub and in the built docs alike) and held equal
to ``checks.CATALOG`` here rather than generated: a missing, extra or changed check fails with the row to fix.
"""

from __future__ import annotations

import re

import pytest
from aero_selftest import config as guest_config
from docs_tables import DOCS, cells, code_items, table, tables

from pytest_aero_virtio.actions import ACTIONS
from pytest_aero_virtio.actions.mirror import PARTS, WHOLE
from pytest_aero_virtio.checks import BASE_CHECKS, CATALOG, GuestCheck
from pytest_aero_virtio.errors import ALL_FIXED_TOKENS

TEXT = (DOCS / "protocol.md").read_text(encoding="utf-8")
CHECKS_HEADER = ["check", "device", "guest flags", "host reaction", "expect", "with RESULT", "VM needs"]
DETAIL_HEADER = ["check", "the guest", "fields", "`vmm_flows` asserts"]
REACTIONS_HEADER = ["reaction", "answers", "the host does", "host markers", "failure token in the marker"]
TOPICS_HEADER = ["topic", "statuses", "fields"]
TOKENS_HEADER = ["token", "meaning"]
ARGS_HEADER = ["argument", "meaning"]


def _expected_row(c: GuestCheck) -> dict[str, object]:
    needs = set()
    if c.tablet:
        needs.add("tablet")
    if c.snd:
        needs.add("sound")
    if c.audio is not None:
        needs.add(f"-audiodev {c.audio}")
    return {
        "device": c.device,
        "flags": sorted(f"--{f}" for f in c.guest_flags),
        "reactions": sorted(c.reactions),
        "expect": {"pass": "PASS", "info": "INFO or PASS"}[c.expect],
        "with RESULT": "always" if c.base else ("when provisioned" if c.opt_in else "no"),
        "needs": needs,
    }


def _documented_row(row: list[str]) -> dict[str, object]:
    _name, device, flags, reactions, expect, with_result, needs = row
    return {
        "device": device,
        "flags": sorted(code_items(flags)),
        "reactions": sorted(code_items(reactions)),
        "expect": expect,
        "with RESULT": with_result,
        "needs": {n.strip().strip("`") for n in needs.split(",") if n.strip() not in ("", "-")},
    }


def test_checks_table_lists_exactly_the_catalog_in_order() -> None:
    names = [code_items(row[0])[0] for row in table(TEXT, CHECKS_HEADER)]
    missing = [n for n in CATALOG if n not in names]
    extra = [n for n in names if n not in CATALOG]
    assert not missing and not extra, f"docs/protocol.md checks table: missing {missing}, not in CATALOG {extra}"
    assert names == list(CATALOG), "docs/protocol.md lists the checks in another order than checks.CATALOG"


@pytest.mark.parametrize("name", list(CATALOG))
def test_checks_table_row_matches_the_catalog(name: str) -> None:
    rows = {code_items(row[0])[0]: row for row in table(TEXT, CHECKS_HEADER)}
    assert name in rows, f"docs/protocol.md has no row for {name}"
    assert _documented_row(rows[name]) == _expected_row(CATALOG[name]), f"docs/protocol.md row of {name}"


def test_result_list_names_the_base_checks() -> None:
    section = TEXT.split("## RESULT", 1)[1].split("\n## ", 1)[0]
    item = next(line for line in section.splitlines() if 'with "always"' in line)
    following = section[section.index(item) :].split("\n3.", 1)[0]
    assert sorted(re.findall(r"`(virtio-[a-z-]+)`", following)) == sorted(BASE_CHECKS)


def test_every_check_has_a_detail_row() -> None:
    detailed = [code_items(row[0])[0] for row in tables(TEXT, DETAIL_HEADER)]
    assert sorted(detailed) == sorted(CATALOG), "the per-device tables must have one row per catalog check"


def test_reactions_table_matches_actions() -> None:
    rows = {code_items(row[0])[0]: row for row in table(TEXT, REACTIONS_HEADER)}
    assert sorted(rows) == sorted(ACTIONS), "one row per name in actions.ACTIONS"
    for name, reaction in ACTIONS.items():
        if reaction.name != name:
            continue  # an alias widening another reaction: documented, no topic of its own
        _n, answers, _does, markers, token = rows[name]
        assert reaction.topic in code_items(markers), f"{name}: topic {reaction.topic}"
        assert code_items(token) == [reaction.token], f"{name}: token {reaction.token}"
        checks = [c.name for c in CATALOG.values() if name in c.reactions]
        assert any(f"`{c}|READY`" in answers for c in checks), f"{name} answers one of {checks}|READY"


def test_host_topics_table_lists_every_topic_the_host_records() -> None:
    documented = {item for row in table(TEXT, TOPICS_HEADER) for item in code_items(row[0])}
    recorded = {r.topic for r in ACTIONS.values()} | set(WHOLE.values()) | {t for v in PARTS.values() for t, _ in v}
    recorded.add("QEMU_PCI_PREFLIGHT")  # testing.AeroVm.pci_preflight
    assert documented == recorded


def test_tokens_table_has_every_fixed_token() -> None:
    documented = {item for row in table(TEXT, TOKENS_HEADER) for item in code_items(row[0])}
    assert documented >= ALL_FIXED_TOKENS, sorted(ALL_FIXED_TOKENS - documented)
    for family in ("MISSING_<TEST>", "<TEST>_FAILED", "<TEST>_SKIPPED", "MISSING_MARKER", "NO_SERIAL_OUTPUT"):
        assert family in documented


def test_guest_arguments_table_covers_the_reference_guest_and_the_catalog() -> None:
    documented = {
        re.sub(r"=.*", "", item).removeprefix("--") for row in table(TEXT, ARGS_HEADER) for item in code_items(row[0])
    }
    known = set(guest_config.FLAGS) | set(guest_config.VALUED) | set(guest_config.FLAG_ALIASES)
    assert known <= documented, sorted(known - documented)
    assert {f for c in CATALOG.values() for f in c.guest_flags} <= documented


def test_cells_keep_escaped_pipes() -> None:
    assert cells("| `a\\|b` | c |") == ["`a|b`", "c"]

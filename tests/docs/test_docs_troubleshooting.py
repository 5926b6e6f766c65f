"""docs/troubleshooting.md has an entry for every failure token the plugin can emit.

The tokens are collected from the code, not from a list kept beside it: every constant of
``errors.ALL_FIXED_TOKENS``, the per-check families of ``errors.py``, and every token spelled anywhere else in
the package (a ``NAME = "NAME"`` constant, a string literal given as a failure's token, an f-string starting
with ``FAIL: <TOKEN>:``). A new token without an entry fails here with its name and the file that spells it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from docs_tables import DOCS

import pytest_aero_virtio
from pytest_aero_virtio.errors import (
    ALL_FIXED_TOKENS,
    bad_field_token,
    failed_token,
    host_status_token,
    missing_host_token,
    missing_token,
    skipped_token,
)

TEXT = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
PACKAGE = Path(pytest_aero_virtio.__file__).parent
TOKEN = re.compile(r"<?[A-Z][A-Z0-9]*>?(?:_<?[A-Z0-9]+>?)+")
#: The per-check families of errors.missing_token & co., as the docs write them.
FAMILIES = {"MISSING_<TEST>", "<TEST>_FAILED", "<TEST>_SKIPPED", "<TEST>_BAD_FIELD"}


def _headings() -> set[str]:
    return set(re.findall(r"^#{2,4} `([^`]+)`\s*$", TEXT, flags=re.MULTILINE))


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _placeholder(value: ast.FormattedValue) -> str:
    return "<" + re.split(r"\W", ast.unparse(value.value))[-1].upper() + ">"


def _tokens_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.Constant) and node.value.value == node.targets[0].id:
                found.add(node.targets[0].id)
        elif isinstance(node, ast.Call):
            first = node.args[0] if node.args else None
            if re.search(r"fail|error", _callee(node), re.IGNORECASE) and isinstance(first, ast.Constant):
                found.add(str(first.value))
            for kw in node.keywords:
                if kw.arg == "token" and isinstance(kw.value, ast.Constant):
                    found.add(str(kw.value.value))
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and str(head.value).startswith("FAIL: "):
                text = "".join(
                    str(p.value) if isinstance(p, ast.Constant) else _placeholder(p)
                    for p in node.values
                    if isinstance(p, ast.Constant | ast.FormattedValue)
                )
                found.add(text.removeprefix("FAIL: ").split(":", 1)[0])
    return {t for t in found if TOKEN.fullmatch(t) and t != "<TOKEN>"}


def _spelled_tokens() -> dict[str, str]:
    where: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for token in _tokens_in(ast.parse(path.read_text(encoding="utf-8"))):
            where.setdefault(token, str(path.relative_to(PACKAGE.parent)))
    return where


def test_every_fixed_token_has_an_entry() -> None:
    missing = sorted(ALL_FIXED_TOKENS - _headings())
    assert not missing, f"docs/troubleshooting.md has no '### `TOKEN`' heading for {missing}"


def test_every_per_check_family_has_an_entry() -> None:
    # The families are what errors.py builds from a check name (<TEST> = its name_token).
    built = (missing_token("x-y"), failed_token("x-y"), skipped_token("x-y"), bad_field_token("x-y"))
    assert built == ("MISSING_X_Y", "X_Y_FAILED", "X_Y_SKIPPED", "X_Y_BAD_FIELD")
    assert _headings() >= FAMILIES


def test_every_token_spelled_in_the_package_has_an_entry() -> None:
    spelled = _spelled_tokens()
    missing = {t: where for t, where in spelled.items() if t not in _headings()}
    assert not missing, f"tokens without an entry in docs/troubleshooting.md: {missing}"


def test_every_host_token_family_has_an_entry() -> None:
    # errors.py builds these from a host topic (and the status the host recorded instead).
    assert missing_host_token("VIRTIO_X") == "MISSING_HOST_VIRTIO_X"
    assert host_status_token("VIRTIO_X", "FAIL") == "VIRTIO_X_FAIL"
    assert _headings() >= {"MISSING_HOST_<TOPIC>", "<TOPIC>_<STATUS>"}


def test_the_scan_finds_the_tokens_errors_py_spells() -> None:
    # Every token is spelled in errors.py (a repository test enforces it); if the scan stops finding those
    # constants, it has gone blind and the test above proves nothing.
    assert {"VM_BOOT_FAILED", "NO_SERIAL_OUTPUT", "MISSING_MARKER", "QEMU_EXITED"} <= set(_spelled_tokens())


def test_the_scan_reads_each_kind_of_spelling() -> None:
    tree = ast.parse(
        'A_B = "A_B"\n'
        'x = AeroFailure("C_D", "m")\n'
        'y = Reaction(token="E_F")\n'
        'z = f"FAIL: G_{topic}: ..."\n'
        'NOT_ONE = "other"\n'
    )
    assert _tokens_in(tree) == {"A_B", "C_D", "E_F", "G_<TOPIC>"}


def test_the_guides_token_list_names_every_token() -> None:
    """docs/guide.md's "Failure tokens" list is the user's index: every token the plugin can emit is in it."""
    guide = (DOCS / "guide.md").read_text(encoding="utf-8")
    section = guide.split("## Failure tokens", 1)[1]
    listed = set(re.findall(r"`([^`]+)`", section))
    families = FAMILIES | {"MISSING_HOST_<TOPIC>", "<TOPIC>_<STATUS>", "<TEST>_BAD_FIELD"}
    missing = sorted((ALL_FIXED_TOKENS | set(_spelled_tokens()) | families) - listed)
    assert not missing, f"docs/guide.md's failure token list lacks {missing}"

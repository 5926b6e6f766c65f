"""The house rules of the package, enforced: small functions and modules, every token and host topic spelled
once, pytest's private internals in one module, and a design page that names only what exists."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytest_aero_virtio
from pytest_aero_virtio import errors
from pytest_aero_virtio.actions import topics

PACKAGE = Path(pytest_aero_virtio.__file__).parent
REPO = PACKAGE.parent
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_no_function_longer_than_60_lines_and_no_module_longer_than_500() -> None:
    long_functions, long_modules = [], []
    for path in modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{rel(path)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel(path)}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def _string_constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


#: What a token looks like: the fixed ones, and the per-check families.
_TOKEN_SHAPE = re.compile(r"^(MISSING_[A-Z0-9_]+|[A-Z0-9_]+_(FAILED|SKIPPED|MISMATCH|UNSUPPORTED|EXITED))$")


def test_failure_tokens_are_spelled_only_in_errors_py() -> None:
    """CI greps these words; a second spelling is how a token silently drifts."""
    fixed = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)}
    found = []
    for path in modules():
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for line, value in _string_constants(path):
            if value in fixed or _TOKEN_SHAPE.match(value) or value.startswith(("MISSING_HOST_", "FAIL: ")):
                found.append(f"{rel(path)}:{line}: {value!r}")
    assert not found, f"token literals outside errors.py (import the constant instead): {found}"


def test_host_topics_are_spelled_only_in_topics_py() -> None:
    all_topics = {value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}
    found = []
    for path in [*modules(), *sorted((REPO / "vmm_flows").glob("*.py"))]:
        if path == Path(topics.__file__):
            continue
        for line, value in _string_constants(path):
            if value in all_topics:
                found.append(f"{rel(path)}:{line}: {value!r}")
    assert not found, f"host topic literals outside actions/topics.py: {found}"


_PRIVATE = re.compile(r"\b_pytest\b|\._nodeid\b|\bitem\._id\b|_global_capturing|targetfd_save")


def test_pytest_private_internals_are_confined_to_one_module() -> None:
    found = []
    for path in modules():
        if path.name == "_pytest_internals.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _PRIVATE.search(line):
                found.append(f"{rel(path)}:{number}: {line.strip()}")
    assert not found, found


#: Where a child process may be started: QEMU and its probes (own process group, death signal, group kill),
#: and the yardstick ``aero-virtio-refenv bare --run``, a plain command that shares the user's terminal session
#: on purpose (Ctrl-C reaches its QEMU as it would reach a QEMU typed by hand).
_SPAWNERS = {"pytest_aero_virtio/qemu/process.py", "pytest_aero_virtio/refenv/bare.py"}
_SPAWN_CALLS = {"run", "Popen", "call", "check_call", "check_output", "system", "fork", "posix_spawn"}


def test_children_are_started_only_where_their_process_group_is_managed() -> None:
    """Every other module goes through ``run_child``: no apt-get, mkfs or probe can outlive an interrupted run."""
    found = []
    for path in modules():
        if rel(path) in _SPAWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("subprocess", "os") and node.func.attr in _SPAWN_CALLS:
                found.append(f"{rel(path)}:{node.lineno}: {owner.id}.{node.func.attr}")
            elif node.func.attr.startswith("create_subprocess"):
                found.append(f"{rel(path)}:{node.lineno}: {node.func.attr}")
    assert not found, f"children started outside qemu/process.py (use run_child): {found}"


def _defined_classes() -> set[str]:
    names: set[str] = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
    return names


def test_design_page_names_only_modules_and_classes_that_exist() -> None:
    """docs/design.md is read to learn the code: every module path and class name it cites in backticks
    (``qemu/session.py``, ``VmSession``, ``VmSession.stop``) must exist."""
    text = (REPO / "docs" / "design.md").read_text()
    cited = set(re.findall(r"`([^`\s]+)`", text))
    classes = _defined_classes()
    missing = []
    for name in sorted(cited):
        if re.fullmatch(r"[\w/]+\.py", name):
            dirs = [
                PACKAGE,
                REPO,
                PACKAGE / "qemu",
                PACKAGE / "actions",
                PACKAGE / "refenv",
                REPO / "refguest/aero_selftest",
            ]
            candidates = [d / name for d in dirs]
            if not any(c.exists() for c in candidates):
                missing.append(name)
        elif re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+(?:\.\w+)?", name) and (
            name.split(".")[0] not in classes
        ):
            missing.append(name)
    assert not missing, f"docs/design.md cites what does not exist: {missing}"


@pytest.mark.parametrize("path", ["docs/design.md"])
def test_design_page_covers_every_module(path: str) -> None:
    text = (REPO / path).read_text()
    absent = [
        rel(p).removeprefix("pytest_aero_virtio/")
        for p in modules()
        if p.name != "__init__.py" and rel(p).removeprefix("pytest_aero_virtio/") not in text
    ]
    assert not absent, f"{path} does not mention: {absent}"

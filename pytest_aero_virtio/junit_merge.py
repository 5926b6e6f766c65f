"""``aero-virtio-junit-merge OUT IN...``: one JUnit file from the JUnit files of the ``--vm-shard`` jobs.

The result has the test set of a single run: every test case of every input, each shard's test suite kept
as its own ``<testsuite>`` (with its host name and time stamp, so a reader sees which job ran what), and the
totals recomputed. A test id (``classname::name``) found in more than one input means two shards ran the
same test (runners that disagreed on the split, or a job retried into the wrong file): that is an error,
nothing is written, and the ids are listed. Parsing and writing are junitparser's (a maintained JUnit
library), so odd but valid inputs (one ``<testsuite>`` root, nested suites) are read as CI tools read them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from junitparser import JUnitXml, JUnitXmlError

__all__ = ["DuplicateTests", "case_ids", "main", "merge"]


class DuplicateTests(Exception):
    """The same test id appears in more than one input."""

    def __init__(self, duplicates: dict[str, list[str]]) -> None:
        self.duplicates = duplicates
        lines = [f"  {test_id}: {', '.join(paths)}" for test_id, paths in sorted(duplicates.items())]
        super().__init__(
            f"{len(duplicates)} test(s) ran in more than one shard:\n"
            + "\n".join(lines)
            + "\nfix: every shard must run with the same selection, QEMU, image and --vm-durations file "
            "(see docs/sharding.md); merge each shard's file once"
        )


def _load(path: str) -> JUnitXml:
    try:
        return JUnitXml.fromfile(path)
    except FileNotFoundError:
        raise SystemExit(f"aero-virtio-junit-merge: {path}: no such file") from None
    except (JUnitXmlError, SyntaxError, OSError) as exc:  # ElementTree's ParseError is a SyntaxError
        raise SystemExit(f"aero-virtio-junit-merge: {path}: not a JUnit XML file ({exc})") from None


def case_ids(xml: JUnitXml) -> list[str]:
    """``classname::name`` of every test case, in file order (repeats kept)."""
    return [f"{case.classname}::{case.name}" for suite in xml for case in suite]


def merge(paths: Sequence[str]) -> JUnitXml:
    """Merge the inputs; raise :class:`DuplicateTests` if a test id is in more than one of them. A repeat
    within one input is left alone: pytest itself writes one for a test that fails and then errors in
    teardown, and a single run would have it too."""
    seen: dict[str, list[str]] = {}
    loaded = []
    for path in paths:
        xml = _load(path)
        loaded.append(xml)
        for test_id in dict.fromkeys(case_ids(xml)):
            seen.setdefault(test_id, []).append(path)
    duplicates = {test_id: where for test_id, where in seen.items() if len(where) > 1}
    if duplicates:
        raise DuplicateTests(duplicates)
    merged = JUnitXml()
    for xml in loaded:
        merged += xml
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aero-virtio-junit-merge",
        description="Merge the JUnit XML files of --vm-shard jobs into one; a test in two inputs is an error.",
    )
    parser.add_argument("output", help="the merged JUnit XML file to write")
    parser.add_argument("inputs", nargs="+", help="the shards' JUnit XML files")
    args = parser.parse_args(argv)
    if any(Path(p).resolve() == Path(args.output).resolve() for p in args.inputs):
        parser.error(f"the output {args.output} is also an input: write the merge to a new file")
    try:
        merged = merge(args.inputs)
    except DuplicateTests as exc:
        print(f"aero-virtio-junit-merge: {exc}", file=sys.stderr)
        return 1
    merged.write(args.output)
    print(
        f"aero-virtio-junit-merge: {args.output}: {merged.tests} tests ({merged.failures} failed, "
        f"{merged.errors} errors, {merged.skipped} skipped) from {len(args.inputs)} file(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

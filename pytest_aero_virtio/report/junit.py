"""What the JUnit report carries beyond pytest's own: per test a ``system-out`` with the serial tail and the
attachments, per suite the run's facts (plugin, QEMU, accelerator, image).

``[[ATTACHMENT|path]]`` lines in a test case's ``system-out`` are the form GitLab (screenshots in the test
report) and Jenkins (the JUnit Attachments plugin) pick up. Paths are written relative to the directory pytest
was started in when the file lies below it (GitLab resolves them against the project directory, so keep
``--vm-artifacts`` inside the checkout), absolute otherwise.

Formatting is pure; :func:`suite_properties` reads the image once (the hash is cached by path, size and
mtime, since a Windows image is many gigabytes). Writing into pytest's JUnit XML goes through
:mod:`pytest_aero_virtio._pytest_internals`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SERIAL_TAIL_LINES", "attachment_path", "image_fingerprint", "suite_properties", "system_out"]

#: How many serial lines a test case's system-out carries.
SERIAL_TAIL_LINES = 40


def attachment_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when below it (what GitLab needs), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path(os.path.abspath(base))))
    except ValueError:
        return str(path)


def system_out(vm: str, tail: Sequence[str], attachments: Iterable[Path], base: Path) -> str:
    """A test case's system-out: which VM, its last serial lines, then one attachment line per file."""
    lines = [f"aero-virtio VM {vm}: last {len(tail)} serial lines"]
    lines += [f"  | {line}" for line in tail]
    lines += [f"[[ATTACHMENT|{attachment_path(p, base)}]]" for p in attachments]
    return "\n".join(lines) + "\n"


def _cache_file() -> Path:
    from ..refenv.cache import cache_root

    return cache_root() / "image-hashes.json"


def image_fingerprint(path: Path, cache: Path | None = None) -> tuple[int, str]:
    """(size in bytes, first 16 hex digits of the SHA-256) of an image; the hash is cached on disk by path,
    size, mtime and inode, so a large image is read once, not on every run."""
    st = path.stat()
    key = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    cache = cache if cache is not None else _cache_file()
    try:
        known: dict[str, str] = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        known[key] = digest.hexdigest()[:16]
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=0))
            tmp.replace(cache)
        except OSError:
            pass  # an unwritable cache only costs the next run a re-read
    return st.st_size, known[key]


def suite_properties(run: Any) -> list[tuple[str, str]]:
    """The testsuite properties of a run (an :class:`~pytest_aero_virtio.run.AeroRun`)."""
    o = run.settings.options
    props = [
        ("aero.plugin_version", metadata.version("pytest-aero-virtio")),
        ("aero.qemu_version", run.caps().version_str),
        ("aero.qemu_path", str(o.qemu)),
        ("aero.accel", str(run.accel())),
    ]
    if o.image is not None:
        size, digest = image_fingerprint(o.image)
        props += [("aero.image", str(o.image)), ("aero.image_bytes", str(size)), ("aero.image_sha256", digest)]
    if o.kernel is not None:
        props.append(("aero.kernel", str(o.kernel)))
    return props

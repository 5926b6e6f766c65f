"""The on-disk cache shared by every refenv builder.

Layout (docs/design.md, "Reference environment contract"): entries are directories named
``<kind>-<16 hex of sha256(inputs)>`` under ``$AERO_VIRTIO_CACHE`` or
``${XDG_CACHE_HOME:-~/.cache}/aero-virtio``.  An entry is built in a temporary sibling and renamed into place,
so a reader never sees half an entry; a per-entry ``fcntl`` lock makes concurrent builders (pytest-xdist
workers, two terminals) build it once while the others wait and then reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

KEY_HEX = 16


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """Where every refenv entry lives; the environment is a parameter so tests need not patch os.environ."""
    env = os.environ if env is None else env
    explicit = env.get("AERO_VIRTIO_CACHE")
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".cache"
    return base / "aero-virtio"


def stable_key(parts: Iterable[tuple[str, bytes | str]]) -> str:
    """Hash named inputs into an entry key.

    Names and values are length-prefixed so ("ab","c") and ("a","bc") cannot collide, and the parts are sorted
    by name so the order callers list them in does not matter.
    """
    h = hashlib.sha256()
    for name, value in sorted(parts, key=lambda p: p[0]):
        data = value.encode() if isinstance(value, str) else value
        nb = name.encode()
        h.update(len(nb).to_bytes(8, "little") + nb + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:KEY_HEX]


def source_digest(paths: Iterable[Path]) -> bytes:
    """Digest of the builder's own source files: changing the builder invalidates what it built."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.digest()


def progress(msg: str) -> None:
    """Progress goes to stderr: stdout carries only results (the CLI prints paths there)."""
    print(f"aero-virtio-refenv: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive fcntl lock on ``path``; released when the process dies, so a crashed builder never wedges."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_entry(root: Path, kind: str, key: str, build: Callable[[Path, Path], None]) -> Path:
    """Return ``root/<kind>-<key>``, building it first with ``build(tmpdir, final_path)`` if missing.

    The fast path is one ``stat``.  Otherwise the entry's lock is taken, existence re-checked (another
    process may have built it meanwhile), and ``build`` fills a temp sibling that is renamed into place
    (it gets the final path too, for files such as launchers that must name where they will live).
    A failed build leaves no entry behind.
    """
    entry = root / f"{kind}-{key}"
    if entry.is_dir():
        return entry
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".locks" / f"{kind}-{key}.lock"):
        if entry.is_dir():
            return entry
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{kind}-", dir=root))
        try:
            build(tmp, entry)
            os.chmod(tmp, 0o755)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry


ENTRY_KINDS = ("qemu", "base", "guest", "image")


def stale_entries(root: Path, keep: set[Path]) -> list[Path]:
    """Entries (and leftover temp dirs of killed builds) under ``root`` that are not in ``keep``.

    Every source or package change makes new entries and leaves the old ones (100+ MB each) behind; apt
    lists, downloaded .debs and the caps cache are never stale by this rule.
    """
    if not root.is_dir():
        return []
    kept = {p.resolve() for p in keep}
    out = []
    for p in sorted(root.iterdir()):
        kind = p.name.split("-", 1)[0]
        if p.is_dir() and (kind in ENTRY_KINDS or p.name.startswith(".tmp-")) and p.resolve() not in kept:
            out.append(p)
    return out

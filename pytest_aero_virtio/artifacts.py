"""Per-VM artifact directory: every file a failure report or a JUnit attachment points at.

Each VM of a run gets its own directory ``<root>/<safe name>/`` so that two VMs (or two xdist workers, or two
runs sharing an artifacts root) never write into the same files. The names of the files inside are fixed, so a
person who has seen one artifact directory knows where to look in every other one.

The module is deliberately dumb: it creates the directory and hands out paths. Writing the files is the job of
the modules that own the data (the machine writes serial/argv/stderr/QMP logs, the host services write the
HTTP log, the plugin the host-marker log).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import overload

__all__ = ["ARTIFACT_FILES", "MAX_NAME_LEN", "ArtifactDir", "safe_name", "unique_child"]

#: Attribute name -> file name, in the order failure reports list them.
ARTIFACT_FILES: dict[str, str] = {
    "serial": "serial.log",
    "argv": "qemu-argv.txt",
    "stderr": "qemu-stderr.log",
    "qmp": "qmp.log",
    "host_markers": "host-markers.log",
    "http": "http.log",
    "shutdown": "shutdown.txt",
}

#: Directory names stay well below NAME_MAX (255) even with a ``-NNN`` uniqueness suffix.
MAX_NAME_LEN = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = MAX_NAME_LEN) -> str:
    """Turn a free-form VM name (a test id such as ``vm[tablet-snd]``) into one safe path component.

    Why: test ids contain ``/``, ``[``, ``]``, ``::``, spaces and arbitrary unicode; a path component must
    contain none of the separators, must not be ``.``/``..`` or hidden, and must be short enough for the file
    system.
    Runs of unsafe characters become one ``_``; the result is never empty (``vm`` as a last resort).
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")
    if len(cleaned) > max_len:
        cleaned = cleaned[:max_len].rstrip("._-")
    return cleaned or "vm"


def unique_child(root: Path, name: str) -> Path:
    """Create and return a new directory ``root/name`` or, if taken, ``root/name-2``, ``root/name-3``, ...

    ``mkdir(exist_ok=False)`` is the atomic claim: two processes racing for the same name each get their own
    directory, which a check-then-create would not guarantee.
    """
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = root / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            n += 1
            continue
        return candidate


class _ArtifactFile:
    """A fixed file of :data:`ARTIFACT_FILES` as a read-only, typed attribute of :class:`ArtifactDir`."""

    def __init__(self, key: str, doc: str) -> None:
        self.key = key
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type[ArtifactDir]) -> _ArtifactFile: ...

    @overload
    def __get__(self, obj: ArtifactDir, owner: type[ArtifactDir]) -> Path: ...

    def __get__(self, obj: ArtifactDir | None, owner: type[ArtifactDir]) -> Path | _ArtifactFile:
        return self if obj is None else obj.dir / ARTIFACT_FILES[self.key]


class ArtifactDir:
    """The directory of one VM's artifacts and the fixed paths inside it.

    Creating the object creates the directory (unique under ``root``); the files themselves are created by
    their writers, so :meth:`paths` can be asked for only the ones that exist.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = safe_name(name)
        self.dir: Path = unique_child(self.root, self.name)

    @classmethod
    def existing(cls, directory: Path) -> ArtifactDir:
        """The artifact directory of an earlier run, as it is (nothing is created): for replays."""
        self = cls.__new__(cls)
        self.root, self.name, self.dir = directory.parent, directory.name, directory
        return self

    def __repr__(self) -> str:
        return f"ArtifactDir({str(self.dir)!r})"

    def _path(self, key: str) -> Path:
        return self.dir / ARTIFACT_FILES[key]

    # One line per file: the table of what every VM directory holds.
    serial = _ArtifactFile("serial", "Raw bytes of the first serial port, exactly as the guest wrote them.")
    argv = _ArtifactFile("argv", "The QEMU command line, shell-quoted so it can be pasted into a terminal.")
    stderr = _ArtifactFile("stderr", "QEMU's stdout and stderr, plus the harness's note on how the process ended.")
    qmp = _ArtifactFile("qmp", "Every QMP command, response and event, one JSON line each with a timestamp.")
    host_markers = _ArtifactFile("host_markers", "``AERO_VIRTIO_WIN7_HOST|...`` lines recorded by the host.")
    http = _ArtifactFile("http", "Per-request log of the host HTTP/UDP services.")
    shutdown = _ArtifactFile("shutdown", "One line: how QEMU ended (``exited``, ``quit``, ``term``, ``kill``).")

    def file(self, filename: str) -> Path:
        """A path for an extra artifact (``audio.wav``, ...); only a plain file name is accepted."""
        if filename != safe_name(filename) or filename in (".", ".."):
            raise ValueError(f"artifact file name must be a plain safe name, got {filename!r}")
        return self.dir / filename

    def paths(self, existing_only: bool = False) -> dict[str, Path]:
        """All known artifact paths by key (``serial``, ``argv``, ...), for failure reports and JUnit.

        With ``existing_only`` the files not written (yet) are left out, so a report never points at nothing.
        """
        out = {key: self._path(key) for key in ARTIFACT_FILES}
        if existing_only:
            out = {key: p for key, p in out.items() if p.exists()}
        return out

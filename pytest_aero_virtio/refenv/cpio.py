"""A newc ("070701") cpio writer and reader, so the initramfs is built without root or host cpio.

Every entry is owned by uid/gid 0 with explicit modes and mtime 0 (reproducible bytes, hence stable cache
hashes), and device nodes such as /dev/console can be created in the archive itself: the kernel needs
/dev/console to exist in the initramfs to give /init its stdio before devtmpfs is mounted.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


@dataclass(frozen=True)
class CpioEntry:
    """One archive member as read back (used by tests and for inspection)."""

    name: str
    mode: int
    uid: int
    gid: int
    rdevmajor: int
    rdevminor: int
    data: bytes


class CpioWriter:
    """Streams newc entries to a binary file.  Call ``close()`` to write the trailer and 512-byte padding."""

    def __init__(self, out: BinaryIO, first_ino: int = 1) -> None:
        self._out = out
        self._ino = first_ino
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/") or "."
        if name != TRAILER:
            if name in self.names:
                raise ValueError(f"duplicate cpio entry {name!r}")
            self.names.add(name)
        nameb = name.encode() + b"\0"
        fields = [
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime
            len(data),
            0,
            0,  # devmajor, devminor
            rdev[0],
            rdev[1],
            len(nameb),
            0,  # check
        ]
        self._ino += 1
        header = MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + nameb + b"\0" * _pad4(len(header) + len(nameb)))
        self._out.write(data + b"\0" * _pad4(len(data)))

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        self._entry(TRAILER, 0)
        pos = self._out.tell()
        self._out.write(b"\0" * ((512 - pos % 512) % 512))


def read_cpio(data: bytes) -> list[CpioEntry]:
    """Parse one or more concatenated newc archives (zero padding between them is skipped, as Linux does)."""
    out: list[CpioEntry] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if data[pos : pos + 6] != MAGIC:
            raise ValueError(f"bad cpio magic at offset {pos}")
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += _pad4(pos)
        body = data[pos : pos + filesize]
        pos += filesize + _pad4(filesize)
        if name == TRAILER:
            continue
        out.append(CpioEntry(name, f[1], f[2], f[3], f[9], f[10], body))
    return out

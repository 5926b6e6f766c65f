"""Just enough ELF64 reading to build the initramfs without host tools.

We need two things from ELF files: the ``DT_NEEDED`` sonames of executables and extension modules (to copy
exactly the shared libraries the guest's Python and alsa-utils load), and the ``.modinfo`` section of kernel
modules (their ``depends=``, to order ``insmod``).  Reading them here keeps the builder independent of
binutils/kmod on the host.
"""

from __future__ import annotations

import struct

_SHT_DYNAMIC = 6
_DT_NEEDED = 1


class ElfError(ValueError):
    """Not an ELF64 little-endian file, or a truncated one."""


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _sections(data: bytes) -> list[tuple[int, int, int, int, int, int]]:
    """(name_off, type, offset, size, link, entsize) of every section header."""
    if not is_elf(data) or data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        base = shoff + i * shentsize
        if base + 64 > len(data):
            raise ElfError("truncated section header table")
        name, typ, _flags, _addr, off, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, base
        )
        out.append((name, typ, off, size, link, entsize))
    return out


def _cstr(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode()


def needed(data: bytes) -> list[str]:
    """The ``DT_NEEDED`` sonames of an ELF64 file, in order (empty for static binaries)."""
    secs = _sections(data)
    out: list[str] = []
    for _name, typ, off, size, link, _ent in secs:
        if typ != _SHT_DYNAMIC:
            continue
        stroff = secs[link][2]
        for pos in range(off, off + size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                out.append(_cstr(data, stroff + val))
    return out


def section(data: bytes, wanted: str) -> bytes | None:
    """The contents of the section named ``wanted``, or None."""
    secs = _sections(data)
    shstrndx = struct.unpack_from("<H", data, 0x3E)[0]
    names_off = secs[shstrndx][2]
    for name, _typ, off, size, _link, _ent in secs:
        if _cstr(data, names_off + name) == wanted:
            return data[off : off + size]
    return None


def modinfo(data: bytes) -> dict[str, list[str]]:
    """A kernel module's ``.modinfo`` as key -> values (keys like ``depends`` may repeat)."""
    raw = section(data, ".modinfo") or b""
    out: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, _, v = item.decode(errors="replace").partition("=")
            out.setdefault(k, []).append(v)
    return out

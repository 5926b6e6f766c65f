"""Checks at start, before anyone waits: is the image something QEMU can boot, is the artifacts root usable.

Why: a bad input found only by booting costs the whole silence timeout (300 s by default) and then says
"the guest printed nothing"; an unwritable artifacts root failed every test separately with a bare
``FileNotFoundError``. Each check here reads a few bytes or makes one directory, and fails with a usage
error (exit 4) that names the option, the cause and the fix.

What "bootable" means here is what the plugin hands QEMU: ``-blockdev driver=raw|qcow2``. So a file is
accepted when it is a qcow2 image (magic, version, a readable backing file if it names one), or a raw disk
whose first sector ends in the boot signature ``55 AA`` (an MBR, a boot sector, a hybrid ISO) or that has a GPT
header in its second sector. With direct kernel boot (``--vm-kernel``) the disk is only data, so only
readable and non-empty are required.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from pathlib import Path

from .errors import CONFIG_ERROR, IMAGE_INVALID, IMAGE_UNREADABLE, AeroConfigError

__all__ = ["check_artifacts_dir", "check_image", "classify_head", "open_error", "qcow2_backing"]

QCOW2_MAGIC = b"QFI\xfb"
#: Formats QEMU knows that the plugin does not pass (first bytes, name): named so the fix can say "convert".
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"KDMV", "VMDK"),
    (0, b"# Disk DescriptorFile", "VMDK descriptor"),
    (0x40, b"\x7f\x10\xda\xbe", "VDI"),
    (0, b"vhdxfile", "VHDX"),
    (0, b"conectix", "VHD"),
    (0, b"QFI\x00", "QED"),
)
_CONVERT = "convert it: qemu-img convert -O qcow2 <image> <image>.qcow2"


def open_error(flag: str, path: Path, exc: OSError) -> AeroConfigError:
    """The usage error for a path that cannot be opened, naming the real cause (a symlink loop is not
    "does not exist", a dangling symlink names its target, a directory without search permission...)."""
    code = exc.errno
    if code == errno.ELOOP:
        why, fix = "is a symlink loop (the links point at each other)", "point the option at the image file itself"
    elif code == errno.ENOENT and path.is_symlink():
        target = os.readlink(path)
        why, fix = f"is a symlink to {target}, which does not exist", f"fix the link or pass the image to {flag}"
    elif code == errno.ENOENT:
        why, fix = "does not exist", f"pass an existing file to {flag}"
    elif code in (errno.EACCES, errno.EPERM):
        why = "cannot be read by this user (permission denied on the file or a directory above it)"
        fix = f"chmod a+r {path} (and a+x on its directories), or run as its owner"
    elif code == errno.ENOTDIR:
        why, fix = "has a path component that is not a directory", f"check the path given to {flag}"
    elif code == errno.EISDIR:
        why, fix = "is a directory", f"pass a file to {flag}"
    else:
        why, fix = f"cannot be opened ({exc.strerror or exc})", f"pass a readable file to {flag}"
    return AeroConfigError(f"{flag}: {path} {why}", fix=fix, token=IMAGE_UNREADABLE)


def _read_head(flag: str, path: Path, size: int = 4096) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not os.path.isfile(path):
                raise AeroConfigError(
                    f"{flag}: {path} is not a regular file",
                    fix=f"pass a disk image file to {flag}",
                    token=IMAGE_UNREADABLE,
                )
            return fh.read(size), st.st_size
    except OSError as exc:
        raise open_error(flag, path, exc) from None


def classify_head(head: bytes) -> str | None:
    """``qcow2``, ``raw`` (boot signature or GPT), or None for no recognised disk; pure."""
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        return "raw"
    if len(head) >= 520 and head[512:520] == b"EFI PART":
        return "raw"
    return None


def _not_a_disk(flag: str, path: Path, head: bytes, size: int) -> AeroConfigError:
    for offset, magic, name in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return AeroConfigError(
                f"{flag}: {path} is a {name} image; the plugin boots raw and qcow2 images only",
                fix=_CONVERT,
                token=IMAGE_INVALID,
            )
    sample = head[:512]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if sample and printable == len(sample):
        what = f"a text file ({size} bytes: {sample[:40].decode(errors='replace').strip()!r}...)"
    elif size < 512:
        what = f"too small for a disk ({size} bytes; a boot sector alone is 512)"
    else:
        what = "no disk image QEMU can boot: no qcow2 header, no boot signature (55 AA) in its first sector, no GPT"
    return AeroConfigError(
        f"{flag}: {path} is {what}",
        fix=(
            f"pass a bootable raw or qcow2 disk to {flag} (check the path: is this the image?); a data-only disk "
            "boots with --vm-kernel (direct kernel boot)"
        ),
        token=IMAGE_INVALID,
    )


def qcow2_backing(head: bytes) -> str | None:
    """The backing file name a qcow2 header records, or None; pure (``head`` holds the header's cluster)."""
    if len(head) < 20:
        return None
    offset, length = struct.unpack(">QI", head[8:20])
    if offset == 0 or length == 0:
        return None
    raw = head[offset : offset + length]
    if len(raw) < length:
        raise ValueError(f"the backing file name lies beyond the first {len(head)} bytes (offset {offset})")
    return raw.decode(errors="replace")


def _check_qcow2(flag: str, path: Path, head: bytes) -> None:
    version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else 0
    if version not in (2, 3) or len(head) < 72:
        raise AeroConfigError(
            f"{flag}: {path} has a qcow2 magic but a damaged header (version {version}, {len(head)} bytes)",
            fix="check the image with: qemu-img check <image>",
            token=IMAGE_INVALID,
        )
    try:
        backing = qcow2_backing(head)
    except ValueError:
        return  # an unusual header layout: QEMU reads it itself
    if backing is None or "://" in backing or backing.startswith("json:"):
        return
    target = Path(backing) if os.path.isabs(backing) else path.parent / backing
    try:
        with open(target, "rb"):
            pass
    except OSError as exc:
        cause = open_error("backing file", target, exc)
        raise AeroConfigError(
            f"{flag}: {path} is a qcow2 overlay whose {cause.message}",
            fix=f"restore {target}, or rebase: qemu-img rebase -u -b <new backing> {path}",
            token=IMAGE_UNREADABLE,
        ) from None


def check_image(flag: str, path: Path, *, direct_kernel: bool) -> None:
    """Everything QEMU needs to boot ``path`` as the VM's disk, checked now (usage errors naming the cause)."""
    head, size = _read_head(flag, path, 65536)
    if size == 0:
        raise AeroConfigError(
            f"{flag}: {path} is empty (0 bytes)",
            fix=f"pass the disk image to {flag}; an interrupted copy or download leaves an empty file",
            token=IMAGE_INVALID,
        )
    kind = classify_head(head)
    if kind == "qcow2":
        _check_qcow2(flag, path, head)
    elif kind is None and not direct_kernel:
        raise _not_a_disk(flag, path, head, size)


def check_artifacts_dir(flag: str, given: Path) -> Path:
    """The artifacts root as an absolute path: a directory we can write (made now if missing), or one usage
    error naming the option (not one ``FileNotFoundError`` per test later)."""
    try:
        path = given.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise AeroConfigError(
            f"{flag}: {given} cannot be resolved ({exc})", fix=f"give {flag} a plain directory", token=CONFIG_ERROR
        ) from None
    if path.exists() and not path.is_dir():
        raise AeroConfigError(
            f"{flag}: {path} exists and is not a directory",
            fix=f"give {flag} a directory (it is made if missing), or move the file away",
            token=CONFIG_ERROR,
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".aero-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        with contextlib.suppress(OSError):
            probe.unlink()
    except OSError as exc:
        raise AeroConfigError(
            f"{flag}: cannot write VM artifacts under {path}: {exc.strerror or exc}",
            fix=f"give {flag} a writable directory (default: aero-artifacts in the current directory)",
            token=CONFIG_ERROR,
        ) from None
    return path

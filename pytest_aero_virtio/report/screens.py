"""Screenshots of a VM's display: QMP ``screendump`` as PNG into the VM's artifact directory.

Why: a guest that hangs, blue-screens or waits in a dialog says nothing on its serial port; its screen says
why. Every VM has a display device (``-device VGA``, even with ``-display none``), so QEMU can always dump it.
Screenshots are taken when a test of the VM fails (while QEMU still runs), when the guest prints ``RESULT``
(the reference guest powers off a second later, so that is the last moment its screen exists), before the
stop ladder if QEMU is still alive then, and when the guest has been silent for a while.

QEMU >= 7.1 writes PNG itself (``format: png``, checked on 7.2 and 10.0); a QEMU built without libpng refuses,
and then the dump is taken as PPM and converted here (:func:`ppm_to_png`, pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactDir, safe_name

__all__ = ["SCREEN_PREFIX", "latest_screenshot", "ppm_to_png", "screen_path", "screendump", "screenshots"]

LOG = logging.getLogger(__name__)

#: Screenshot files are ``screen-<reason>.png`` in the VM's artifact directory.
SCREEN_PREFIX = "screen-"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def screen_path(artifacts: ArtifactDir, reason: str) -> Path:
    """``<vm dir>/screen-<reason>.png`` (the reason made a safe, short file name part)."""
    return artifacts.file(f"{SCREEN_PREFIX}{safe_name(reason, 80)}.png")


def screenshots(directory: Path) -> list[Path]:
    """The PNG screenshots in a VM directory, oldest first."""
    found = [p for p in directory.glob(f"{SCREEN_PREFIX}*.png") if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def latest_screenshot(directory: Path) -> Path | None:
    """The newest screenshot of a VM directory, or None."""
    found = screenshots(directory)
    return found[-1] if found else None


async def screendump(qmp: Any, path: Path) -> Path | None:
    """Dump the VM's primary display to ``path`` (PNG) over ``qmp`` (a ``QmpChannel``), on the VM loop.

    Returns the path, or None when QEMU is gone or refuses (logged, never raised: a screenshot is evidence,
    not a verdict, and must not turn one failure into another).
    """
    try:
        from qemu.qmp import ExecuteError
    except ImportError:  # pragma: no cover - a hard dependency
        return None
    try:
        await qmp.execute("screendump", {"filename": str(path), "format": "png"})
    except ExecuteError as exc:
        LOG.info("screendump as PNG refused (%s); taking PPM and converting", exc)
        return await _screendump_ppm(qmp, path)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # QEMU exited, QMP lost: no screen to take
        LOG.info("no screenshot %s: %s", path.name, exc)
        return None
    return path if _is_png(path) else None


async def _screendump_ppm(qmp: Any, path: Path) -> Path | None:
    ppm = path.with_suffix(".ppm")
    try:
        await qmp.execute("screendump", {"filename": str(ppm)})
        path.write_bytes(ppm_to_png(ppm.read_bytes()))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        LOG.info("no screenshot %s (PPM): %s", path.name, exc)
        return None
    finally:
        with contextlib.suppress(OSError):
            ppm.unlink()
    return path


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(8) == _PNG_MAGIC
    except OSError:
        return False


def _ppm_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, maxval, offset of the pixels) of a binary PPM (P6), comments allowed."""
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise ValueError("malformed PPM header")
        fields.append(int(data[start:pos]))
    return fields[0], fields[1], fields[2], pos + 1  # one whitespace byte ends the header


def ppm_to_png(data: bytes) -> bytes:
    """A binary PPM (P6, 8 bits per channel: what QEMU's screendump writes) as a PNG (pure)."""
    if not data.startswith(b"P6"):
        raise ValueError("not a binary PPM (P6)")
    width, height, maxval, offset = _ppm_header(data)
    if maxval != 255:
        raise ValueError(f"only 8-bit PPM is supported, got maxval {maxval}")
    stride = width * 3
    pixels = data[offset : offset + stride * height]
    if len(pixels) != stride * height:
        raise ValueError("truncated PPM")
    raw = b"".join(b"\0" + pixels[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return _PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")

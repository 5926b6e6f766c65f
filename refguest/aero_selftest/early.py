"""The selftest's first moments: START on the serial port before anything heavy is imported.

Importing the checks (subprocess, socket, pathlib, ...) takes about 0.5 s under TCG, and START is the
host's sign that the selftest is alive, so ``__main__`` writes it from here with nothing but ``os`` and
``fcntl`` loaded and only then imports the rest.  One exception: when an args source asks for serial
noise (``--noise-line-bytes=`` / ``--noise-binary-bytes=``), the noise must come before every marker, so
START is left to :func:`aero_selftest.main.main`, which writes it after the noise once the configuration
is parsed.  The check is a plain substring test on the raw sources; the parsed configuration decides.  The
two args files are read once per boot (:func:`read_args`): the same texts go to :func:`begin` and on to
:func:`aero_selftest.config.load`.

This module is also where the VGA text console mirror is opened (``AERO_SELFTEST_CONSOLE``, set by the
image's /init): markers shown there make a screenshot of the VM show the selftest's progress.  The image
loads the device drivers while the selftest starts (``AERO_SELFTEST_DRIVERS``); :func:`main.wait_for_drivers`
waits for them before the first device check.
"""

# No ``from __future__ import annotations``: it imports the __future__ module, one more file before START;
# annotations naming types only imported for type checking are strings instead.
import os

TYPE_CHECKING = False  # typing itself costs an import; mypy knows this name
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PREFIX = "AERO_VIRTIO_SELFTEST"
IMAGE_ARGS = "/etc/aero-selftest/args"
FW_CFG_ARGS = "/sys/firmware/qemu_fw_cfg/by_name/opt/aero/args/raw"
NOISE_HINT = "--noise-"
CONSOLE_ENV = "AERO_SELFTEST_CONSOLE"
DRIVERS_ENV = "AERO_SELFTEST_DRIVERS"  # <path>.done appears once the image's driver loader has finished


def start_line(version: int) -> str:
    """The START marker (the same text :func:`markers.format_line` makes, without importing it)."""
    return f"{PREFIX}|START|version={version}"


TCGETS = 0x5401
TCSETSW = 0x5403  # set after the output queued so far is sent (tcsetattr TCSADRAIN)
OPOST = 0x1


def raw_output(fd: int) -> None:
    """LF line ends on a serial tty: clear OPOST so the tty does not turn LF into CRLF (no-op on a pipe).

    With the kernel's ``struct termios`` through ``fcntl.ioctl`` (built into the interpreter) rather than
    the termios extension module, which is one more shared object to load before START.
    """
    import fcntl

    try:
        attrs = bytearray(fcntl.ioctl(fd, TCGETS, bytes(64)))
    except OSError:
        return  # not a tty
    oflag = int.from_bytes(attrs[4:8], "little")
    if oflag & OPOST:
        attrs[4:8] = (oflag & ~OPOST).to_bytes(4, "little")
        try:  # noqa: SIM105 (contextlib is one import too many this early)
            fcntl.ioctl(fd, TCSETSW, bytes(attrs))
        except OSError:
            pass


def read_text(path: str) -> str:
    """A file's text, "" when it cannot be read (a missing file gives no args)."""
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_args() -> tuple[str, str]:
    """The texts of the image's args file and of the fw_cfg one, in that order ("" for one not there)."""
    return read_text(IMAGE_ARGS), read_text(FW_CFG_ARGS)


def noise_requested(argv: "Sequence[str]", texts: "Sequence[str]") -> bool:
    """Whether any args source might ask for serial noise (then START waits for the parsed config)."""
    return any(NOISE_HINT in a for a in argv) or any(NOISE_HINT in t for t in texts)


def open_console(environ: "Mapping[str, str]") -> int | None:
    """An fd on the console named by ``AERO_SELFTEST_CONSOLE`` (the VGA text console), or None.

    Non-blocking: a console that cannot take a line right now loses it rather than stalling the markers.
    """
    path = environ.get(CONSOLE_ENV, "")
    if not path:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None


def console_line(line: str, width: int = 80) -> bytes:
    """A marker as the console shows it: cut to one screen row (the serial port has the whole line)."""
    text = line if len(line) < width else line[: width - 2] + "~"
    return (text + "\n").encode("ascii", "replace")


def seed_crng() -> None:
    """Make the kernel's random generator ready at once, if it is not yet.

    Under TCG the guest has no RDRAND and few interrupts, so the kernel's CRNG becomes ready only after a
    jitter-entropy dance of ~1.5 s that the first blocking reader of /dev/urandom (``os.urandom``) pays
    for.  A test VM needs no secret randomness: credit 256 bits once.  (/init sets PYTHONHASHSEED=0 so the
    interpreter itself starts without reading /dev/urandom.)
    """
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
        return  # ready already
    except BlockingIOError:
        pass
    except OSError:
        return
    import fcntl
    import struct
    import time

    try:
        noise = os.getrandom(32, 0x0004)  # GRND_INSECURE: never blocks
    except OSError:
        noise = b""
    data = (noise + time.time_ns().to_bytes(8, "little") + os.getpid().to_bytes(4, "little")).ljust(32, b"a")[:32]
    rndaddentropy = 0x40085203
    try:
        fd = os.open("/dev/urandom", os.O_WRONLY)
        try:
            fcntl.ioctl(fd, rndaddentropy, struct.pack("ii", 256, 32) + data)
        finally:
            os.close(fd)
    except OSError:
        pass


def begin(
    argv: "Sequence[str]", version: int, texts: "Sequence[str]", out_fd: int = 1, console_fd: int | None = None
) -> bool:
    """Write START now unless noise may be asked for (``texts``: the args files' texts, :func:`read_args`);
    returns whether START was written."""
    raw_output(out_fd)
    if noise_requested(argv, texts):
        return False
    line = start_line(version)
    os.write(out_fd, (line + "\n").encode())
    if console_fd is not None:
        try:  # noqa: SIM105 (contextlib is one import too many this early)
            os.write(console_fd, console_line(line))
        except OSError:
            pass
    return True

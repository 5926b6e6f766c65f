"""The plugin's command-line and ini options: their table, and pure validation of their values.

One table (:data:`OPTIONS`) declares every option once: its flag, its ini name, its default and its help.
``plugin.py`` registers it with pytest; :func:`collect` reads values back (command line first, then the ini
file, then the default) and the ``parse_*`` functions validate them, raising :class:`AeroConfigError` with
the option's name and a fix, so a typo never reaches QEMU as an obscure failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DEFAULT_HTTP_PATH, DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT
from .errors import IMAGE_UNREADABLE, AeroConfigError

GROUP = "aero-virtio"
GROUP_DESCRIPTION = "aero virtio selftest under QEMU (pytest-aero-virtio)"


@dataclass(frozen=True)
class Option:
    """One plugin option; ``ini`` is also the key in pytest.ini/pyproject/tox.ini ``[pytest]``."""

    flag: str
    ini: str
    help: str
    default: str | None = None
    kind: str = "string"  # "string" | "bool" | "args" (repeatable)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


OPTIONS: tuple[Option, ...] = (
    Option(
        "--vm-image",
        "vm_image",
        "guest disk image (raw or qcow2); never modified while snapshot is on",
        default=None,
        metavar="PATH",
    ),
    Option(
        "--qemu-system",
        "qemu_system",
        "qemu-system-x86_64 binary or launcher (>= 7.2)",
        default=None,
        metavar="PATH",
    ),
    Option("--vm-memory", "vm_memory", "guest memory in MiB", default="512", metavar="MIB"),
    Option("--vm-smp", "vm_smp", "number of guest vCPUs", default="1", metavar="N"),
    Option("--vm-machine", "vm_machine", "QEMU machine type", default="q35", metavar="TYPE"),
    Option(
        "--vm-accel",
        "vm_accel",
        "accelerator: auto picks kvm only when it really runs a guest",
        default="auto",
        choices=("auto", "kvm", "tcg"),
    ),
    Option(
        "--vm-timeout",
        "vm_timeout",
        "seconds from QEMU start until every awaited marker must be in",
        default="600",
        metavar="S",
    ),
    Option(
        "--vm-silence-timeout",
        "vm_silence_timeout",
        "seconds the guest may print nothing on the serial port after QEMU starts",
        default="300",
        metavar="S",
    ),
    Option(
        "--vm-snapshot",
        "vm_snapshot",
        "run the disk with snapshot=on (on|off); off writes the image",
        default="on",
        choices=("on", "off"),
    ),
    Option("--vm-kernel", "vm_kernel", "direct kernel boot: kernel image", default=None, metavar="PATH"),
    Option("--vm-initrd", "vm_initrd", "direct kernel boot: initrd", default=None, metavar="PATH"),
    Option(
        "--vm-append", "vm_append", "direct kernel boot: kernel command line", default=None, metavar="CMDLINE"
    ),
    Option(
        "--vm-direct-boot",
        "vm_direct_boot",
        "boot the reference guest's kernel directly instead of through SYSLINUX (on|off)",
        default="off",
        choices=("on", "off"),
    ),
    Option(
        "--qemu-extra-arg",
        "qemu_extra_args",
        "extra QEMU argument, appended last (repeatable)",
        kind="args",
        metavar="ARG",
    ),
    Option(
        "--vm-guest-arg",
        "vm_guest_args",
        "extra guest selftest argument sent through fw_cfg (repeatable)",
        kind="args",
        metavar="ARG",
    ),
    Option(
        "--vm-http-port",
        "vm_http_port",
        "host HTTP port, or 'auto' (ephemeral, told to the guest); default auto for the reference guest, "
        f"{DEFAULT_HTTP_PORT} for --vm-image",
        default=None,
        metavar="PORT|auto",
    ),
    Option(
        "--vm-udp-port",
        "vm_udp_port",
        f"host UDP echo port, or 'auto'; default auto for the reference guest, {DEFAULT_UDP_PORT} for "
        "--vm-image",
        default=None,
        metavar="PORT|auto",
    ),
    Option(
        "--vm-http-path",
        "vm_http_path",
        "HTTP path the guest fetches",
        default=DEFAULT_HTTP_PATH,
        metavar="PATH",
    ),
    Option(
        "--vm-artifacts",
        "vm_artifacts",
        "directory for per-VM logs (serial, QEMU argv/stderr, QMP, HTTP)",
        default="aero-artifacts",
        metavar="DIR",
    ),
    Option("--follow-serial", "follow_serial", "print the guest's serial output live", kind="bool"),
    Option("--vm-dry-run", "vm_dry_run", "print each planned QEMU command line and run nothing", kind="bool"),
    Option(
        "--vm-shard",
        "vm_shard",
        "run only shard K (1-based) of N of the VM plan, whole VMs per shard (docs/sharding.md)",
        default=None,
        metavar="K/N",
    ),
    Option(
        "--vm-durations",
        "vm_durations",
        "JSON file of recorded VM durations that every shard reads to balance --vm-shard (default: estimates)",
        default=None,
        metavar="PATH",
    ),
    Option(
        "--virtio-msix-vectors",
        "virtio_msix_vectors",
        "MSI-X vectors for every virtio device (0 = INTx)",
        default=None,
        metavar="N",
    ),
    *(
        Option(
            f"--virtio-{dev}-vectors",
            f"virtio_{dev}_vectors",
            f"MSI-X vectors for virtio-{dev} (0 = INTx), overrides --virtio-msix-vectors",
            default=None,
            metavar="N",
        )
        for dev in ("blk", "net", "input", "snd")
    ),
    Option(
        "--blk-resize-delta-mib",
        "blk_resize_delta_mib",
        "how much the blk resize reaction grows the disk",
        default="64",
        metavar="MIB",
    ),
)


def collect(getoption: Callable[[str], Any], getini: Callable[[str], Any]) -> dict[str, Any]:
    """Raw values by ini name: the command line wins over the ini file, which wins over the default."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        dest = opt.flag.lstrip("-").replace("-", "_")
        cli = getoption(dest)
        if opt.kind == "args":
            values[opt.ini] = [*(getini(opt.ini) or []), *(cli or [])]
        elif opt.kind == "bool":
            values[opt.ini] = bool(cli) or bool(getini(opt.ini))
        else:
            ini = getini(opt.ini)
            values[opt.ini] = cli if cli is not None else (ini if ini not in (None, "") else opt.default)
    return values


def _fail(flag: str, value: object, why: str, fix: str) -> AeroConfigError:
    return AeroConfigError(f"{flag}={value!r}: {why}", fix=fix)


def parse_int(flag: str, value: str | None, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    """An integer option, or None when unset; errors name the option and the accepted range."""
    if value is None or value == "":
        return None
    try:
        n = int(str(value), 0)
    except ValueError:
        raise _fail(flag, value, "not a whole number", f"pass {flag}=<number>") from None
    if n < minimum or (maximum is not None and n > maximum):
        top = f"..{maximum}" if maximum is not None else " or more"
        raise _fail(flag, value, f"out of range ({minimum}{top})", f"pass a value in {minimum}{top}")
    return n


def parse_seconds(flag: str, value: str | None) -> float:
    """A positive duration in seconds."""
    try:
        s = float(str(value))
    except ValueError:
        raise _fail(flag, value, "not a number of seconds", f"pass {flag}=<seconds>") from None
    if not 0 < s <= 86400:  # also rejects nan and inf, which no wait can take
        raise _fail(flag, value, "must be more than 0 s and at most a day", f"pass {flag}=<seconds>")
    return s


def parse_port(flag: str, value: str | None, default: int) -> int:
    """A port number, or 0 for ``auto`` (ephemeral: the kernel picks a free port and the guest is told)."""
    if value is None:
        return default
    if str(value).lower() == "auto":
        return 0
    port = parse_int(flag, value, minimum=1, maximum=65535)
    assert port is not None
    return port


def parse_http_path(value: str) -> str:
    """The HTTP path must start with '/' and may not carry characters that break the guest's URL."""
    if not value.startswith("/"):
        raise _fail("--vm-http-path", value, "must start with '/'", f"pass --vm-http-path=/{value}")
    bad = [ch for ch in value if ch.isspace() or ch in "|?#"]
    if bad:
        raise _fail(
            "--vm-http-path", value, f"contains {bad[0]!r}", "use a plain path like /aero-virtio-selftest"
        )
    return value


def parse_choice(opt_flag: str, value: str, choices: tuple[str, ...]) -> str:
    """A value from a fixed set; the error lists the accepted values."""
    if value not in choices:
        raise _fail(opt_flag, value, "unknown value", f"use one of: {', '.join(choices)}")
    return value


def readable_file(flag: str, value: str | None) -> Path | None:
    """A path that must name a readable regular file (images, kernels): checked before QEMU sees it."""
    if value is None or value == "":
        return None
    path = Path(os.path.expanduser(str(value)))
    if not path.exists():
        raise AeroConfigError(
            f"{flag}: {path} does not exist", fix=f"pass an existing file to {flag}", token=IMAGE_UNREADABLE
        )
    if not path.is_file():
        raise AeroConfigError(
            f"{flag}: {path} is not a regular file",
            fix=f"pass a disk image file to {flag}",
            token=IMAGE_UNREADABLE,
        )
    if not os.access(path, os.R_OK):
        raise AeroConfigError(
            f"{flag}: {path} is not readable by this user",
            fix=f"chmod a+r {path} or run as its owner",
            token=IMAGE_UNREADABLE,
        )
    return path.resolve()


def vectors_from(values: Mapping[str, Any]) -> dict[str, int | None]:
    """Per-device MSI-X vector counts: a device's own option wins over the global one."""
    glob = parse_int("--virtio-msix-vectors", values.get("virtio_msix_vectors"), maximum=2048)
    out: dict[str, int | None] = {}
    for dev in ("blk", "net", "input", "snd"):
        own = parse_int(f"--virtio-{dev}-vectors", values.get(f"virtio_{dev}_vectors"), maximum=2048)
        out[dev] = own if own is not None else glob
    return out

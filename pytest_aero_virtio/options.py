"""The plugin's command-line and ini options: their table, and pure validation of their values.

One table (:data:`OPTIONS`) declares every option once: its flag, its ini name, its default, its help and its
old spellings. :func:`register` hands it to pytest; :func:`collect` reads values back (command line first,
then the ini file, then the default) and the ``parse_*`` functions validate them, raising
:class:`AeroConfigError` with the option's name and a fix, so a typo never reaches QEMU as an obscure failure.
:mod:`.settings` turns the validated values into the run's settings.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from .config import DEFAULT_HTTP_PATH, DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT
from .errors import IMAGE_UNREADABLE, AeroConfigError
from .preflight import open_error

GROUP = "aero-virtio"
GROUP_DESCRIPTION = "aero virtio selftest under QEMU (pytest-aero-virtio)"

#: How an option's value is read. ``path`` values from an ini file are relative to that file.
Kind = Literal["string", "int", "float", "bool", "args", "path"]
_INI_TYPE: dict[str, str] = {"int": "int", "float": "float", "bool": "bool", "args": "args"}


@dataclass(frozen=True)
class Option:
    """One plugin option; ``ini`` is also the key in pytest.ini/pyproject/tox.ini ``[pytest]``.

    ``old`` are earlier spellings of the flag: still accepted, hidden from ``--help``, and each use warns
    once (the ini key of an old flag is its name without dashes, with ``-`` as ``_``).
    """

    flag: str
    ini: str
    help: str
    default: str | None = None
    kind: Kind = "string"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    old: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return _dest(self.flag)


def _vectors_option(dev: str | None) -> Option:
    if dev is None:
        return Option(
            "--vm-msix-vectors",
            "vm_msix_vectors",
            "MSI-X vectors for every virtio device (0 = INTx)",
            kind="int",
            metavar="N",
            old=("--virtio-msix-vectors",),
        )
    return Option(
        f"--vm-{dev}-vectors",
        f"vm_{dev}_vectors",
        f"MSI-X vectors for virtio-{dev} (0 = INTx), overrides --vm-msix-vectors",
        kind="int",
        metavar="N",
        old=(f"--virtio-{dev}-vectors",),
    )


OPTIONS: tuple[Option, ...] = (
    Option(
        "--vm-image",
        "vm_image",
        "guest disk image (raw or qcow2); never modified while snapshot is on (default: the reference guest)",
        kind="path",
        metavar="PATH",
    ),
    Option(
        "--qemu-system",
        "qemu_system",
        "qemu-system-x86_64 binary or launcher, QEMU >= 7.2 (default: the pinned reference QEMU)",
        metavar="PATH",
    ),
    Option("--vm-memory", "vm_memory", "guest memory in MiB", default="512", kind="int", metavar="MIB"),
    Option("--vm-smp", "vm_smp", "number of guest vCPUs", default="1", kind="int", metavar="N"),
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
        kind="float",
        metavar="S",
    ),
    Option(
        "--vm-silence-timeout",
        "vm_silence_timeout",
        "seconds the guest may print nothing on the serial port after QEMU starts",
        default="300",
        kind="float",
        metavar="S",
    ),
    Option(
        "--vm-snapshot",
        "vm_snapshot",
        "on: the guest writes into a throw-away overlay; off: the guest writes the image itself",
        default="on",
        choices=("on", "off"),
    ),
    Option("--vm-kernel", "vm_kernel", "direct kernel boot: kernel image", kind="path", metavar="PATH"),
    Option("--vm-initrd", "vm_initrd", "direct kernel boot: initrd", kind="path", metavar="PATH"),
    Option("--vm-append", "vm_append", "direct kernel boot: kernel command line", metavar="CMDLINE"),
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
        "extra QEMU arguments, appended last; split like a shell line, on the command line and in the ini "
        "file alike (--qemu-extra-arg='-cpu max' adds two arguments); repeatable",
        kind="args",
        metavar="ARGS",
    ),
    Option(
        "--vm-guest-arg",
        "vm_guest_args",
        "extra guest selftest arguments sent through fw_cfg, split like a shell line; repeatable",
        kind="args",
        metavar="ARGS",
    ),
    Option(
        "--vm-provisioning",
        "vm_provisioning",
        "how the guest learns its opt-in flags and the host's ports: fw_cfg (sent each boot as opt/aero/args, read "
        "by guests that can) or baked (nothing sent: the guest runs the flags provisioned into its image, and the "
        "host serves the fixed ports 18080/18081)",
        default="fw_cfg",
        choices=("fw_cfg", "baked"),
    ),
    Option(
        "--vm-http-port",
        "vm_http_port",
        "host HTTP port, or 'auto' (ephemeral, told to the guest); default auto for the reference guest, "
        f"{DEFAULT_HTTP_PORT} for --vm-image",
        metavar="PORT|auto",
    ),
    Option(
        "--vm-udp-port",
        "vm_udp_port",
        f"host UDP echo port, or 'auto'; default auto for the reference guest, {DEFAULT_UDP_PORT} for --vm-image",
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
        kind="path",
        metavar="DIR",
    ),
    Option(
        "--vm-follow-serial",
        "vm_follow_serial",
        "print the guest's serial output live",
        kind="bool",
        old=("--follow-serial",),
    ),
    Option("--vm-dry-run", "vm_dry_run", "print each planned QEMU command line and run nothing", kind="bool"),
    Option(
        "--vm-shard",
        "vm_shard",
        "run only shard K (1-based) of N of the VM plan, whole VMs per shard (docs/sharding.md)",
        metavar="K/N",
    ),
    Option(
        "--vm-durations",
        "vm_durations",
        "JSON file of recorded VM durations that every shard reads to balance --vm-shard (default: estimates)",
        kind="path",
        metavar="PATH",
    ),
    Option(
        "--vm-replay",
        "vm_replay",
        "judge a recorded run instead of booting: an earlier run's --vm-artifacts directory, one VM's "
        "directory in it, or a serial log (tests whose evidence was not recorded skip)",
        kind="path",
        metavar="PATH",
    ),
    Option(
        "--vm-keep-on-failure",
        "vm_keep_on_failure",
        "when a test of a VM fails, keep that VM running, print how to reach it (QMP and console unix sockets, "
        "VNC on 127.0.0.1) and wait for Enter before stopping it; --pdb keeps it reachable while pdb runs",
        kind="bool",
    ),
    _vectors_option(None),
    *(_vectors_option(dev) for dev in ("blk", "net", "input", "snd")),
    Option(
        "--vm-blk-resize-delta-mib",
        "vm_blk_resize_delta_mib",
        "how much the blk resize reaction grows the disk",
        default="64",
        kind="int",
        metavar="MIB",
        old=("--blk-resize-delta-mib",),
    ),
)


def register(parser: pytest.Parser) -> None:
    """Add every option to pytest: a named group with defaults in the help, an ini key each, hidden aliases.

    Booleans get a ``--no-`` form too, so a value set in an ini file can be switched off for one run.
    """
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    for opt in OPTIONS:
        default_text = "" if opt.default is None else f" (default: {opt.default})"
        kw: dict[str, Any] = {"dest": opt.dest, "default": None, "help": opt.help + default_text}
        if opt.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif opt.kind == "args":
            kw.update(action="append", metavar=opt.metavar)
        else:
            kw.update(action="store", metavar=opt.metavar, choices=opt.choices)
        group.addoption(opt.flag, **kw)
        for old in opt.old:
            group.addoption(old, **{**kw, "dest": _dest(old), "help": argparse.SUPPRESS})
            parser.addini(_dest(old), f"deprecated: use {opt.ini}", type=_INI_TYPE.get(opt.kind), default=None)  # type: ignore[arg-type]
        parser.addini(opt.ini, opt.help + default_text, type=_INI_TYPE.get(opt.kind), default=None)  # type: ignore[arg-type]


def _dest(flag: str) -> str:
    """argparse's dest (and the ini name) of a flag: ``--vm-image`` -> ``vm_image``."""
    return flag.lstrip("-").replace("-", "_")


def _from_ini(config: pytest.Config, opt: Option, name: str) -> Any:
    value = config.getini(name)
    if value in (None, "", []):
        return None
    if opt.kind == "path" and config.inipath is not None:
        # A relative path in an ini file means relative to that file, not to wherever pytest was started.
        value = str(config.inipath.parent / os.path.expanduser(str(value)))
    return value


def collect(config: pytest.Config) -> dict[str, Any]:
    """Raw values by ini name: the command line wins over the ini file, which wins over the default.

    ``args`` options add up (ini first, then the command line), each value split like a shell line. An old
    spelling counts as the option and warns once, naming the new one.
    """
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        cli, ini = config.getoption(opt.dest), _from_ini(config, opt, opt.ini)
        for old in opt.old:
            old_cli, old_ini = config.getoption(_dest(old)), _from_ini(config, opt, _dest(old))
            if old_cli is not None or old_ini is not None:
                _warn_renamed(config, old, opt)
            cli = cli if cli is not None else old_cli
            ini = ini if ini is not None else old_ini
        if opt.kind == "args":
            values[opt.ini] = [*(ini or []), *(part for arg in cli or () for part in shlex.split(arg))]
        elif opt.kind == "bool":
            values[opt.ini] = bool(cli) if cli is not None else bool(ini)
        else:
            picked = cli if cli is not None else ini
            values[opt.ini] = str(picked) if picked is not None else opt.default
    return values


def _warn_renamed(config: pytest.Config, old: str, opt: Option) -> None:
    config.issue_config_time_warning(
        pytest.PytestDeprecationWarning(
            f"{old} (ini {_dest(old)}) is renamed {opt.flag} (ini {opt.ini}); the old name will go away"
        ),
        stacklevel=2,
    )


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
        raise _fail("--vm-http-path", value, f"contains {bad[0]!r}", "use a plain path like /aero-virtio-selftest")
    return value


def parse_choice(opt_flag: str, value: str, choices: tuple[str, ...]) -> str:
    """A value from a fixed set; the error lists the accepted values."""
    if value not in choices:
        raise _fail(opt_flag, value, "unknown value", f"use one of: {', '.join(choices)}")
    return value


def readable_file(flag: str, value: str | None) -> Path | None:
    """A path that must name a readable regular file (images, kernels): checked before QEMU sees it, with the
    real cause when it is not (a symlink loop, a dangling link, a permission problem on the way)."""
    if value is None or value == "":
        return None
    path = Path(os.path.expanduser(str(value)))
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb"):
                pass
    except OSError as exc:
        raise open_error(flag, path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise AeroConfigError(
            f"{flag}: {path} is not a regular file",
            fix=f"pass a disk image file to {flag}",
            token=IMAGE_UNREADABLE,
        )
    return path.resolve()


def vectors_from(values: Mapping[str, Any]) -> dict[str, int | None]:
    """Per-device MSI-X vector counts: a device's own option wins over the global one."""
    glob = parse_int("--vm-msix-vectors", values.get("vm_msix_vectors"), maximum=2048)
    out: dict[str, int | None] = {}
    for dev in ("blk", "net", "input", "snd"):
        own = parse_int(f"--vm-{dev}-vectors", values.get(f"vm_{dev}_vectors"), maximum=2048)
        out[dev] = own if own is not None else glob
    return out

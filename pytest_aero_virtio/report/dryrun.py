"""``--vm-dry-run``: per planned VM, a QEMU command a person can paste into a shell and run.

The command is built by the same function a boot uses (:func:`pytest_aero_virtio.vm.runtime_paths` and
``build_argv``); only what a boot hands over as inherited descriptors differs: the console and QMP become
unix sockets in a directory the listing names (the console is also copied to ``serial.log`` there), and the
snapshot overlay is created there, so the pasted command really boots the guest. The host's HTTP and UDP
services do not run in a dry run: the ports are the ones a run would use (fixed ones as given, ephemeral ones
picked now), so the guest's network checks will fail unless something listens there.
"""

from __future__ import annotations

import shlex
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..plan import PlannedVm
from ..qemu.argv import ImageFormat, UnixSocket, build_argv, image_format, prepare_overlay
from ..run import AeroRun
from ..vm import runtime_paths

__all__ = ["dry_run_lines", "format_command", "free_port"]

#: sun_path holds 108 bytes; a longer socket path cannot be bound.
_MAX_SOCKET_PATH = 100


def format_command(argv: Sequence[str]) -> list[str]:
    """One argument per line, shell-quoted, with continuation backslashes: pasteable as it is."""
    quoted = [shlex.quote(a) for a in argv]
    last = len(quoted) - 1
    return [("  " if i else "") + arg + (" \\" if i < last else "") for i, arg in enumerate(quoted)]


def free_port(kind: int) -> int:
    """A port free right now on loopback (``socket.SOCK_STREAM`` or ``SOCK_DGRAM``), as a run would get."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _socket_dir(root: Path) -> Path:
    """Where the dry run's sockets and overlays go: under the artifacts root, or a private temp dir when that
    path is too long for a unix socket."""
    wanted = root / "dry-run"
    if len(str(wanted / "vm00" / "serial.sock")) <= _MAX_SOCKET_PATH:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    return Path(tempfile.mkdtemp(prefix="aero-dry-run-"))


def _vm_command(run: AeroRun, vm: PlannedVm, directory: Path) -> list[str]:
    settings = run.settings
    o = settings.options
    vm_dir = directory / vm.id
    vm_dir.mkdir(parents=True, exist_ok=True)
    overlay = vm_dir / "overlay.qcow2"
    fmt: ImageFormat = "raw"
    if o.image is not None:  # the format rule of a boot (VmHandle._prepare_disk): the overlay's base, or the image
        fmt = prepare_overlay(o.image, overlay) if o.snapshot else image_format(o.image)
    rt = runtime_paths(
        settings,
        vm.config,
        accel=run.accel().name,
        http_port=o.http_port or free_port(socket.SOCK_STREAM),
        udp_port=o.udp_port or free_port(socket.SOCK_DGRAM),
        serial=UnixSocket(vm_dir / "serial.sock", log=vm_dir / "serial.log"),  # type: ignore[arg-type]
        qmp=UnixSocket(vm_dir / "qmp.sock"),  # type: ignore[arg-type]
        wav_path=vm_dir / "audio.wav",
        overlay=overlay,
        image_format=fmt,
    )
    return build_argv(o, vm.config, run.caps(), rt)


def dry_run_lines(run: AeroRun) -> list[str]:
    """The listing: per VM a comment block (devices, flags, reactions, tests, where its sockets are) and the
    command."""
    assert run.plan is not None
    directory = _socket_dir(run.settings.options.artifacts_dir)
    lines = [f"# sockets, console logs and snapshot overlays of the commands below: {directory}"]
    for vm in run.plan.vms:
        lines.append(f"# {vm.id}: {len(vm.tests)} planned test(s)")
        lines += [f"#   {line}" for line in vm.describe(verbose=True)]
        lines.append(
            f"#   console: {directory / vm.id / 'serial.sock'} (also copied to serial.log there), "
            f"QMP: {directory / vm.id / 'qmp.sock'}; the host's HTTP/UDP services do not run in a dry run"
        )
        lines += format_command(_vm_command(run, vm, directory))
    return lines

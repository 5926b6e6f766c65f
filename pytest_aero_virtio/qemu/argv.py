"""(RunOptions, VmConfig, Caps, RuntimePaths) -> QEMU argv. Pure; the only place that knows QEMU's escaping.

Why pure: the command line is where the original harness broke (quoted paths, a property stock QEMU lacks),
so it is built by one function that unit tests can drive with every option, and that dry-run prints.

QEMU option values (``key=value,key=value``) escape a comma by doubling it; QEMU does not understand quotes.
Every value that can come from the user (paths, guest args) goes through :func:`qemu_opt_escape`; values that
are a whole argument rather than an option string (``-kernel``, ``-initrd``, ``-append``) are passed as is.

The disk and ``snapshot``
-------------------------
``-blockdev`` has no ``snapshot=on``, and ``-drive ...,snapshot=on`` puts QEMU's own temporary overlay *above*
the node we name, so ``block_resize node-name=disk0`` would try to grow the read-only base instead of what the
guest sees. So with ``opts.snapshot`` the caller creates an empty qcow2 overlay file
(:func:`qcow2_overlay_bytes` / :func:`prepare_overlay`, in a per-VM temp dir) and the chain is::

    base file (read-only) -> base format node (raw|qcow2, read-only) <- backing of -> disk0 (qcow2 overlay)

The guest writes into the overlay, the base image is never opened writable, and ``disk0`` is the top node,
so ``block_resize``/``blockdev-resize`` on ``node-name=disk0`` grows exactly what the guest sees. Without
snapshot, ``disk0`` is the format node directly over the image file.
"""

from __future__ import annotations

import os
import shlex
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import RunOptions, VmConfig
from ..errors import IMAGE_UNREADABLE, AeroConfigError
from ..preflight import QCOW2_MAGIC
from .caps import Caps

__all__ = [
    "DEVICE_IDS",
    "DISK_SERIAL",
    "FW_CFG_ARGS_NAME",
    "NET_MAC",
    "ImageFormat",
    "RuntimePaths",
    "UnixSocket",
    "anonymous_overlay",
    "build_argv",
    "detect_image_format",
    "format_argv",
    "image_format",
    "image_virtual_size",
    "prepare_overlay",
    "qcow2_overlay_bytes",
    "qemu_opt_escape",
    "tablet_display",
]

#: Stable ids so QMP (and the actions) can address every device and node.
DEVICE_IDS: dict[str, str] = {
    "blk": "vblk0",
    "net": "vnet0",
    "kbd": "vkbd0",
    "mouse": "vmouse0",
    "tablet": "vtablet0",
    "snd": "vsnd0",
    "display": "vga0",
    "tablet_display": "vga1",
    "netdev": "net0",
    "disk_node": "disk0",
    "audiodev": "snd0",
    "serial_chardev": "ser0",
    "qmp_chardev": "qmp0",
    "attach_qmp_chardev": "qmp-attach",
}
DISK_SERIAL = "aero-blk0"
NET_MAC = "52:54:00:12:34:56"
FW_CFG_ARGS_NAME = "opt/aero/args"

ImageFormat = Literal["raw", "qcow2"]

#: The ``-add-fd`` set that holds the snapshot overlay's descriptor (``/dev/fdset/1``).
OVERLAY_FDSET = 1


@dataclass(frozen=True)
class UnixSocket:
    """A listening unix socket QEMU creates (``server=on,wait=off``) for a person or a tool to connect to.

    ``log`` also copies everything the chardev sends into a file (``logfile=``), so nothing the guest prints
    is lost while nobody is connected.
    """

    path: Path
    log: Path | None = None

    def chardev(self, chardev_id: str) -> str:
        extra = (("logfile", self.log),) if self.log is not None else ()
        return "socket," + _opts(("id", chardev_id), ("path", self.path), ("server", True), ("wait", False), *extra)


@dataclass(frozen=True)
class RuntimePaths:
    """What only exists once the machine layer prepared a launch (fds, temp files), plus resolved facts.

    * ``serial`` - ``"pipe"``: QEMU's own stdin and stdout, which the harness wires to pipes (``-chardev
      stdio,signal=off``; a pipe gathers QEMU's one-byte writes where a socket keeps each as a buffer of its
      own); a :class:`UnixSocket` QEMU listens on (a command a person can paste and run); an fd of a
      connected stream socket QEMU inherits (``-chardev socket,fd=N``); or ``"stdio"`` (bare runs).
    * ``qmp`` - an fd of a connected socket for QMP (``-chardev socket,fd=N -mon ...,mode=control``), a
      :class:`UnixSocket`, or None.
    * ``wav_path`` - where the wav audio backend writes (needed when the VM has sound with audio ``wav``).
    * ``guest_args`` - the guest's args string, passed as fw_cfg ``opt/aero/args`` (omitted when empty).
    * ``accel`` - ``"kvm"`` or ``"tcg"``, already resolved from ``opts.accel``.
    * ``image_format`` - the base image's format, from :func:`detect_image_format` on its first bytes.
    * ``overlay`` - the qcow2 overlay file made by :func:`prepare_overlay`, or an inherited descriptor of one
      that has no name (:func:`anonymous_overlay`): QEMU gets it as ``-add-fd`` and opens ``/dev/fdset/N``, so
      no death of anyone's can leave the file behind. Required when ``opts.snapshot``.
    * ``attach_qmp`` - a second QMP monitor on a unix socket, for a person attaching to a kept VM.
    * ``vnc`` - a ``-vnc`` value (``127.0.0.1:0,to=99``: the first free display), for the same person.
    """

    serial: int | UnixSocket | Literal["stdio", "pipe"]
    qmp: int | UnixSocket | None
    wav_path: Path | None = None
    guest_args: str = ""
    accel: str = "tcg"
    image_format: ImageFormat = "raw"
    overlay: Path | int | None = None
    attach_qmp: UnixSocket | None = None
    vnc: str | None = None


def qemu_opt_escape(value: str) -> str:
    """Escape a value for a QEMU ``key=value,...`` option string: ``,`` -> ``,,``. Never quotes."""
    return value.replace(",", ",,")


def format_argv(argv: Sequence[str]) -> str:
    """A shell-pasteable rendering of an argv (for dry-run and artifact files)."""
    return shlex.join(argv)


# --- disk image helpers (pure, plus one thin I/O wrapper) -------------------------------------------------


def detect_image_format(head: bytes) -> ImageFormat:
    """``qcow2`` when the first bytes carry the qcow2 magic, else ``raw`` (the caller reads the bytes)."""
    return "qcow2" if head[:4] == QCOW2_MAGIC else "raw"


def image_virtual_size(head: bytes, file_size: int) -> int:
    """The disk size the guest sees: the qcow2 header's size field, or the file size (rounded up to 512)."""
    if detect_image_format(head) == "qcow2":
        if len(head) < 32:
            raise ValueError("need the first 32 bytes of a qcow2 image to read its size")
        (size,) = struct.unpack(">Q", head[24:32])
        return int(size)
    return (file_size + 511) // 512 * 512


_CLUSTER_BITS = 16
_CLUSTER = 1 << _CLUSTER_BITS


def qcow2_overlay_bytes(virtual_size: int) -> bytes:
    """An empty qcow2 (v3) image of ``virtual_size`` bytes with no backing file name in its header.

    The backing node is given on the command line (``backing=<node>``), so the overlay does not record the
    base's path (no path escaping problems, no accidental writes). Layout, one 64 KiB cluster each:
    header, refcount table, refcount block, L1 table (all-zero: nothing allocated yet).
    """
    if virtual_size <= 0:
        raise ValueError(f"virtual size must be positive, got {virtual_size}")
    l2_entries = _CLUSTER // 8
    bytes_per_l1 = _CLUSTER * l2_entries
    l1_size = max(1, -(-virtual_size // bytes_per_l1))
    l1_clusters = -(-(l1_size * 8) // _CLUSTER)
    n_clusters = 3 + l1_clusters
    refblock_entries = _CLUSTER // 2  # refcount_order 4: 16-bit refcounts
    if n_clusters > refblock_entries:
        raise ValueError(f"virtual size {virtual_size} too large for a single refcount block")
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        QCOW2_MAGIC,
        3,  # version
        0,  # backing_file_offset
        0,  # backing_file_size
        _CLUSTER_BITS,
        virtual_size,
        0,  # crypt_method
        l1_size,
        3 * _CLUSTER,  # l1_table_offset
        1 * _CLUSTER,  # refcount_table_offset
        1,  # refcount_table_clusters
        0,  # nb_snapshots
        0,  # snapshots_offset
        0,  # incompatible_features
        0,  # compatible_features
        0,  # autoclear_features
        4,  # refcount_order
        104,  # header_length
    )
    header += struct.pack(">II", 0, 0)  # end of header extensions
    out = bytearray(n_clusters * _CLUSTER)
    out[: len(header)] = header
    struct.pack_into(">Q", out, _CLUSTER, 2 * _CLUSTER)  # refcount table[0] -> refcount block
    for i in range(n_clusters):
        struct.pack_into(">H", out, 2 * _CLUSTER + 2 * i, 1)
    return bytes(out)


def _image_head(image: Path) -> tuple[bytes, int]:
    try:
        with image.open("rb") as fh:
            head = fh.read(512)
        return head, image.stat().st_size
    except OSError as exc:
        raise AeroConfigError(
            f"cannot read the VM image {image}: {exc.strerror or exc}",
            fix="give a readable disk image with --vm-image, or build the reference one: aero-virtio-refenv build",
            token=IMAGE_UNREADABLE,
        ) from exc


def image_format(image: Path) -> ImageFormat:
    """The format of ``image`` as QEMU is told it (``IMAGE_UNREADABLE`` when it cannot be read)."""
    return detect_image_format(_image_head(image)[0])


def anonymous_overlay(image: Path, directory: str | None = None) -> tuple[int, ImageFormat]:
    """An empty qcow2 overlay for ``image`` in a file without a name; (its read-write descriptor, the image's
    format). The caller hands the descriptor to QEMU (``RuntimePaths.overlay``) and closes its own copy.

    ``tempfile.TemporaryFile`` opens it with ``O_TMPFILE`` (mode 0600), nameless from the start: there is no
    instant at which a SIGKILL could leave it in the temp directory, and it disappears with the last descriptor
    (QEMU's). Where the file system has no ``O_TMPFILE``, it unlinks a named file right after creation (a
    window of microseconds).
    """
    head, size = _image_head(image)
    data = qcow2_overlay_bytes(image_virtual_size(head, size))
    with tempfile.TemporaryFile(dir=directory) as fh:
        fh.write(data)
        fh.flush()
        fd = os.dup(fh.fileno())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd, detect_image_format(head)


def prepare_overlay(image: Path, overlay: Path) -> ImageFormat:
    """Write an empty qcow2 overlay for ``image`` at ``overlay``; return the image's format.

    Thin I/O around the pure helpers, for the machine layer (and dry-run, which may skip it).
    """
    head, size = _image_head(image)
    fmt = detect_image_format(head)
    overlay.write_bytes(qcow2_overlay_bytes(image_virtual_size(head, size)))
    return fmt


# --- the command line -----------------------------------------------------------------------------------


def _opts(*items: tuple[str, object]) -> str:
    """``key=value,...`` with values escaped; None values are dropped, bools become on/off."""
    out: list[str] = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, Path):
            text = qemu_opt_escape(str(value))
        else:
            text = qemu_opt_escape(str(value))
        out.append(f"{key}={text}")
    return ",".join(out)


def _pinned_qemu_fix() -> str:
    return "use a QEMU that has it: --qemu-system=$(aero-virtio-refenv qemu) (the pinned QEMU 10)"


def _virtio_device(
    caps: Caps,
    driver: str,
    dev_id: str,
    vm: VmConfig,
    vectors: int | None,
    extra: Sequence[tuple[str, object]] = (),
) -> list[str]:
    """``-device <driver>,...`` with the modern/transitional switch, vectors and x-pci-revision per caps."""
    if not caps.has_device(driver):
        raise AeroConfigError(f"QEMU {caps.version_str} has no device {driver}", fix=_pinned_qemu_fix())
    props: list[tuple[str, object]] = [("driver", driver), ("id", dev_id), *extra]
    props.append(("disable-legacy", not vm.transitional))
    if vectors is not None:
        if not caps.has_prop(driver, "vectors"):
            raise AeroConfigError(
                f"QEMU {caps.version_str}: {driver} has no 'vectors' property, cannot set vectors={vectors}",
                fix="drop the vectors option for this device or use another QEMU",
            )
        props.append(("vectors", vectors))
    if caps.has_prop(driver, "x-pci-revision"):
        props.append(("x-pci-revision", "0x01"))
    text = _opts(*props[1:])
    return ["-device", f"{driver},{text}"]


def _disk_args(opts: RunOptions, rt: RuntimePaths, image: Path) -> list[str]:
    node = DEVICE_IDS["disk_node"]
    if opts.snapshot:
        if rt.overlay is None:
            raise ValueError("opts.snapshot needs rt.overlay (make one with prepare_overlay())")
        fdset: list[str] = []
        overlay: Path | str = rt.overlay if isinstance(rt.overlay, Path) else f"/dev/fdset/{OVERLAY_FDSET}"
        if isinstance(rt.overlay, int):
            fdset = ["-add-fd", f"fd={rt.overlay},set={OVERLAY_FDSET},opaque=aero-overlay"]
        return [
            *fdset,
            "-blockdev",
            _opts(("driver", "file"), ("node-name", "base-file"), ("filename", image), ("read-only", True)),
            "-blockdev",
            _opts(("driver", rt.image_format), ("node-name", "base"), ("file", "base-file"), ("read-only", True)),
            "-blockdev",
            _opts(("driver", "file"), ("node-name", f"{node}-file"), ("filename", overlay)),
            "-blockdev",
            _opts(("driver", "qcow2"), ("node-name", node), ("file", f"{node}-file"), ("backing", "base")),
        ]
    return [
        "-blockdev",
        _opts(("driver", "file"), ("node-name", f"{node}-file"), ("filename", image)),
        "-blockdev",
        _opts(("driver", rt.image_format), ("node-name", node), ("file", f"{node}-file")),
    ]


def _chardev(spec: int | UnixSocket, chardev_id: str) -> str:
    return spec.chardev(chardev_id) if isinstance(spec, UnixSocket) else f"socket,id={chardev_id},fd={int(spec)}"


def _chardev_args(rt: RuntimePaths) -> list[str]:
    """The console (COM1) and the QMP monitor: inherited socket fds, unix sockets, or stdio for the console."""
    ids = DEVICE_IDS
    argv: list[str] = []
    if rt.serial == "stdio":
        argv += ["-serial", "stdio"]
    elif rt.serial == "pipe":
        argv += [
            "-chardev",
            f"stdio,id={ids['serial_chardev']},signal=off",
            "-serial",
            f"chardev:{ids['serial_chardev']}",
        ]
    else:
        argv += ["-chardev", _chardev(rt.serial, ids["serial_chardev"]), "-serial", f"chardev:{ids['serial_chardev']}"]
    if rt.qmp is not None:
        argv += ["-chardev", _chardev(rt.qmp, ids["qmp_chardev"]), "-mon", f"chardev={ids['qmp_chardev']},mode=control"]
    if rt.attach_qmp is not None:
        chardev = ids["attach_qmp_chardev"]
        argv += ["-chardev", rt.attach_qmp.chardev(chardev), "-mon", f"chardev={chardev},mode=control"]
    return argv


def build_argv(opts: RunOptions, vm: VmConfig, caps: Caps, rt: RuntimePaths) -> list[str]:
    """The full QEMU argv for one VM (the device contract is in docs/protocol.md). Pure: no I/O, same inputs ->
    same argv.

    Raises AeroConfigError when the QEMU (per ``caps``) lacks a device or property the VM needs, and
    ValueError for caller mistakes (snapshot without an overlay, wav audio without a wav path).
    """
    if opts.image is None and opts.kernel is None:
        raise AeroConfigError(
            "nothing to boot: neither a disk image nor a kernel was given",
            fix="give --vm-image=<disk> (or --vm-kernel for direct kernel boot)",
        )
    argv = [
        str(opts.qemu.path),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        f"{opts.machine},accel={rt.accel}",
        "-m",
        str(opts.memory_mib),
        "-smp",
        str(opts.smp),
        "-no-reboot",
    ]
    # Serial first: it is COM1, the port the guest writes markers to.
    argv += _chardev_args(rt)
    argv += _display_args(vm, caps) + (["-vnc", rt.vnc] if rt.vnc else [])
    if opts.image is not None:
        argv += _disk_args(opts, rt, opts.image)
        blk_extra = (("drive", DEVICE_IDS["disk_node"]), ("serial", DISK_SERIAL))
        argv += _virtio_device(caps, "virtio-blk-pci", DEVICE_IDS["blk"], vm, vm.vectors.blk, blk_extra)
    argv += _net_args(vm, caps)
    argv += _input_args(vm, caps)
    argv += _sound_args(opts, vm, caps, rt)
    argv += _boot_args(opts, rt)
    return argv + list(opts.extra_args)


def tablet_display(caps: Caps) -> str:
    """The console the tablet is bound to, and so the ``device`` its injected events name: its own
    ``secondary-vga`` where QEMU has one, else the main VGA (one rule for the command line and the reactions)."""
    return DEVICE_IDS["tablet_display"] if caps.has_device("secondary-vga") else DEVICE_IDS["display"]


def _display_args(vm: VmConfig, caps: Caps) -> list[str]:
    """The displays, which must exist before the input devices bind to them.

    The tablet gets a console of its own: bound to the same one as the mouse, button events would go to
    whichever pointer the guest activated last (QEMU's ui/input.c), so tablet clicks could land on the mouse.
    """
    argv = ["-device", f"VGA,id={DEVICE_IDS['display']}"]
    if vm.tablet and tablet_display(caps) != DEVICE_IDS["display"]:
        argv += ["-device", f"secondary-vga,id={tablet_display(caps)}"]
    return argv


def _net_args(vm: VmConfig, caps: Caps) -> list[str]:
    ids = DEVICE_IDS
    extra = (("netdev", ids["netdev"]), ("mac", NET_MAC))
    return [
        "-netdev",
        f"user,id={ids['netdev']}",
        *_virtio_device(caps, "virtio-net-pci", ids["net"], vm, vm.vectors.net, extra),
    ]


def _input_args(vm: VmConfig, caps: Caps) -> list[str]:
    """Keyboard and mouse bound to ``vga0``, the tablet to its own ``vga1`` (each only where QEMU can bind)."""
    ids = DEVICE_IDS
    inputs = [("virtio-keyboard-pci", ids["kbd"], ids["display"]), ("virtio-mouse-pci", ids["mouse"], ids["display"])]
    if vm.tablet:
        inputs.append(("virtio-tablet-pci", ids["tablet"], tablet_display(caps)))
    argv: list[str] = []
    for driver, dev_id, display in inputs:
        extra: tuple[tuple[str, object], ...] = (("display", display),) if caps.has_prop(driver, "display") else ()
        argv += _virtio_device(caps, driver, dev_id, vm, vm.vectors.input, extra)
    return argv


def _sound_args(opts: RunOptions, vm: VmConfig, caps: Caps, rt: RuntimePaths) -> list[str]:
    """The audio backend (wav records playback to a file; none captures silence) and the sound device."""
    if not vm.snd:
        return []
    ids = DEVICE_IDS
    if vm.audio == "wav":
        if rt.wav_path is None:
            raise ValueError("a VM with wav audio needs rt.wav_path")
        audiodev = _opts(("id", ids["audiodev"]), ("path", rt.wav_path), ("out.frequency", opts.wav_frequency))
        argv = ["-audiodev", f"wav,{audiodev}"]
    else:
        argv = ["-audiodev", f"none,id={ids['audiodev']}"]
    return argv + _virtio_device(
        caps, "virtio-sound-pci", ids["snd"], vm, vm.vectors.snd, (("audiodev", ids["audiodev"]),)
    )


def _boot_args(opts: RunOptions, rt: RuntimePaths) -> list[str]:
    """The guest's arguments (fw_cfg) and direct kernel boot."""
    argv: list[str] = []
    if rt.guest_args:
        argv += ["-fw_cfg", f"name={FW_CFG_ARGS_NAME},string={qemu_opt_escape(rt.guest_args)}"]
    if opts.kernel is not None:
        # Whole-argument values: QEMU does not parse these as option strings, so no escaping.
        argv += ["-kernel", str(opts.kernel)]
        if opts.initrd is not None:
            argv += ["-initrd", str(opts.initrd)]
        if opts.append is not None:
            argv += ["-append", opts.append]
    return argv

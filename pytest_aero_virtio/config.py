"""Frozen configuration values: what a run is (RunOptions) and what one VM is (VmConfig).

They are frozen and hashable on purpose: the planner groups selected tests by ``VmConfig`` (equal configs
share one boot), and a value that cannot change under a running VM removes a whole class of bugs.

``str(VmConfig)`` is a short, stable, space-free id used in pytest ids and artifact directory names, so a
reader sees at a glance which devices and opt-in flags a VM had.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from .errors import AeroConfigError

__all__ = [
    "DEFAULT_HTTP_PATH",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_UDP_PORT",
    "AccelName",
    "AudioBackend",
    "QemuCommand",
    "RunOptions",
    "Vectors",
    "VmConfig",
]

DEFAULT_HTTP_PORT = 18080
DEFAULT_UDP_PORT = 18081
DEFAULT_HTTP_PATH = "/aero-virtio-selftest"

AudioBackend = Literal["wav", "none"]
AccelName = Literal["auto", "kvm", "tcg"]


@dataclass(frozen=True)
class QemuCommand:
    """A ``qemu-system-x86_64`` binary or a launcher script that ``exec``s one (same command line)."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Vectors:
    """MSI-X table size per device (``vectors=N``); None keeps QEMU's default, 0 forces INTx."""

    blk: int | None = None
    net: int | None = None
    input: int | None = None
    snd: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise AeroConfigError(
                    f"vectors for {f.name} must be a non-negative integer, got {value!r}",
                    fix="give vectors=N with N >= 0 (0 forces INTx)",
                )

    def is_default(self) -> bool:
        """True when no device has an explicit vector count."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def __str__(self) -> str:
        """``blk4.net0`` (set devices only, in field order); empty when all default."""
        return ".".join(f"{f.name}{getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) is not None)


@dataclass(frozen=True)
class VmConfig:
    """What differs between the VMs of one run. Equal configs share one boot.

    ``guest_flags`` are the guest's opt-in flags without the leading ``--`` (``test-blk-resize``);
    ``reactions`` are names of host actions to arm (keys of ``actions.ACTIONS``, e.g. ``blk_resize``).
    ``audio`` matters only with ``snd``: ``wav`` records the guest's playback to a file (checked on the
    host) but breaks capture; ``none`` lets capture work (silence). Which needs can share one VM is decided in
    one place, :func:`pytest_aero_virtio.plan.make_plan`.
    """

    tablet: bool = False
    snd: bool = False
    audio: AudioBackend = "wav"
    vectors: Vectors = field(default_factory=Vectors)
    transitional: bool = False
    guest_flags: frozenset[str] = frozenset()
    reactions: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.audio not in ("wav", "none"):
            raise AeroConfigError(f"audio backend must be 'wav' or 'none', got {self.audio!r}")
        # Accept any iterable of strings for convenience but store frozensets (hashable, order-free).
        object.__setattr__(self, "guest_flags", frozenset(f.removeprefix("--") for f in self.guest_flags))
        object.__setattr__(self, "reactions", frozenset(self.reactions))

    def devices(self) -> tuple[str, ...]:
        """Device groups attached, in a fixed order: always blk, net, input; then tablet, snd on request."""
        return ("blk", "net", "input") + (("tablet",) if self.tablet else ()) + (("snd",) if self.snd else ())

    def __str__(self) -> str:
        """A stable id without spaces, commas or slashes, e.g.
        ``blk-net-input+tablet+snd.wav_vec.blk4.net0_flags.blk-resize.input-events_react.blk_resize``.
        """
        parts = ["blk-net-input"]
        if self.tablet:
            parts.append("+tablet")
        if self.snd:
            parts.append(f"+snd.{self.audio}")
        sections = ["".join(parts)]
        if not self.vectors.is_default():
            sections.append(f"vec.{self.vectors}")
        if self.transitional:
            sections.append("transitional")
        if self.guest_flags:
            sections.append("flags." + ".".join(sorted(f.removeprefix("test-") for f in self.guest_flags)))
        if self.reactions:
            sections.append("react." + ".".join(sorted(self.reactions)))
        return "_".join(sections)


@dataclass(frozen=True)
class RunOptions:
    """Session-wide options, validated once by options.py (and sanity-checked here).

    Fields beyond the design sketch:

    * ``wav_frequency`` - the sample rate asked of QEMU's wav backend (``out.frequency``); without it QEMU
      records at 44100 Hz whatever the guest plays, which hides rate bugs. 48000 matches the guest's tone.
    """

    qemu: QemuCommand
    image: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    memory_mib: int = 512
    smp: int = 1
    machine: str = "q35"
    accel: AccelName = "auto"
    timeout_s: float = 600.0
    snapshot: bool = True
    extra_args: tuple[str, ...] = ()
    http_port: int = DEFAULT_HTTP_PORT
    udp_port: int = DEFAULT_UDP_PORT
    http_path: str = DEFAULT_HTTP_PATH
    artifacts_dir: Path = Path("aero-virtio-artifacts")
    follow_serial: bool = False
    dry_run: bool = False
    wav_frequency: int = 48000

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        problems: list[str] = []
        if self.memory_mib < 16:
            problems.append(f"memory must be at least 16 MiB, got {self.memory_mib}")
        if self.smp < 1:
            problems.append(f"smp must be at least 1, got {self.smp}")
        if not self.machine or any(c in self.machine for c in ", \t\n"):
            problems.append(f"machine must be a QEMU machine type name, got {self.machine!r}")
        if self.accel not in ("auto", "kvm", "tcg"):
            problems.append(f"accel must be auto, kvm or tcg, got {self.accel!r}")
        if not self.timeout_s > 0:
            problems.append(f"timeout must be positive, got {self.timeout_s}")
        for name in ("http_port", "udp_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                problems.append(f"{name} must be 0..65535, got {port}")
        if not self.http_path.startswith("/") or any(c.isspace() for c in self.http_path):
            problems.append(f"HTTP path must start with '/' and contain no spaces, got {self.http_path!r}")
        if self.initrd is not None and self.kernel is None:
            problems.append("an initrd needs a kernel (direct kernel boot)")
        if self.append is not None and self.kernel is None:
            problems.append("a kernel command line (append) needs a kernel (direct kernel boot)")
        if self.wav_frequency <= 0:
            problems.append(f"wav frequency must be positive, got {self.wav_frequency}")
        if problems:
            raise AeroConfigError("; ".join(problems), fix="correct the --vm-* options (see pytest --help)")

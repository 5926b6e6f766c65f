"""What a QEMU binary can do: devices, device properties, QMP commands. Probed once, never assumed.

The original harness assumed ``x-pci-revision`` (stock QEMU has no such property) and ``blockdev-resize``
(QEMU 7.2 has none); both made stock QEMU fail. Here the binary is asked, and the answer cached on disk:

* ``<qemu> --version`` - proves the file runs and is a QEMU (cheap, clear error otherwise);
* one QMP session over stdio (``-machine none -nodefaults -display none -qmp stdio``): the greeting carries
  the version, ``qom-list-types`` (devices), ``device-list-properties`` for every device the argv builder
  uses (the same data as ``-device <d>,help``, without one QEMU start per device), ``query-commands``.
  If ``qom-list-types`` fails, ``-device help`` is parsed instead.

Parsers are pure functions over the captured text (unit-tested on real QEMU 7.2 output in tests/unit/data);
:func:`probe` is the thin I/O around them, :func:`probe_cached` adds the disk cache keyed by the binary's
realpath, size and mtime (and, for a launcher script, its content hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..config import QemuCommand
from ..errors import QEMU_NOT_FOUND, AeroConfigError
from .process import run_child_text

__all__ = [
    "PROBED_DEVICES",
    "Caps",
    "caps_from_json",
    "caps_to_json",
    "parse_device_help",
    "parse_qmp_transcript",
    "parse_version",
    "probe",
    "probe_cached",
    "qmp_probe_script",
]

#: Devices whose properties the argv builder (and the actions) look at.
PROBED_DEVICES: tuple[str, ...] = (
    "virtio-blk-pci",
    "virtio-net-pci",
    "virtio-keyboard-pci",
    "virtio-mouse-pci",
    "virtio-tablet-pci",
    "virtio-sound-pci",
    "VGA",
)
#: Bump when the probe or the JSON layout changes (invalidates the disk cache).
CACHE_FORMAT = 1
PROBE_TIMEOUT_S = 30.0

_FIX = "give a working QEMU with --qemu-system=<path>, or the pinned one: --qemu-system=$(aero-virtio-refenv qemu)"


def _empty_props() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Caps:
    """Capabilities of one QEMU binary (see :func:`probe`)."""

    version: tuple[int, int, int]
    devices: frozenset[str] = frozenset()
    device_props: Mapping[str, frozenset[str]] = field(default_factory=_empty_props, hash=False)
    qmp_commands: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        props = {str(k): frozenset(v) for k, v in self.device_props.items()}
        object.__setattr__(self, "device_props", MappingProxyType(props))
        object.__setattr__(self, "devices", frozenset(self.devices))
        object.__setattr__(self, "qmp_commands", frozenset(self.qmp_commands))

    @property
    def version_str(self) -> str:
        return ".".join(str(v) for v in self.version)

    def has_device(self, name: str) -> bool:
        return name in self.devices

    def has_prop(self, device: str, prop: str) -> bool:
        return prop in self.device_props.get(device, frozenset())

    def has_command(self, name: str) -> bool:
        return name in self.qmp_commands

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.version[:2] >= (major, minor)


# --- pure parsers ---------------------------------------------------------------------------------------

_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """``QEMU emulator version 7.2.22 (Debian ...)`` -> ``(7, 2, 22)``; ValueError if not a QEMU."""
    m = _VERSION_RE.search(text)
    if not m:
        raise ValueError(f"not a QEMU version banner: {text.strip()[:200]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


_DEVICE_RE = re.compile(r'^name "([^"]+)"', re.MULTILINE)
_ALIAS_RE = re.compile(r'alias "([^"]+)"')


def parse_device_help(text: str) -> frozenset[str]:
    """Device names (and their aliases) from ``-device help`` output."""
    names: set[str] = set()
    for line in text.splitlines():
        m = _DEVICE_RE.match(line)
        if m:
            names.add(m.group(1))
            names.update(_ALIAS_RE.findall(line))
    return frozenset(names)


def qmp_probe_script(devices: Iterable[str] = PROBED_DEVICES) -> str:
    """The QMP commands sent on stdin, one JSON object per line, each with an ``id``."""
    cmds: list[dict[str, Any]] = [
        {"execute": "qmp_capabilities", "id": "caps"},
        {"execute": "query-commands", "id": "commands"},
        {
            "execute": "qom-list-types",
            "arguments": {"implements": "device", "abstract": False},
            "id": "types",
        },
    ]
    cmds += [{"execute": "device-list-properties", "arguments": {"typename": d}, "id": f"props:{d}"} for d in devices]
    cmds.append({"execute": "quit", "id": "quit"})
    return "".join(json.dumps(c) + "\n" for c in cmds)


@dataclass(frozen=True)
class QmpTranscript:
    """What a QMP stdio session answered: the version from the greeting and replies by id."""

    version: tuple[int, int, int] | None
    returns: Mapping[str, Any]
    errors: Mapping[str, str]


def parse_qmp_transcript(text: str) -> QmpTranscript:
    """Parse the JSON lines QEMU wrote for :func:`qmp_probe_script` (events and junk lines are skipped)."""
    version: tuple[int, int, int] | None = None
    returns: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "QMP" in obj:
            v = obj["QMP"].get("version", {}).get("qemu", {})
            version = (int(v.get("major", 0)), int(v.get("minor", 0)), int(v.get("micro", 0)))
        elif "id" in obj and "return" in obj:
            returns[str(obj["id"])] = obj["return"]
        elif "id" in obj and "error" in obj:
            err = obj["error"]
            errors[str(obj["id"])] = f"{err.get('class', '')}: {err.get('desc', '')}"
    return QmpTranscript(version, MappingProxyType(returns), MappingProxyType(errors))


def caps_from_transcript(tr: QmpTranscript, version: tuple[int, int, int], device_help: str | None = None) -> Caps:
    """Build Caps from a QMP transcript (``device_help`` is the fallback source of device names)."""
    commands = frozenset(str(c["name"]) for c in tr.returns.get("commands", []) if isinstance(c, dict) and "name" in c)
    if "types" in tr.returns:
        devices = frozenset(str(t["name"]) for t in tr.returns["types"] if isinstance(t, dict) and "name" in t)
    elif device_help is not None:
        devices = parse_device_help(device_help)
    else:
        devices = frozenset()
    props: dict[str, frozenset[str]] = {}
    for key, value in tr.returns.items():
        if key.startswith("props:") and isinstance(value, list):
            props[key.removeprefix("props:")] = frozenset(
                str(p["name"]) for p in value if isinstance(p, dict) and "name" in p
            )
    # A device that answered device-list-properties exists, whatever the type list said.
    return Caps(version, devices | frozenset(props), props, commands)


def caps_to_json(caps: Caps) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": list(caps.version),
        "devices": sorted(caps.devices),
        "device_props": {k: sorted(v) for k, v in sorted(caps.device_props.items())},
        "qmp_commands": sorted(caps.qmp_commands),
    }


def caps_from_json(data: Mapping[str, Any]) -> Caps:
    if data.get("format") != CACHE_FORMAT:
        raise ValueError("caps cache format mismatch")
    v = data["version"]
    return Caps(
        (int(v[0]), int(v[1]), int(v[2])),
        frozenset(data["devices"]),
        {k: frozenset(p) for k, p in data["device_props"].items()},
        frozenset(data["qmp_commands"]),
    )


# --- I/O ----------------------------------------------------------------------------------------------


def resolve_qemu(qemu: QemuCommand) -> Path:
    """The absolute path of the QEMU command (PATH lookup for a bare name), or AeroConfigError."""
    raw = str(qemu.path)
    found = shutil.which(raw) if os.sep not in raw else raw
    if not found or not Path(found).exists():
        raise AeroConfigError(f"QEMU not found: {raw}", fix=_FIX, token=QEMU_NOT_FOUND)
    path = Path(found).absolute()
    if path.is_dir() or not os.access(path, os.X_OK):
        raise AeroConfigError(f"QEMU is not an executable file: {path}", fix=_FIX, token=QEMU_NOT_FOUND)
    return path


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """One probe, with a QEMU run's hygiene (own process group, parent-death signal, group killed on timeout):
    a launcher script that hangs must not leave its QEMU behind."""
    try:
        return run_child_text(argv, PROBE_TIMEOUT_S, input=stdin.encode() if stdin is not None else None)
    except subprocess.TimeoutExpired as exc:
        raise AeroConfigError(
            f"QEMU probe {' '.join(argv[1:])!r} did not finish within {PROBE_TIMEOUT_S:g} s",
            fix=_FIX,
            token=QEMU_NOT_FOUND,
        ) from exc
    except OSError as exc:
        raise AeroConfigError(
            f"cannot run QEMU {argv[0]}: {exc.strerror or exc}", fix=_FIX, token=QEMU_NOT_FOUND
        ) from exc


def _tail(text: str, n: int = 5) -> str:
    lines = [s for s in text.strip().splitlines() if s.strip()]
    return " / ".join(lines[-n:])


def probe(qemu: QemuCommand) -> Caps:
    """Ask the binary (about 0.2 s for QEMU 7.2). Raises AeroConfigError(QEMU_NOT_FOUND) naming the fix."""
    path = resolve_qemu(qemu)
    ver = _run([str(path), "--version"])
    if ver.returncode != 0:
        raise AeroConfigError(
            f"{path} --version failed (exit {ver.returncode}): {_tail(ver.stderr + ver.stdout)}",
            fix=_FIX,
            token=QEMU_NOT_FOUND,
        )
    try:
        version = parse_version(ver.stdout)
    except ValueError as exc:
        raise AeroConfigError(f"{path} does not look like QEMU: {exc}", fix=_FIX, token=QEMU_NOT_FOUND) from exc
    session = _run(
        [str(path), "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
        stdin=qmp_probe_script(),
    )
    tr = parse_qmp_transcript(session.stdout)
    if "commands" not in tr.returns:
        raise AeroConfigError(
            f"QEMU {path} died during the QMP probe (exit {session.returncode}): "
            f"{_tail(session.stderr) or _tail(session.stdout)}",
            fix=_FIX,
            token=QEMU_NOT_FOUND,
        )
    device_help: str | None = None
    if "types" not in tr.returns:
        device_help = _run([str(path), "-device", "help"]).stdout
    return caps_from_transcript(tr, version, device_help)


def cache_key(path: Path) -> str:
    """Identity of a QEMU binary: realpath, size, mtime, and a launcher script's content hash."""
    from ..refenv.cache import stable_key

    real = path.resolve()
    st = real.stat()
    parts: list[tuple[str, bytes | str]] = [
        ("realpath", str(real)),
        ("size", str(st.st_size)),
        ("mtime_ns", str(st.st_mtime_ns)),
        ("format", str(CACHE_FORMAT)),
    ]
    with real.open("rb") as fh:
        head = fh.read(2)
    if head == b"#!" and st.st_size < 1 << 20:
        parts.append(("script", hashlib.sha256(real.read_bytes()).hexdigest()))
    return stable_key(parts)


_memo: dict[str, Caps] = {}


def probe_cached(qemu: QemuCommand, cache_dir: Path | None = None) -> Caps:
    """:func:`probe`, remembered in-process and on disk (``<cache root>/caps/<key>.json``).

    A damaged or stale cache file is ignored and rewritten; the write is atomic (temp file + rename), so
    concurrent xdist workers at worst probe twice.
    """
    from ..refenv.cache import cache_root

    path = resolve_qemu(qemu)
    key = cache_key(path)
    if key in _memo:
        return _memo[key]
    directory = (cache_dir if cache_dir is not None else cache_root()) / "caps"
    file = directory / f"{key}.json"
    try:
        caps = caps_from_json(json.loads(file.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        caps = probe(QemuCommand(path))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(caps_to_json(caps), indent=1) + "\n")
            os.replace(tmp, file)
        except OSError:
            pass  # an unwritable cache only costs time
    _memo[key] = caps
    return caps

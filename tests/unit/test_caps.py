"""Capability probing: pure parsers on real QEMU 7.2 output, probe() against fake binaries, the disk cache."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pytest_aero_virtio.config import QemuCommand
from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.qemu import caps as caps_mod
from pytest_aero_virtio.qemu.caps import (
    PROBED_DEVICES,
    Caps,
    caps_from_json,
    caps_from_transcript,
    caps_to_json,
    parse_device_help,
    parse_qmp_transcript,
    parse_version,
    probe,
    probe_cached,
    qmp_probe_script,
)

DATA = Path(__file__).parent / "data"
QEMU72 = shutil.which("qemu-system-x86_64")


def test_parse_version_real_and_variants() -> None:
    assert parse_version((DATA / "qemu72-version.txt").read_text()) == (7, 2, 22)
    assert parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert parse_version("QEMU emulator version 8.2") == (8, 2, 0)
    with pytest.raises(ValueError, match="not a QEMU"):
        parse_version("bash: GNU bash, version 5.2")


def test_parse_device_help_real() -> None:
    devices = parse_device_help((DATA / "qemu72-device-help.txt").read_text())
    for d in ("virtio-blk-pci", "virtio-net-pci", "virtio-keyboard-pci", "virtio-tablet-pci", "VGA"):
        assert d in devices
    assert "virtio-blk" in devices  # alias
    assert "virtio-sound-pci" not in devices  # QEMU 8.2+


def test_parse_qmp_transcript_real_72() -> None:
    tr = parse_qmp_transcript((DATA / "qemu72-qmp-probe.jsonl").read_text())
    assert tr.version == (7, 2, 22)
    assert "props:virtio-sound-pci" in tr.errors and "not found" in tr.errors["props:virtio-sound-pci"]
    caps = caps_from_transcript(tr, (7, 2, 22))
    assert caps.has_command("block_resize") and not caps.has_command("blockdev-resize")
    assert caps.has_command("input-send-event") and caps.has_command("set_link")
    assert not caps.has_device("virtio-sound-pci")
    assert caps.has_device("virtio-blk-pci") and caps.has_device("VGA")
    for dev in ("virtio-blk-pci", "virtio-net-pci", "virtio-keyboard-pci", "virtio-mouse-pci"):
        assert caps.has_prop(dev, "vectors") and caps.has_prop(dev, "disable-legacy")
        assert not caps.has_prop(dev, "x-pci-revision")  # docs/protocol.md
    assert caps.has_prop("virtio-keyboard-pci", "display")
    assert not caps.has_prop("virtio-blk-pci", "display")
    assert caps.at_least(7, 2) and not caps.at_least(8, 2)


def test_transcript_ignores_events_and_junk() -> None:
    text = "\n".join(
        [
            "qemu: warning: something",
            '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}}}}',
            '{"return": {}, "id": "caps"}',
            '{"event": "SHUTDOWN", "data": {}}',
            "{not json",
            '{"return": [{"name": "quit"}], "id": "commands"}',
        ]
    )
    tr = parse_qmp_transcript(text)
    assert tr.version == (10, 0, 0)
    caps = caps_from_transcript(tr, (10, 0, 0), device_help='name "virtio-sound-pci", bus PCI\n')
    assert caps.qmp_commands == {"quit"}
    assert caps.devices == {"virtio-sound-pci"}  # fallback to -device help when qom-list-types failed


def test_probe_script_asks_every_device() -> None:
    lines = [json.loads(s) for s in qmp_probe_script().splitlines()]
    assert lines[0]["execute"] == "qmp_capabilities" and lines[-1]["execute"] == "quit"
    asked = {c["arguments"]["typename"] for c in lines if c["execute"] == "device-list-properties"}
    assert asked == set(PROBED_DEVICES)


def test_json_round_trip() -> None:
    caps = Caps((7, 2, 0), frozenset({"a"}), {"a": frozenset({"x", "y"})}, frozenset({"quit"}))
    again = caps_from_json(json.loads(json.dumps(caps_to_json(caps))))
    assert again == caps and hash(again) == hash(caps)
    with pytest.raises(ValueError):
        caps_from_json({**caps_to_json(caps), "format": -1})


# --- probe() against fake binaries -------------------------------------------------------------------


def fake_qemu(tmp_path: Path, body: str) -> Path:
    """A Python script standing in for QEMU; counts its runs in <script>.runs."""
    script = tmp_path / "fake-qemu"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        "p = pathlib.Path(__file__)\n"
        "runs = p.with_suffix('.runs')\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n"
        f"DATA = pathlib.Path({str(DATA)!r})\n" + body
    )
    script.chmod(0o755)
    return script


REPLAY = (
    "if sys.argv[1:] == ['--version']:\n"
    "    print((DATA / 'qemu72-version.txt').read_text(), end='')\n"
    "elif '-qmp' in sys.argv:\n"
    "    sys.stdin.read()\n"
    "    print((DATA / 'qemu72-qmp-probe.jsonl').read_text(), end='')\n"
    "else:\n"
    "    sys.exit(3)\n"
)


def test_probe_fake_replaying_real_output(tmp_path: Path) -> None:
    caps = probe(QemuCommand(fake_qemu(tmp_path, REPLAY)))
    assert caps.version == (7, 2, 22)
    assert caps.has_prop("virtio-mouse-pci", "display")


def test_probe_not_found(tmp_path: Path) -> None:
    with pytest.raises(AeroConfigError) as info:
        probe(QemuCommand(tmp_path / "nope"))
    assert info.value.token == "QEMU_NOT_FOUND"
    assert info.value.fix and "--qemu-system" in info.value.fix and "aero-virtio-refenv qemu" in info.value.fix
    with pytest.raises(AeroConfigError, match="QEMU_NOT_FOUND"):
        probe(QemuCommand(Path("no-such-qemu-binary-xyz")))


def test_probe_not_executable(tmp_path: Path) -> None:
    f = tmp_path / "qemu"
    f.write_text("x")
    with pytest.raises(AeroConfigError, match="not an executable"):
        probe(QemuCommand(f))
    with pytest.raises(AeroConfigError, match="not an executable"):
        probe(QemuCommand(tmp_path))


def test_probe_not_qemu(tmp_path: Path) -> None:
    with pytest.raises(AeroConfigError, match="does not look like QEMU"):
        probe(QemuCommand(fake_qemu(tmp_path, "print('hello')\n")))


def test_probe_version_fails(tmp_path: Path) -> None:
    body = "sys.stderr.write('error while loading shared libraries: libfoo.so\\n'); sys.exit(127)\n"
    with pytest.raises(AeroConfigError, match=r"exit 127.*libfoo") as info:
        probe(QemuCommand(fake_qemu(tmp_path, body)))
    assert info.value.token == "QEMU_NOT_FOUND"


def test_probe_dies_during_qmp(tmp_path: Path) -> None:
    body = (
        "if sys.argv[1:] == ['--version']:\n"
        "    print('QEMU emulator version 9.0.0')\n"
        "else:\n"
        "    sys.stderr.write('Only modules from the same build can be loaded\\n'); sys.exit(1)\n"
    )
    with pytest.raises(AeroConfigError, match=r"died during the QMP probe.*same build"):
        probe(QemuCommand(fake_qemu(tmp_path, body)))


def test_probe_cached_second_probe_does_not_run_the_binary(tmp_path: Path) -> None:
    caps_mod._memo.clear()
    script = fake_qemu(tmp_path, REPLAY)
    runs = script.with_suffix(".runs")
    cache = tmp_path / "cache"
    first = probe_cached(QemuCommand(script), cache)
    assert runs.read_text() == "2"  # --version + QMP session
    caps_mod._memo.clear()  # a new process: only the disk cache remains
    second = probe_cached(QemuCommand(script), cache)
    assert second == first and runs.read_text() == "2"
    assert len(list((cache / "caps").glob("*.json"))) == 1
    # Editing the launcher script invalidates the entry.
    caps_mod._memo.clear()
    script.write_text(script.read_text() + "\n# changed\n")
    probe_cached(QemuCommand(script), cache)
    assert runs.read_text() == "4"
    assert len(list((cache / "caps").glob("*.json"))) == 2


def test_probe_cached_survives_a_corrupt_cache_file(tmp_path: Path) -> None:
    caps_mod._memo.clear()
    script = fake_qemu(tmp_path, REPLAY)
    cache = tmp_path / "cache"
    probe_cached(QemuCommand(script), cache)
    (entry,) = (cache / "caps").glob("*.json")
    entry.write_text("{garbage")
    caps_mod._memo.clear()
    assert probe_cached(QemuCommand(script), cache).version == (7, 2, 22)
    assert json.loads(entry.read_text())["version"] == [7, 2, 22]


@pytest.mark.skipif(QEMU72 is None, reason="no qemu-system-x86_64 on PATH")
def test_probe_real_qemu(tmp_path: Path) -> None:
    assert QEMU72 is not None
    caps = probe(QemuCommand(Path(QEMU72)))
    assert caps.version >= (7, 2, 0)
    assert caps.has_device("virtio-blk-pci") and caps.has_prop("virtio-net-pci", "vectors")
    assert caps.has_command("block_resize")


def test_parse_qmp_transcript_real_10() -> None:
    tr = parse_qmp_transcript((DATA / "qemu10-qmp-probe.jsonl").read_text())
    assert tr.version == (10, 0, 13) and not tr.errors
    caps = caps_from_transcript(tr, parse_version((DATA / "qemu10-version.txt").read_text()))
    assert caps.has_device("virtio-sound-pci")
    assert caps.has_prop("virtio-sound-pci", "audiodev") and caps.has_prop("virtio-sound-pci", "vectors")
    assert not any(caps.has_prop(d, "x-pci-revision") for d in PROBED_DEVICES)
    assert caps.has_command("block_resize") and not caps.has_command("blockdev-resize")

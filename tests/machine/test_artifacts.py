"""Unit tests of the per-VM artifact directory (pure name handling + directory claiming)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aero_virtio.artifacts import ARTIFACT_FILES, MAX_NAME_LEN, ArtifactDir, safe_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("vm", "vm"),
        ("vm[tablet-snd]", "vm_tablet-snd"),
        ("vmm_flows/test_blk.py::test_blk[vectors=0]", "vmm_flows_test_blk.py_test_blk_vectors_0"),
        ("a b\tc", "a_b_c"),
        ("..", "vm"),
        ("../../etc/passwd", "etc_passwd"),
        (".hidden", "hidden"),
        ("", "vm"),
        ("///", "vm"),
        ("blk-ü-€", "blk"),
        ("snd.wav", "snd.wav"),
    ],
)
def test_safe_name(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_safe_name_is_bounded_and_idempotent() -> None:
    long = "x" * 500 + "[" + "y" * 50
    out = safe_name(long)
    assert len(out) <= MAX_NAME_LEN
    assert safe_name(out) == out


def test_artifact_dir_is_unique(tmp_path: Path) -> None:
    a = ArtifactDir(tmp_path, "vm[one]")
    b = ArtifactDir(tmp_path, "vm[one]")
    c = ArtifactDir(tmp_path, "vm[one]")
    assert a.dir == tmp_path / "vm_one"
    assert b.dir == tmp_path / "vm_one-2"
    assert c.dir == tmp_path / "vm_one-3"
    assert all(d.dir.is_dir() for d in (a, b, c))


def test_paths_and_existing_only(tmp_path: Path) -> None:
    art = ArtifactDir(tmp_path / "deep" / "root", "vm")
    paths = art.paths()
    assert set(paths) == set(ARTIFACT_FILES)
    assert paths["serial"] == art.serial == art.dir / "serial.log"
    assert paths["argv"].name == "qemu-argv.txt"
    assert paths["stderr"].name == "qemu-stderr.log"
    assert paths["qmp"].name == "qmp.log"
    assert paths["host_markers"].name == "host-markers.log"
    assert paths["http"].name == "http.log"
    assert all(p.parent == art.dir for p in paths.values())
    assert art.paths(existing_only=True) == {}
    art.serial.write_bytes(b"x")
    assert art.paths(existing_only=True) == {"serial": art.serial}


def test_extra_file_names_are_checked(tmp_path: Path) -> None:
    art = ArtifactDir(tmp_path, "vm")
    assert art.file("audio.wav") == art.dir / "audio.wav"
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError):
            art.file(bad)

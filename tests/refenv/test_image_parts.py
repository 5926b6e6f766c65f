"""Pure parts of the image builder: cpio round trip, ELF reading, module order, file selection."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_aero_virtio.refenv import cpio, elf, kmod, qemu, rootfs


def _archive(first_ino: int = 1) -> bytes:
    buf = io.BytesIO()
    w = cpio.CpioWriter(buf, first_ino)
    w.add_dir("usr")
    w.add_file("usr/x", b"hello", 0o755)
    w.add_symlink("bin", "usr/bin")
    w.add_chardev("dev/console", 5, 1)
    w.close()
    return buf.getvalue()


def test_cpio_round_trip() -> None:
    data = _archive()
    assert len(data) % 512 == 0
    entries = {e.name: e for e in cpio.read_cpio(data)}
    assert entries["usr/x"].data == b"hello" and stat.S_IMODE(entries["usr/x"].mode) == 0o755
    assert stat.S_ISLNK(entries["bin"].mode) and entries["bin"].data == b"usr/bin"
    con = entries["dev/console"]
    assert stat.S_ISCHR(con.mode) and (con.rdevmajor, con.rdevminor) == (5, 1)
    assert all(e.uid == 0 and e.gid == 0 for e in entries.values())


def test_cpio_concatenated_archives() -> None:
    names = [e.name for e in cpio.read_cpio(_archive() + _archive(1 << 24))]
    assert names.count("usr/x") == 2


def test_cpio_rejects_duplicates() -> None:
    w = cpio.CpioWriter(io.BytesIO())
    w.add_file("a", b"")
    with pytest.raises(ValueError, match="duplicate"):
        w.add_file("a", b"")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_cpio_readable_by_gnu_cpio() -> None:
    out = subprocess.run(["cpio", "-t"], input=_archive(), capture_output=True, check=True).stdout.decode()
    assert out.split() == ["usr", "usr/x", "bin", "dev/console"]


def test_elf_needed_of_this_python() -> None:
    data = Path(sys.executable).resolve().read_bytes()
    assert elf.is_elf(data)
    assert "libc.so.6" in elf.needed(data) or elf.needed(data) == []  # static builds need nothing
    with pytest.raises(elf.ElfError):
        elf.needed(b"#!/bin/sh\n")


SND = " ".join(f"kernel/sound/{m}.ko" for m in ("core/snd-pcm", "core/snd-timer", "core/snd", "soundcore"))
MODULES_DEP = f"""\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/sound/core/snd-pcm.ko: {SND.split(" ", 1)[1]}
kernel/sound/core/snd-timer.ko: kernel/sound/core/snd.ko kernel/sound/soundcore.ko
kernel/sound/core/snd.ko: kernel/sound/soundcore.ko
kernel/sound/soundcore.ko:
kernel/sound/virtio/virtio_snd.ko: {SND}
"""


def test_module_order_dependencies_first() -> None:
    dep = kmod.parse_modules_dep(MODULES_DEP)
    order = kmod.load_order(dep, ["virtio_snd", "virtio-net", "af_packet"], builtin=["kernel/net/packet/af_packet.ko"])
    names = [kmod.normalize(p) for p in order]
    assert names == [
        "soundcore",
        "snd",
        "snd_timer",
        "snd_pcm",
        "virtio_snd",
        "failover",
        "net_failover",
        "virtio_net",
    ]


def test_module_order_unknown_module_is_an_error() -> None:
    with pytest.raises(KeyError, match="virtio_gpu"):
        kmod.load_order(kmod.parse_modules_dep(MODULES_DEP), ["virtio_gpu"])


def test_render_modules_dep_from_modinfo_names() -> None:
    text = kmod.render_modules_dep({"a/x.ko": ["y"], "b/y.ko": []})
    assert kmod.load_order(kmod.parse_modules_dep(text), ["x"]) == ["b/y.ko", "a/x.ko"]


def test_stdlib_filter() -> None:
    assert rootfs.stdlib_keep("json/__init__.py")
    assert rootfs.stdlib_keep("lib-dynload/_socket.cpython-313-x86_64-linux-gnu.so")
    assert rootfs.stdlib_keep("lib-dynload/termios.cpython-313-x86_64-linux-gnu.so")
    for dropped in (
        "lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so",
        "lib-dynload/_hashlib.cpython-313-x86_64-linux-gnu.so",
        "test/test_os.py",
        "idlelib/x.py",
        "tkinter/__init__.py",
        "ensurepip/__init__.py",
        "lib-dynload/_sqlite3.cpython-313-x86_64-linux-gnu.so",
        "__pycache__/os.cpython-313.pyc",
    ):
        assert not rootfs.stdlib_keep(dropped), dropped


def test_resolve_libs_reports_unresolvable(tmp_path: Path) -> None:
    data = Path(sys.executable).resolve().read_bytes()
    needs = elf.needed(data)
    if not needs:
        pytest.skip("static python")
    libs, unresolved = rootfs.resolve_libs({"py": data}, {})
    assert libs == {} and unresolved == {"py": needs}


def test_launcher_execs_through_bundled_loader() -> None:
    text = qemu.render_launcher(Path("/c/qemu-1/root"))
    assert text.startswith("#!/bin/sh\n")
    last = text.strip().splitlines()[-1]
    assert last.startswith('exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"') and last.endswith('"$@"')
    assert '-L "$R/usr/share/qemu"' in last and "QEMU_MODULE_DIR" in text and "R=/c/qemu-1/root" in text


def test_relativize_symlinks(tmp_path: Path) -> None:
    (tmp_path / "usr/share/seabios").mkdir(parents=True)
    (tmp_path / "usr/share/seabios/bios.bin").write_text("fw")
    (tmp_path / "usr/share/qemu").mkdir()
    (tmp_path / "usr/share/qemu/bios.bin").symlink_to("/usr/share/seabios/bios.bin")
    assert qemu.relativize_symlinks(tmp_path) == 1
    assert (tmp_path / "usr/share/qemu/bios.bin").read_text() == "fw"


def test_strip_signature() -> None:
    body = b"\x7fELF" + b"x" * 100
    sig = b"S" * 20
    trailer = b"\0" * 8 + (20).to_bytes(4, "big")
    assert kmod.strip_signature(body + sig + trailer + kmod.SIG_MAGIC) == body
    assert kmod.strip_signature(body) == body
    with pytest.raises(ValueError):
        kmod.strip_signature(b"\0" * 8 + (999).to_bytes(4, "big") + kmod.SIG_MAGIC)

"""The guest's rendered boot files: /init, the driver loader, SYSLINUX's config, the kernel command line."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pytest_aero_virtio.refenv import rootfs, scripts

ROOT_MODS = ["modules/virtio_blk.ko", "modules/erofs.ko"]
BOOT_MODS = ["usr/lib/modules/v/kernel/drivers/firmware/qemu_fw_cfg.ko"]
GROUPS = [
    ("", ["usr/lib/modules/v/fat.ko", "usr/lib/modules/v/vfat.ko"]),
    ("0x0001", ["usr/lib/modules/v/failover.ko", "usr/lib/modules/v/virtio_net.ko"]),
    ("0x0019", []),
]


def _index(lines: list[str], prefix: str) -> int:
    return next(i for i, s in enumerate(lines) if s.startswith(prefix))


def test_init_mounts_usr_then_starts_drivers_then_the_selftest() -> None:
    text = scripts.render_init(ROOT_MODS, BOOT_MODS)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/busybox sh"
    order = [
        "mount -a",
        "insmod /modules/virtio_blk.ko",
        "insmod /modules/erofs.ko",
        "for part in /dev/vd[a-z]2",
        "insmod /usr/lib/modules/v/kernel/drivers/firmware/qemu_fw_cfg.ko",
        "echo 1 >/proc/sys/kernel/printk",
        f"sh /{scripts.DRIVERS_SCRIPT} >{scripts.DRIVERS}.log 2>&1 &",
        "stty -F /dev/ttyS0 -opost",
        "python3 -S -c 'import aero_selftest.__main__'",
        "poweroff -f",
    ]
    positions = [_index(lines, p) for p in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert 'losetup -r /dev/loop0 "$part"' in text and "mount -t erofs -o ro /dev/loop0 /usr" in text
    assert "AERO_VIRTIO_SELFTEST|RESULT|FAIL|reason=selftest_crashed" in text
    assert f'"$rc" != {scripts.EXIT_WATCHDOG}' in text  # the watchdog's RESULT is not a crash
    assert f"export PYTHONPATH=/{scripts.GUEST_DIR} " in text and "PYTHONHASHSEED=0" in text
    assert f"AERO_SELFTEST_CONSOLE={scripts.CONSOLE_TTY}" in text
    assert f"AERO_SELFTEST_DRIVERS={scripts.DRIVERS}" in text
    # raw output before the selftest, and the drain before power-off after it
    assert [s for s in lines if s.startswith("stty")] == ["stty -F /dev/ttyS0 -opost"] * 2


def test_drivers_load_by_device_and_signal_when_done() -> None:
    lines = scripts.render_drivers(GROUPS).splitlines()
    assert lines[0] == "#!/bin/busybox sh"
    assert _index(lines, "renice -n 19") < _index(lines, "insmod")
    assert _index(lines, "insmod /usr/lib/modules/v/fat.ko") < _index(lines, "if present 0x0001; then")
    net = "  insmod /usr/lib/modules/v/virtio_net.ko || echo 'aero-init: insmod usr/lib/modules/v/virtio_net.ko failed'"
    assert _index(lines, "if present 0x0001; then") < lines.index(net) < len(lines) - 1
    assert not any("0x0019" in s for s in lines)  # an empty group renders nothing
    assert lines[-1] == f": >{scripts.DRIVERS}.done"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
@pytest.mark.parametrize("render", ["init", "drivers"])
def test_scripts_parse_as_shell(render: str) -> None:
    text = scripts.render_init(ROOT_MODS, BOOT_MODS) if render == "init" else scripts.render_drivers(GROUPS)
    proc = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_syslinux_cfg() -> None:
    cfg = scripts.render_syslinux_cfg("console=ttyS0 quiet")
    assert "APPEND console=ttyS0 quiet\n" in cfg and "TIMEOUT 0" in cfg and "INITRD initrd.img" in cfg


def test_kernel_command_line() -> None:
    params = scripts.DEFAULT_APPEND.split()
    consoles = [p for p in params if p.startswith("console=")]
    assert consoles[-1] == "console=ttyS0"  # the last console is /dev/console: the selftest's serial port
    assert "console=tty0" in consoles and "quiet" in params and "panic=-1" in params
    assert len(params) == len({p.split("=", 1)[0] for p in params}) + consoles.count("console=tty0")


def test_busybox_links_skip_real_programs() -> None:
    assert rootfs.busybox_links(["sh", "ls", "busybox", "mount", ""], ["sh"]) == ["ls", "mount"]


def test_module_groups_name_each_module_once() -> None:
    names = [*rootfs.ROOT_MODULES, *rootfs.MODULES]
    assert len(names) == len(set(names))
    assert "qemu_fw_cfg" in rootfs.BOOT_MODULES  # the args are read before START

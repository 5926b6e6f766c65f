"""argv building: the device contract, escaping, and every option."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pytest_aero_virtio.config import QemuCommand, RunOptions, Vectors, VmConfig
from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.qemu.argv import (
    RuntimePaths,
    build_argv,
    detect_image_format,
    format_argv,
    image_virtual_size,
    prepare_overlay,
    qcow2_overlay_bytes,
    qemu_opt_escape,
    tablet_display,
)
from pytest_aero_virtio.qemu.caps import Caps

VIRTIO = ("virtio-blk-pci", "virtio-net-pci", "virtio-keyboard-pci", "virtio-mouse-pci", "virtio-tablet-pci")
BASE_PROPS = frozenset({"vectors", "disable-legacy"})
CAPS_72 = Caps(
    (7, 2, 0),
    frozenset({*VIRTIO, "VGA", "secondary-vga"}),
    {
        **{d: BASE_PROPS for d in VIRTIO},
        **{d: BASE_PROPS | {"display"} for d in VIRTIO if "blk" not in d and "net" not in d},
    },
)
CAPS_10 = Caps(
    (10, 0, 0),
    CAPS_72.devices | {"virtio-sound-pci"},
    {**CAPS_72.device_props, "virtio-sound-pci": BASE_PROPS},
)
IMG = Path("/img/disk.raw")
OPTS = RunOptions(qemu=QemuCommand(Path("/usr/bin/qemu-system-x86_64")), image=IMG, snapshot=False)
RT = RuntimePaths(serial=5, qmp=6)


def device_args(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]


def device(argv: list[str], driver: str) -> dict[str, str]:
    """The properties of the one -device of this driver (parsed naively: test values have no commas)."""
    (text,) = [d for d in device_args(argv) if d.split(",")[0] == driver]
    return dict(p.split("=", 1) for p in text.split(",")[1:])


def option_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_escape() -> None:
    assert qemu_opt_escape("/a,b/c d") == "/a,,b/c d"
    assert qemu_opt_escape(",,") == ",,,,"
    assert '"' not in qemu_opt_escape("a b") and "'" not in qemu_opt_escape("a b")


def test_base_contract() -> None:
    argv = build_argv(OPTS, VmConfig(), CAPS_72, RT)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert option_after(argv, "-display") == ["none"]
    assert option_after(argv, "-machine") == ["q35,accel=tcg"]
    assert option_after(argv, "-m") == ["512"] and option_after(argv, "-smp") == ["1"]
    assert option_after(argv, "-serial") == ["chardev:ser0"]
    assert "socket,id=ser0,fd=5" in option_after(argv, "-chardev")
    assert "socket,id=qmp0,fd=6" in option_after(argv, "-chardev")
    assert option_after(argv, "-mon") == ["chardev=qmp0,mode=control"]
    assert option_after(argv, "-netdev") == ["user,id=net0"]
    assert device(argv, "virtio-blk-pci") == {
        "id": "vblk0",
        "drive": "disk0",
        "serial": "aero-blk0",
        "disable-legacy": "on",
    }
    assert device(argv, "virtio-net-pci") == {
        "id": "vnet0",
        "netdev": "net0",
        "mac": "52:54:00:12:34:56",
        "disable-legacy": "on",
    }
    assert device(argv, "virtio-keyboard-pci")["id"] == "vkbd0"
    assert device(argv, "virtio-mouse-pci")["id"] == "vmouse0"
    drivers = [d.split(",")[0] for d in device_args(argv)]
    assert "virtio-tablet-pci" not in drivers and "virtio-sound-pci" not in drivers
    assert "-audiodev" not in argv and "-fw_cfg" not in argv and "-kernel" not in argv
    assert not any("x-pci-revision" in a for a in argv)


def test_display_created_before_inputs_and_bound_when_supported() -> None:
    argv = build_argv(OPTS, VmConfig(tablet=True), CAPS_72, RT)
    drivers = [d.split(",")[0] for d in device_args(argv)]
    assert drivers[0] == "VGA" and device(argv, "VGA") == {"id": "vga0"}
    for drv in ("virtio-keyboard-pci", "virtio-mouse-pci", "virtio-tablet-pci"):
        assert drivers.index("VGA") < drivers.index(drv)
        assert drivers.index("secondary-vga") < drivers.index(drv)
        assert device(argv, drv)["display"] == ("vga1" if drv == "virtio-tablet-pci" else "vga0")
    assert device(argv, "virtio-tablet-pci")["id"] == "vtablet0"
    assert device(argv, "secondary-vga") == {"id": "vga1"}
    # without a tablet there is no second display
    assert "secondary-vga" not in [d.split(",")[0] for d in device_args(build_argv(OPTS, VmConfig(), CAPS_72, RT))]


def test_tablet_events_name_the_console_the_tablet_is_bound_to() -> None:
    """Without secondary-vga the tablet shares vga0, and its injected events must say vga0 too."""
    caps = Caps(CAPS_72.version, CAPS_72.devices - {"secondary-vga"}, CAPS_72.device_props)
    argv = build_argv(OPTS, VmConfig(tablet=True), caps, RT)
    assert "secondary-vga" not in [d.split(",")[0] for d in device_args(argv)]
    assert device(argv, "virtio-tablet-pci")["display"] == tablet_display(caps) == "vga0"
    assert tablet_display(CAPS_72) == "vga1"


def test_no_display_property_when_caps_lack_it() -> None:
    caps = Caps(CAPS_72.version, CAPS_72.devices, {d: BASE_PROPS for d in VIRTIO})
    argv = build_argv(OPTS, VmConfig(), caps, RT)
    assert "display" not in device(argv, "virtio-keyboard-pci")


def test_x_pci_revision_only_when_probed() -> None:
    assert not any("x-pci-revision" in a for a in build_argv(OPTS, VmConfig(), CAPS_72, RT))
    caps = Caps(
        CAPS_72.version,
        CAPS_72.devices,
        {**CAPS_72.device_props, "virtio-net-pci": BASE_PROPS | {"x-pci-revision"}},
    )
    argv = build_argv(OPTS, VmConfig(), caps, RT)
    assert device(argv, "virtio-net-pci")["x-pci-revision"] == "0x01"
    assert "x-pci-revision" not in device(argv, "virtio-blk-pci")


def test_transitional_and_vectors() -> None:
    vm = VmConfig(transitional=True, tablet=True, snd=True, vectors=Vectors(blk=0, net=3, input=1, snd=2))
    argv = build_argv(OPTS, vm, CAPS_10, RuntimePaths(serial=5, qmp=6, wav_path=Path("/w.wav")))
    expect = {
        "virtio-blk-pci": "0",
        "virtio-net-pci": "3",
        "virtio-keyboard-pci": "1",
        "virtio-mouse-pci": "1",
        "virtio-tablet-pci": "1",
        "virtio-sound-pci": "2",
    }
    for drv, vectors in expect.items():
        props = device(argv, drv)
        assert props["disable-legacy"] == "off", drv
        assert props["vectors"] == vectors, drv


def test_vectors_without_property_is_a_config_error() -> None:
    caps = Caps(CAPS_72.version, CAPS_72.devices, {})
    with pytest.raises(AeroConfigError, match="vectors"):
        build_argv(OPTS, VmConfig(vectors=Vectors(net=2)), caps, RT)


def test_sound_wav_and_none() -> None:
    wav = Path("/art/a,b c/out.wav")
    argv = build_argv(OPTS, VmConfig(snd=True), CAPS_10, RuntimePaths(serial=5, qmp=6, wav_path=wav))
    assert option_after(argv, "-audiodev") == ["wav,id=snd0,path=/art/a,,b c/out.wav,out.frequency=48000"]
    assert device(argv, "virtio-sound-pci") == {"id": "vsnd0", "audiodev": "snd0", "disable-legacy": "on"}
    argv = build_argv(OPTS, VmConfig(snd=True, audio="none"), CAPS_10, RT)
    assert option_after(argv, "-audiodev") == ["none,id=snd0"]
    # The audiodev must be defined before the device that uses it.
    assert argv.index("-audiodev") < argv.index(next(a for a in argv if a.startswith("virtio-sound-pci")))


def test_sound_needs_a_qemu_with_the_device() -> None:
    with pytest.raises(AeroConfigError, match="virtio-sound-pci") as info:
        build_argv(OPTS, VmConfig(snd=True, audio="none"), CAPS_72, RT)
    assert info.value.fix and "aero-virtio-refenv qemu" in info.value.fix


def test_wav_needs_a_path() -> None:
    with pytest.raises(ValueError, match="wav_path"):
        build_argv(OPTS, VmConfig(snd=True), CAPS_10, RT)


def test_disk_without_snapshot() -> None:
    opts = RunOptions(qemu=OPTS.qemu, image=Path("/imgs/my, disk.qcow2"), snapshot=False)
    argv = build_argv(opts, VmConfig(), CAPS_72, RuntimePaths(serial=5, qmp=6, image_format="qcow2"))
    assert option_after(argv, "-blockdev") == [
        "driver=file,node-name=disk0-file,filename=/imgs/my,, disk.qcow2",
        "driver=qcow2,node-name=disk0,file=disk0-file",
    ]
    assert "-drive" not in argv


def test_disk_with_snapshot_uses_overlay_on_read_only_base() -> None:
    opts = RunOptions(qemu=OPTS.qemu, image=Path("/imgs/a,b.raw"))
    rt = RuntimePaths(serial=5, qmp=6, overlay=Path("/tmp/x,y/overlay.qcow2"))
    argv = build_argv(opts, VmConfig(), CAPS_72, rt)
    assert option_after(argv, "-blockdev") == [
        "driver=file,node-name=base-file,filename=/imgs/a,,b.raw,read-only=on",
        "driver=raw,node-name=base,file=base-file,read-only=on",
        "driver=file,node-name=disk0-file,filename=/tmp/x,,y/overlay.qcow2",
        "driver=qcow2,node-name=disk0,file=disk0-file,backing=base",
    ]
    assert device(argv, "virtio-blk-pci")["drive"] == "disk0"


def test_snapshot_overlay_given_as_a_descriptor_goes_through_an_fdset() -> None:
    """The nameless overlay (argv.anonymous_overlay) reaches QEMU as -add-fd and /dev/fdset/N."""
    opts = RunOptions(qemu=OPTS.qemu, image=IMG)
    argv = build_argv(opts, VmConfig(), CAPS_72, RuntimePaths(serial=5, qmp=6, overlay=9))
    assert option_after(argv, "-add-fd") == ["fd=9,set=1,opaque=aero-overlay"]
    assert "driver=file,node-name=disk0-file,filename=/dev/fdset/1" in option_after(argv, "-blockdev")
    assert argv.index("-add-fd") < argv.index("-blockdev")


def test_snapshot_without_overlay_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="overlay"):
        build_argv(RunOptions(qemu=OPTS.qemu, image=IMG), VmConfig(), CAPS_72, RT)


def test_direct_kernel_boot_keeps_the_disk_and_passes_paths_verbatim() -> None:
    opts = RunOptions(
        qemu=OPTS.qemu,
        image=IMG,
        snapshot=False,
        kernel=Path("/k dir/vmlinuz,1"),
        initrd=Path("/k dir/initrd,1"),
        append="console=ttyS0 quiet a=b,c",
    )
    argv = build_argv(opts, VmConfig(), CAPS_72, RT)
    assert option_after(argv, "-kernel") == ["/k dir/vmlinuz,1"]
    assert option_after(argv, "-initrd") == ["/k dir/initrd,1"]
    assert option_after(argv, "-append") == ["console=ttyS0 quiet a=b,c"]
    assert "virtio-blk-pci" in " ".join(device_args(argv))


def test_kernel_without_image_has_no_disk() -> None:
    opts = RunOptions(qemu=OPTS.qemu, kernel=Path("/k"))
    argv = build_argv(opts, VmConfig(), CAPS_72, RT)
    assert "-blockdev" not in argv and not any(a.startswith("virtio-blk-pci") for a in argv)


def test_nothing_to_boot() -> None:
    with pytest.raises(AeroConfigError, match="nothing to boot"):
        build_argv(RunOptions(qemu=OPTS.qemu), VmConfig(), CAPS_72, RT)


def test_guest_args_via_fw_cfg_escaped() -> None:
    rt = RuntimePaths(serial=5, qmp=6, guest_args="--test-blk-resize --http-url=http://10.0.2.2:1/p,q")
    argv = build_argv(OPTS, VmConfig(), CAPS_72, rt)
    assert option_after(argv, "-fw_cfg") == [
        "name=opt/aero/args,string=--test-blk-resize --http-url=http://10.0.2.2:1/p,,q"
    ]


def test_options_memory_smp_machine_accel_extra_args_last() -> None:
    opts = RunOptions(
        qemu=QemuCommand(Path("/opt/q,emu/bin/launcher")),
        image=IMG,
        snapshot=False,
        memory_mib=1024,
        smp=2,
        machine="pc",
        extra_args=("-device", "virtio-rng-pci", "-s"),
    )
    argv = build_argv(opts, VmConfig(), CAPS_72, RuntimePaths(serial=5, qmp=6, accel="kvm"))
    assert argv[0] == "/opt/q,emu/bin/launcher"
    assert option_after(argv, "-machine") == ["pc,accel=kvm"]
    assert option_after(argv, "-m") == ["1024"] and option_after(argv, "-smp") == ["2"]
    assert argv[-3:] == ["-device", "virtio-rng-pci", "-s"]


def test_serial_stdio_and_no_qmp() -> None:
    argv = build_argv(OPTS, VmConfig(), CAPS_72, RuntimePaths(serial="stdio", qmp=None))
    assert option_after(argv, "-serial") == ["stdio"]
    assert "-mon" not in argv and "-chardev" not in argv


def test_deterministic() -> None:
    vm = VmConfig(tablet=True, snd=True, audio="none", vectors=Vectors(net=1))
    assert build_argv(OPTS, vm, CAPS_10, RT) == build_argv(OPTS, vm, CAPS_10, RT)


def test_format_argv_round_trips_through_shlex() -> None:
    import shlex

    argv = ["qemu", "-blockdev", "filename=/a,, b", "-append", "x='y'"]
    assert shlex.split(format_argv(argv)) == argv


def test_image_format_detection() -> None:
    assert detect_image_format(b"QFI\xfb\x00\x00\x00\x03") == "qcow2"
    assert detect_image_format(b"\xeb\x3c\x90mkfs.fat") == "raw"
    assert detect_image_format(b"") == "raw"


def test_virtual_size() -> None:
    head = b"QFI\xfb" + b"\x00" * 20 + struct.pack(">Q", 1 << 30)
    assert image_virtual_size(head, 12345) == 1 << 30
    assert image_virtual_size(b"\x00" * 64, 1000) == 1024
    assert image_virtual_size(b"\x00" * 64, 1024) == 1024


@pytest.mark.parametrize("size", [512, 64 << 20, (512 << 20) + 1, 40 << 30])
def test_qcow2_overlay_header(size: int) -> None:
    data = qcow2_overlay_bytes(size)
    assert detect_image_format(data) == "qcow2"
    assert image_virtual_size(data, len(data)) == size
    (version,) = struct.unpack(">I", data[4:8])
    (backing_off,) = struct.unpack(">Q", data[8:16])
    (l1_size,) = struct.unpack(">I", data[36:40])
    assert version == 3 and backing_off == 0
    assert l1_size * (512 << 20) >= size
    assert len(data) % 65536 == 0


def test_prepare_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x01" * 1000)
    overlay = tmp_path / "ov.qcow2"
    assert prepare_overlay(base, overlay) == "raw"
    assert image_virtual_size(overlay.read_bytes()[:64], 0) == 1024
    assert base.read_bytes() == b"\x01" * 1000


def test_prepare_overlay_unreadable(tmp_path: Path) -> None:
    with pytest.raises(AeroConfigError) as info:
        prepare_overlay(tmp_path / "missing.img", tmp_path / "ov")
    assert info.value.token == "IMAGE_UNREADABLE"
    assert "missing.img" in info.value.message

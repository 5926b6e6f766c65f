"""Pure parts of the pool and the accelerator probe."""

from __future__ import annotations

from pathlib import Path

from pytest_aero_virtio.config import QemuCommand
from pytest_aero_virtio.markers import Marker, parse_line
from pytest_aero_virtio.qemu.accel import kernel_ran, probe_argv, resolve_accel
from pytest_aero_virtio.vm import port_mismatch


def config_line(text: str) -> Marker:
    m = parse_line(text)
    assert isinstance(m, Marker)
    return m


def test_port_mismatch_names_both_sides() -> None:
    ok = config_line("AERO_VIRTIO_SELFTEST|CONFIG|http_url=http://10.0.2.2:5000/p|udp_port=5001")
    assert port_mismatch(ok, 5000, 5001) is None
    bad = config_line("AERO_VIRTIO_SELFTEST|CONFIG|http_url=http://10.0.2.2:18080/p|udp_port=18081")
    why = port_mismatch(bad, 5000, 5001)
    assert why is not None and "18081" in why and "5001" in why and "18080" in why
    assert port_mismatch(config_line("AERO_VIRTIO_SELFTEST|CONFIG"), 1, 2) is None


def test_kvm_probe_reads_the_kernel_panic_as_alive() -> None:
    assert kernel_ran(b"...\r\n[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs")
    assert not kernel_ran(b"KVM internal error. Suberror: 1\nemulation failure")
    argv = probe_argv(QemuCommand(Path("/q")), Path("/k"))
    assert argv[:3] == ["/q", "-accel", "kvm"] and "panic=-1" in argv[-1]


def test_explicit_accel_is_taken_and_auto_without_probe_kernel_is_tcg(tmp_path: Path) -> None:
    q = QemuCommand(Path("/nonexistent"))
    assert resolve_accel("kvm", q, None, tmp_path).name == "kvm"
    assert resolve_accel("tcg", q, None, tmp_path).name == "tcg"
    auto = resolve_accel("auto", q, None, tmp_path)
    assert auto.name == "tcg" and auto.reason.startswith("auto: ")


def test_probe_kernel_never_builds_the_reference_image_for_a_users_own_image(tmp_path: Path) -> None:
    from pytest_aero_virtio.qemu.accel import find_probe_kernel

    built: list[str] = []

    def build() -> Path:
        built.append("reference")
        return tmp_path / "ref-vmlinuz"

    explicit, cached, host = tmp_path / "mine", tmp_path / "cached-vmlinuz", tmp_path / "host-vmlinuz"
    host.write_bytes(b"k")
    assert find_probe_kernel(explicit, True, build, [cached, host]) == explicit
    assert find_probe_kernel(None, True, build, [cached, host]) == host  # the cached one does not exist
    cached.write_bytes(b"k")
    assert find_probe_kernel(None, True, build, [cached, host]) == cached
    assert find_probe_kernel(None, True, build, [tmp_path / "none"]) is None
    assert built == []
    assert find_probe_kernel(None, False, build, [cached]) == tmp_path / "ref-vmlinuz"  # booted anyway
    assert built == ["reference"]

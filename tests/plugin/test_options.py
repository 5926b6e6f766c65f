"""Option validation: every bad value names the option and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aero_virtio import options as o
from pytest_aero_virtio.errors import AeroConfigError


def test_ports_accept_auto_numbers_and_reject_garbage() -> None:
    assert o.parse_port("--vm-http-port", "auto", 18080) == 0
    assert o.parse_port("--vm-http-port", None, 18080) == 18080
    assert o.parse_port("--vm-http-port", "8080", 18080) == 8080
    with pytest.raises(AeroConfigError, match=r"--vm-udp-port='70000'.*out of range"):
        o.parse_port("--vm-udp-port", "70000", 1)
    with pytest.raises(AeroConfigError, match="not a whole number"):
        o.parse_port("--vm-udp-port", "eighty", 1)


def test_http_path_must_start_with_slash() -> None:
    assert o.parse_http_path("/x") == "/x"
    with pytest.raises(AeroConfigError) as exc:
        o.parse_http_path("x")
    assert "--vm-http-path" in str(exc.value) and "fix: pass --vm-http-path=/x" in str(exc.value)
    with pytest.raises(AeroConfigError):
        o.parse_http_path("/a|b")


def test_choice_and_seconds() -> None:
    with pytest.raises(AeroConfigError, match="use one of: auto, kvm, tcg"):
        o.parse_choice("--vm-accel", "hvf", ("auto", "kvm", "tcg"))
    assert o.parse_seconds("--vm-timeout", "2.5") == 2.5
    with pytest.raises(AeroConfigError, match="more than 0"):
        o.parse_seconds("--vm-timeout", "0")


def test_image_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(AeroConfigError) as exc:
        o.readable_file("--vm-image", str(tmp_path / "nope.img"))
    assert exc.value.token == "IMAGE_UNREADABLE" and "does not exist" in str(exc.value)
    with pytest.raises(AeroConfigError, match="not a regular file"):
        o.readable_file("--vm-image", str(tmp_path))
    img = tmp_path / "a,b c.img"
    img.write_bytes(b"\0" * 512)
    assert o.readable_file("--vm-image", str(img)) == img.resolve()


def test_vectors_device_option_overrides_global() -> None:
    vec = o.vectors_from({"vm_msix_vectors": "4", "vm_net_vectors": "0"})
    assert vec == {"blk": 4, "net": 0, "input": 4, "snd": 4}
    with pytest.raises(AeroConfigError, match="--vm-blk-vectors"):
        o.vectors_from({"vm_blk_vectors": "-1"})


def test_collect_prefers_command_line_then_ini_then_default(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nvm_memory = 256\nvm_smp = 2\nqemu_extra_args = -y\nvm_artifacts = out\n")
    config = pytester.parseconfigure("--vm-memory=1024", "--qemu-extra-arg=-cpu max")
    values = o.collect(config)
    assert values["vm_memory"] == "1024"
    assert values["vm_smp"] == "2"
    assert values["vm_machine"] == "q35"
    # split like a shell line on the command line and in the ini file alike
    assert values["qemu_extra_args"] == ["-y", "-cpu", "max"]
    # a relative path in the ini file is relative to that file
    assert values["vm_artifacts"] == str(pytester.path / "out")


def test_old_spellings_still_work_and_warn(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    config = pytester.parseconfigure("--follow-serial", "--virtio-net-vectors=0", "--blk-resize-delta-mib=8")
    warned: list[Warning] = []
    monkeypatch.setattr(config, "issue_config_time_warning", lambda w, stacklevel: warned.append(w))
    values = o.collect(config)
    assert sorted(str(w).split(" (")[0] for w in warned) == [
        "--blk-resize-delta-mib",
        "--follow-serial",
        "--virtio-net-vectors",
    ]
    assert any("--follow-serial (ini follow_serial) is renamed --vm-follow-serial" in str(w) for w in warned)
    assert all(isinstance(w, pytest.PytestDeprecationWarning) for w in warned)
    assert values["vm_follow_serial"] is True
    assert values["vm_net_vectors"] == "0"
    assert values["vm_blk_resize_delta_mib"] == "8"


def test_booleans_from_the_ini_file_can_be_switched_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nvm_follow_serial = true\n")
    assert o.collect(pytester.parseconfigure())["vm_follow_serial"] is True
    assert o.collect(pytester.parseconfigure("--no-vm-follow-serial"))["vm_follow_serial"] is False


def test_old_spellings_are_hidden_from_help(pytester: pytest.Pytester) -> None:
    out = pytester.runpytest("--help").stdout.str()
    assert "--vm-follow-serial" in out and "--vm-msix-vectors" in out
    assert "--follow-serial" not in out.replace("--vm-follow-serial", "").replace("--no-vm-follow-serial", "")
    assert "--virtio-msix-vectors" not in out


def test_every_option_has_an_ini_name_and_help() -> None:
    inis = [opt.ini for opt in o.OPTIONS]
    assert len(inis) == len(set(inis))
    for opt in o.OPTIONS:
        assert opt.flag.startswith("--") and opt.help

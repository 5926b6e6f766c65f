"""The plugin end to end on real QEMU and the reference guest, including its failure paths."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aero_e2e_procs import HANGING_BOOT_SECTOR, qemu_pids_with, wait_gone

pytestmark = pytest.mark.slow


RESULT_TEST = """
import pytest

@pytest.mark.aero_check("virtio-blk", "virtio-input", "virtio-input-bind", "virtio-net", "virtio-net-udp")
def test_result(aero_vm):
    aero_vm.expect_result()
"""


def run(pytester: pytest.Pytester, source: str, *args: str, timeout: float = 300) -> pytest.RunResult:
    """Run ``source`` as a test file in a child pytest. ``--vm-artifacts=X`` also names the QEMU ``-name X``,
    so the ``artifacts`` fixture can find any QEMU process the child leaves behind."""
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    named = [
        f"--qemu-extra-arg={a}"
        for arg in args
        if arg.startswith("--vm-artifacts=")
        for a in ("-name", arg.split("=", 1)[1])
    ]
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args, *named, timeout=timeout)


def test_reference_guest_passes_and_writes_artifacts(pytester: pytest.Pytester, artifacts: Path) -> None:
    from pytest_aero_virtio.refenv.image import ensure_image

    disk = ensure_image().disk
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", "--vm-follow-serial")
    res.assert_outcomes(passed=1)
    # the guest wrote its blk test files, into the snapshot overlay only
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before, "the base image was modified"
    # --vm-follow-serial: the guest's lines reach the terminal live, past pytest's fd capture
    assert "AERO_VIRTIO_SELFTEST|START|version=1" in res.stdout.str() + res.stderr.str()
    (vm_dir,) = artifacts.iterdir()
    serial = (vm_dir / "serial.log").read_bytes()
    assert b"AERO_VIRTIO_SELFTEST|RESULT|PASS" in serial
    argv = (vm_dir / "qemu-argv.txt").read_text()
    assert "disable-legacy=on" in argv and "opt/aero/args" in argv
    assert (vm_dir / "qmp.log").stat().st_size > 0
    http = (vm_dir / "http.log").read_text()
    assert " 200 " in http or "200" in http
    assert not qemu_pids_with(str(artifacts))


def test_qemu_killed_mid_run_fails_waits_within_a_second(pytester: pytest.Pytester, artifacts: Path) -> None:
    source = """
    import os, signal, time
    import pytest
    from pytest_aero_virtio.errors import AeroFailure

    @pytest.mark.aero_check("virtio-net")
    def test_kill(aero_vm):
        aero_vm.handle.stream.wait_for(lambda m: m.kind == "START", 120, "START")
        os.kill(aero_vm.handle.session.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(AeroFailure, match="QEMU_EXITED") as exc:
            aero_vm.expect_pass("virtio-net")
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, elapsed
        assert "serial.log" in str(exc.value)
    """
    res = run(pytester, source, f"--vm-artifacts={artifacts}")
    res.assert_outcomes(passed=1)


def test_guest_that_prints_nothing_fails_with_a_reason(
    pytester: pytest.Pytester, artifacts: Path, tmp_path: Path
) -> None:
    blank = tmp_path / "blank, disk.img"  # a comma in the path: escaped as ',,' for QEMU
    blank.write_bytes(HANGING_BOOT_SECTOR + b"\0" * ((1 << 20) - 512))
    res = run(
        pytester,
        RESULT_TEST,
        f"--vm-artifacts={artifacts}",
        f"--vm-image={blank}",
        "--vm-silence-timeout=4",
        "--vm-timeout=60",
    )
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*FAIL: NO_SERIAL_OUTPUT*"])
    assert blank.read_bytes() == HANGING_BOOT_SECTOR + b"\0" * ((1 << 20) - 512), "the base image was written"


def test_qemu_that_dies_at_start_names_its_error(pytester: pytest.Pytester, artifacts: Path) -> None:
    res = run(
        pytester,
        RESULT_TEST,
        f"--vm-artifacts={artifacts}",
        "--qemu-extra-arg=-device",
        "--qemu-extra-arg=no-such-device-xyz",
    )
    res.assert_outcomes(errors=1)  # the VM fixture could not boot: a setup error, not a verdict
    res.stdout.fnmatch_lines(["*FAIL: QEMU_EXITED*", "*no-such-device-xyz*"])


def test_port_in_use_is_a_clear_error(pytester: pytest.Pytester, artifacts: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", f"--vm-http-port={port}")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines([f"*PORT_IN_USE*{port}*"])


def test_guest_port_mismatch_fails_at_once(pytester: pytest.Pytester, artifacts: Path) -> None:
    t0 = time.monotonic()
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", "--vm-guest-arg=--udp-port=9")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*FAIL: UDP_PORT_MISMATCH*"])
    assert time.monotonic() - t0 < 120


def test_dry_run_prints_argv_and_runs_nothing(pytester: pytest.Pytester, artifacts: Path) -> None:
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", "--vm-dry-run")
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*dry run*", "*virtio-blk-pci*disable-legacy=on*", "*1 planned*"])
    # nothing booted: no VM directory, only the sockets/overlay directory the listing names
    assert [p.name for p in artifacts.iterdir()] == ["dry-run"]
    assert not qemu_pids_with(str(artifacts))


def test_dry_run_without_snapshot_names_the_image_format(
    pytester: pytest.Pytester, artifacts: Path, tmp_path: Path
) -> None:
    """--vm-snapshot=off boots the image itself: the dry run tells QEMU its format as a boot does (qcow2 here)."""
    image = tmp_path / "guest.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    kernel = tmp_path / "vmlinuz"  # never booted: the dry run only prints the command
    kernel.write_bytes(b"\0" * 512)
    args = (f"--vm-image={image}", f"--vm-kernel={kernel}", "--vm-snapshot=off", "--vm-dry-run")
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", *args)
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*driver=qcow2,node-name=disk0,file=disk0-file*"])


def test_dry_run_command_pasted_into_a_shell_boots_the_guest(pytester: pytest.Pytester, artifacts: Path) -> None:
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", "--vm-dry-run")
    lines = res.stdout.lines
    first = next(i for i, line in enumerate(lines) if line.endswith("qemu-system-x86_64 \\"))
    command = [lines[first]]
    while command[-1].endswith("\\"):
        command.append(lines[first + len(command)])
    assert len(command) > 20, "one argument per line"
    serial_log = artifacts / "dry-run" / "vm0" / "serial.log"
    shell = subprocess.Popen(["bash", "-c", "\n".join(command)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and shell.poll() is None:
            if serial_log.exists() and b"AERO_VIRTIO_SELFTEST|START" in serial_log.read_bytes():
                break
            time.sleep(0.2)
        assert serial_log.exists() and b"AERO_VIRTIO_SELFTEST|START" in serial_log.read_bytes(), shell.poll()
        assert (artifacts / "dry-run" / "vm0" / "qmp.sock").is_socket()
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def test_bad_options_are_usage_errors(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res = run(pytester, RESULT_TEST, f"--vm-image={tmp_path / 'missing.img'}")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*IMAGE_UNREADABLE*missing.img*"])
    res = run(pytester, RESULT_TEST, "--qemu-system=/nonexistent/qemu")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*QEMU_NOT_FOUND*"])
    res = run(pytester, RESULT_TEST, "--vm-accel=hvf")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    image = tmp_path / "other-guest.img"
    image.write_bytes(b"\0" * 512)
    res = run(pytester, RESULT_TEST, f"--vm-image={image}", "--vm-direct-boot=on")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*CONFIG_ERROR: --vm-direct-boot=on*", "fix:*--vm-kernel*"])


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_no_qemu_survives_an_interrupted_run(pytester: pytest.Pytester, artifacts: Path, how: str) -> None:
    """Ctrl-C runs the teardown; SIGKILL of pytest (a crashed xdist worker) leaves QEMU to PDEATHSIG."""
    pytester.makepyfile(
        test_inner=textwrap.dedent("""
        import time, pytest

        @pytest.mark.aero_check("virtio-net")
        def test_wait(aero_vm):
            aero_vm.handle.stream.wait_for(lambda m: m.kind == "START", 120, "START")
            print("VM-STARTED", flush=True)
            time.sleep(600)
    """)
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-s",
            "-q",
            f"--vm-artifacts={artifacts}",
            "--qemu-extra-arg=-name",
            f"--qemu-extra-arg={artifacts}",
            str(pytester.path / "test_inner.py"),
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "VM-STARTED" in line or time.monotonic() > deadline:
            break
    print("".join(seen))
    if not qemu_pids_with(str(artifacts)):
        proc.kill()
        pytest.fail("QEMU should be running now")
    proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
    proc.wait(timeout=60)
    assert wait_gone(str(artifacts), 20) == []


def test_pytest_timeout_tears_the_vm_down(pytester: pytest.Pytester, artifacts: Path, tmp_path: Path) -> None:
    """A VM that never answers (its boot sector only loops) is torn down when pytest-timeout fires, and the
    failure names what the test waited for (the plugin takes over pytest-timeout's timer for VM tests)."""
    blank = tmp_path / "blank.img"
    blank.write_bytes(HANGING_BOOT_SECTOR + b"\0" * ((1 << 20) - 512))
    source = """
    import pytest

    @pytest.mark.timeout(15)
    @pytest.mark.aero_check("virtio-net")
    def test_hang(aero_vm):
        aero_vm.expect_pass("virtio-net")
    """
    res = run(pytester, source, f"--vm-artifacts={artifacts}", f"--vm-image={blank}", "--vm-silence-timeout=600")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([
        "FAIL: TIMEOUT: pytest-timeout (15 s) expired while the test waited for the final virtio-net*"
    ])
    assert wait_gone(str(artifacts), 10) == []


def test_opt_in_without_its_host_action_fails_after_the_guest_timeout(
    pytester: pytest.Pytester, artifacts: Path
) -> None:
    """The guest is provisioned for media keys but no selected test armed the injection: the guest gives up
    after its 10 s wait and the run ends with SELFTEST_FAILED naming the check - it never hangs."""
    t0 = time.monotonic()
    res = run(pytester, RESULT_TEST, f"--vm-artifacts={artifacts}", "--vm-guest-arg=--test-input-media-keys")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*FAIL: SELFTEST_FAILED*virtio-input-media-keys*"])
    assert time.monotonic() - t0 < 120


def test_xdist_boots_each_vm_once_and_keeps_test_names(pytester: pytest.Pytester, artifacts: Path) -> None:
    """Under -n 2 the tests of one VM go to one worker (one boot per planned VM, not per worker), and JUnit
    names carry no scheduling suffix."""
    source = """
    import pytest

    @pytest.mark.aero_check("virtio-blk")
    def test_a(aero_vm):
        aero_vm.expect_pass("virtio-blk")

    @pytest.mark.aero_check("virtio-net")
    def test_b(aero_vm):
        aero_vm.expect_pass("virtio-net")

    @pytest.mark.aero_check("virtio-input")
    def test_c(aero_vm):
        aero_vm.expect_pass("virtio-input")

    @pytest.mark.aero_vm(vectors=0)
    @pytest.mark.aero_check("virtio-blk")
    def test_intx(aero_vm):
        assert aero_vm.expect_pass("virtio-blk").get("irq_mode") == "intx"
    """
    junit = pytester.path / "junit.xml"
    res = run(pytester, source, f"--vm-artifacts={artifacts}", "-n", "2", f"--junitxml={junit}")
    res.assert_outcomes(passed=4)
    vm_dirs = sorted(p.name for p in artifacts.iterdir())
    assert len(vm_dirs) == 2, vm_dirs  # two planned VMs, each booted once
    xml = junit.read_text()
    assert 'name="test_a"' in xml and "@aero-vm" not in xml


def test_fixed_port_vms_on_two_workers_take_turns(pytester: pytest.Pytester, artifacts: Path) -> None:
    """A guest with fixed ports (like a Windows image) on -n 2: the two VMs need the same ports, so the second
    waits for the first instead of failing with PORT_IN_USE."""
    source = """
    import pytest

    @pytest.mark.aero_check("virtio-net")
    def test_modern(aero_vm):
        aero_vm.expect_pass("virtio-net")

    @pytest.mark.aero_vm(vectors=0)
    @pytest.mark.aero_check("virtio-net")
    def test_intx(aero_vm):
        aero_vm.expect_pass("virtio-net")
    """
    with socket.socket() as probe:  # two free ports, fixed for both VMs
        probe.bind(("127.0.0.1", 0))
        http = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = probe.getsockname()[1]
    res = run(
        pytester, source, f"--vm-artifacts={artifacts}", "-n", "2", f"--vm-http-port={http}", f"--vm-udp-port={udp}"
    )
    res.assert_outcomes(passed=2)
    assert len(list(artifacts.iterdir())) == 2


def test_vm_stops_before_the_next_vm_even_if_its_last_test_is_skipped(
    pytester: pytest.Pytester, artifacts: Path
) -> None:
    """The plan's last test of vm0 is skipped: vm0 must still be stopped before vm1 boots (never two at once)."""
    source = f"""
    import pytest
    from aero_e2e_procs import qemu_pids_with

    @pytest.mark.aero_check("virtio-net")
    def test_first(aero_vm):
        aero_vm.expect_pass("virtio-net")

    @pytest.mark.skip(reason="skipped on purpose")
    @pytest.mark.aero_check("virtio-net")
    def test_skipped_last_of_vm0(aero_vm):
        pass

    @pytest.mark.aero_vm(vectors=0)
    @pytest.mark.aero_check("virtio-net")
    def test_other_vm(aero_vm):
        assert len(qemu_pids_with({str(artifacts)!r})) == 1, "vm0 is still running beside vm1"
    """
    shutil.copy(Path(__file__).parent / "aero_e2e_procs.py", pytester.path)  # importable by the inner test
    res = run(pytester, source, f"--vm-artifacts={artifacts}")
    res.assert_outcomes(passed=2, skipped=1)


def test_bad_marker_arguments_name_the_test(pytester: pytest.Pytester) -> None:
    source = """
    import pytest

    @pytest.mark.aero_check(["virtio-blk"])
    def test_list_instead_of_names(aero_vm):
        pass
    """
    res = run(pytester, source)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*test_list_instead_of_names*aero_check takes check names as strings*"])

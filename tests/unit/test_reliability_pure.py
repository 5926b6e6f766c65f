"""The pure parts of how a run holds up: the lines that explain an end, QEMU's stderr that matters, the checks of
an image at start, the nameless snapshot overlay, and waits that end for a reason from outside."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.errors import IMAGE_INVALID, IMAGE_UNREADABLE, INTERRUPTED, TIMEOUT, AeroFailure
from pytest_aero_virtio.guest_end import EndNotes, describe_guest_end, explains
from pytest_aero_virtio.preflight import check_artifacts_dir, check_image, classify_head, qcow2_backing
from pytest_aero_virtio.qemu.argv import anonymous_overlay, image_virtual_size
from pytest_aero_virtio.qemu.lifecycle import exit_failure, stderr_that_matters
from pytest_aero_virtio.stream import MarkerStream

# --- how a guest ended --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[    3.78] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", "panic"),
        ("[   12.00] BUG: kernel NULL pointer dereference, address: 0000000000000008", "bug"),
        ("[    1.00] Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"),
        ("[    9.10] reboot: Power down", "poweroff"),
        ("[    9.10] reboot: Restarting system", "reboot"),
        ("*** STOP: 0x0000007B (0xF78D2524,0xC0000034,0x00000000,0x00000000)", "bugcheck"),
        ("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS", None),
        ("debug: no BUGS here", None),
        ("selftest: debug check of the ring passed", None),
        ("KeBugCheckEx BugCheck 0x9F", "bugcheck"),
    ],
)
def test_explains(line: str, kind: str | None) -> None:
    assert explains(line) == kind


def test_end_notes_keep_the_first_and_the_last_with_line_numbers() -> None:
    notes = EndNotes(first=2, last=3)
    for n in range(1, 101):
        line = f"[x] BUG: number {n}" if n % 10 == 0 else f"line {n}"
        kind = explains(line)
        if kind is not None:
            notes.note(n, line, kind)
    lines = notes.lines()
    assert lines[0] == "serial line 10: [x] BUG: number 10" and lines[1].startswith("serial line 20:")
    assert lines[2] == "... 5 more such line(s) in serial.log ..."
    assert [line.split(":")[0] for line in lines[3:]] == ["serial line 80", "serial line 90", "serial line 100"]
    assert notes.kinds == ["bug"]


@pytest.mark.parametrize(
    ("kinds", "reason", "says"),
    [
        (["panic", "reboot"], "guest-reset", "the guest's kernel panicked"),  # panic=-1 reboots: the line wins
        ([], "guest-shutdown", "the guest powered off"),
        (["poweroff"], None, "the guest powered off"),
        ([], "guest-reset", "the guest rebooted"),
        ([], "host-signal", None),
        ([], None, None),
    ],
)
def test_describe_guest_end(kinds: list[str], reason: str | None, says: str | None) -> None:
    events = [{"event": "SHUTDOWN", "data": {"guest": True, "reason": reason}}] if reason else []
    described = describe_guest_end(kinds, events)
    assert (described or "").startswith(says or "") and (described is None) == (says is None)


def test_the_failure_quotes_the_explaining_line_far_above_the_tail() -> None:
    stream = MarkerStream(tail_lines=5)
    stream.feed_line("AERO_VIRTIO_SELFTEST|START|version=1")
    stream.feed_line("[ 3.7] Kernel panic - not syncing: Attempted to kill init!")
    for n in range(40):
        stream.feed_line(f"[ 3.8] stack frame {n}")
    stream.close(exit_failure(0, during_start=False, result_seen=False, stopped_how=None, stderr_tail=[],
                              guest_end=describe_guest_end(stream.end_kinds, [])))  # fmt: skip
    with pytest.raises(AeroFailure) as ei:
        stream.wait_final("virtio-blk", 1.0)
    text = str(ei.value)
    assert text.startswith("FAIL: QEMU_EXITED: the guest's kernel panicked before its RESULT line")
    assert "  ! serial line 2: [ 3.7] Kernel panic - not syncing" in text
    assert text.index("explain the end") < text.index("last 5 serial lines")


def test_stderr_that_matters_drops_benign_warnings_and_repeats() -> None:
    lines = [
        "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]",
        "audio: Could not create a backend for voice `virtio-sound.in'",
        "virtio_input_handle_event: unmapped button: 8 [wheel-right]",
        "qemu-system-x86_64: -device foo: 'foo' is not a valid device model name",
        "qemu-system-x86_64: -device foo: 'foo' is not a valid device model name",
    ]
    assert stderr_that_matters(lines) == [lines[3]]
    failure = exit_failure(1, during_start=True, result_seen=False, stopped_how=None, stderr_tail=lines)
    assert str(failure).count("not a valid device model name") == 1
    assert "warning" not in str(failure) and "quoted above" in str(failure)


# --- images at start ---------------------------------------------------------------------------------------


def test_classify_head() -> None:
    assert classify_head(b"QFI\xfb" + b"\0" * 100) == "qcow2"
    assert classify_head(b"\0" * 510 + b"\x55\xaa") == "raw"
    assert classify_head(b"\0" * 512 + b"EFI PART" + b"\0" * 8) == "raw"
    assert classify_head(b"\0" * 4096) is None
    assert classify_head(b"hello") is None


def _qcow2(backing: str | None) -> bytes:
    name = (backing or "").encode()
    header = struct.pack(">4sIQI", b"QFI\xfb", 3, 104 if name else 0, len(name)) + b"\0" * 84
    return header + name + b"\0" * 512


def test_qcow2_backing_name() -> None:
    assert qcow2_backing(_qcow2("base.qcow2")) == "base.qcow2"
    assert qcow2_backing(_qcow2(None)) is None


def test_qcow2_with_a_missing_relative_backing_file_is_named(tmp_path: Path) -> None:
    image = tmp_path / "over.qcow2"
    image.write_bytes(_qcow2("base.qcow2"))
    with pytest.raises(Exception) as ei:
        check_image("--vm-image", image, direct_kernel=False)
    assert ei.value.token == IMAGE_UNREADABLE  # type: ignore[attr-defined]
    assert f"backing file: {tmp_path / 'base.qcow2'} does not exist" in str(ei.value)
    (tmp_path / "base.qcow2").write_bytes(_qcow2(None))
    check_image("--vm-image", image, direct_kernel=False)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "is empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "is a text file"),
        (b"\x01" * 300, "too small for a disk"),
        (b"QFI\xfb\0\0\0\x09" + b"\0" * 200, "damaged header"),
        (b"conectix" + b"\0" * 1000, "is a VHD image"),
    ],
)
def test_not_a_bootable_disk(tmp_path: Path, data: bytes, says: str) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(data)
    with pytest.raises(Exception) as ei:
        check_image("--vm-image", image, direct_kernel=False)
    assert ei.value.token == IMAGE_INVALID  # type: ignore[attr-defined]
    assert says in str(ei.value) and "fix: " in str(ei.value)


def test_unreadable_image_names_the_cause(tmp_path: Path) -> None:
    from pytest_aero_virtio.options import readable_file

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.img")
    for name, says in (("a", "is a symlink loop"), ("dangling", "is a symlink to"), ("none", "does not exist")):
        with pytest.raises(Exception, match=says):
            readable_file("--vm-image", str(tmp_path / name))
    with pytest.raises(Exception, match="is not a regular file"):
        readable_file("--vm-image", str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_problem_is_named(tmp_path: Path) -> None:
    from pytest_aero_virtio.options import readable_file

    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 512)
    image.chmod(0)
    with pytest.raises(Exception, match="permission denied"):
        readable_file("--vm-image", str(image))


def test_artifacts_root(tmp_path: Path) -> None:
    assert check_artifacts_dir("--vm-artifacts", tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(Exception, match="--vm-artifacts") as ei:
            check_artifacts_dir("--vm-artifacts", bad)
        assert str(ei.value).startswith("FAIL: CONFIG_ERROR: --vm-artifacts: ")


# --- the nameless snapshot overlay ------------------------------------------------------------------------


def test_anonymous_overlay_has_no_name_and_is_handed_over_as_an_fd(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 4096)
    fd, fmt = anonymous_overlay(base, str(tmp_path))
    try:
        assert fmt == "raw" and not [p for p in tmp_path.iterdir() if p != base]
        head = os.pread(fd, 64, 0)
        assert head[:4] == b"QFI\xfb" and image_virtual_size(head, 0) == 4608
        assert os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    finally:
        os.close(fd)


# --- waits that end from outside -------------------------------------------------------------------------------


def test_abort_wait_ends_only_that_threads_wait_and_names_what_it_waited_for() -> None:
    stream = MarkerStream()
    stream.feed_line("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS")
    caught: list[BaseException] = []

    def waiter() -> None:
        try:
            stream.wait_final("virtio-net", 30.0)
        except AeroFailure as exc:
            caught.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    while not stream.waits:
        time.sleep(0.01)
    assert not stream.abort_wait(threading.get_ident(), lambda w: AeroFailure(TIMEOUT, w.what))  # not waiting
    assert stream.abort_wait(t.ident, lambda w: AeroFailure(TIMEOUT, f"gave up on the {w.what}"))
    t.join(5)
    (exc,) = caught
    assert str(exc).startswith("FAIL: TIMEOUT: gave up on the final virtio-net marker")
    assert "| AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS" in str(exc)
    assert stream.closed is None  # the stream goes on: the VM's next test can still wait
    assert stream.wait_final("virtio-blk", 0.1).status == "PASS"


def test_a_signal_during_a_wait_reports_the_test_as_interrupted() -> None:
    from pytest_aero_virtio.errors import RunInterrupted

    stream = MarkerStream()
    timer = threading.Timer(0.2, lambda: None)
    timer.start()
    original = stream._cond.wait

    def interrupted_wait(timeout: float | None = None) -> bool:
        original(0.01)
        raise RunInterrupted("SIGTERM")

    stream._cond.wait = interrupted_wait  # type: ignore[method-assign]
    with pytest.raises(AeroFailure) as ei:
        stream.wait_final("virtio-net", 5.0)
    assert ei.value.token == INTERRUPTED
    assert "SIGTERM received" in ei.value.message and "while the test waited for the final virtio-net" in str(ei.value)


def test_probe_group_is_killed_on_timeout(tmp_path: Path) -> None:
    from pytest_aero_virtio.qemu.process import run_child

    pidfile = tmp_path / "child.pid"
    script = tmp_path / "launcher"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    with pytest.raises(subprocess.TimeoutExpired):
        run_child([str(script)], timeout=0.5)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the launcher's child outlived the probe"


def test_an_interrupted_build_step_leaves_no_child(tmp_path: Path) -> None:
    """Ctrl-C (or the SIGTERM handler's exception) while a build tool runs: the tool's whole group dies."""
    from pytest_aero_virtio.refenv.buildtools import run_captured

    pidfile = tmp_path / "child.pid"
    script = tmp_path / "tool"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_captured([str(script)], cwd=tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the build tool's child outlived the interrupted build"


def test_a_build_step_reports_output_and_status(tmp_path: Path) -> None:
    from pytest_aero_virtio.refenv.buildtools import run_captured

    proc = run_captured(["sh", "-c", "pwd; echo oops >&2; exit 3"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr.strip()) == (3, str(tmp_path), "oops")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

"""VmSession against a fake QEMU: streaming, QMP, exits, the shutdown ladder, cleanup and artifacts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError

from pytest_aero_virtio.artifacts import ArtifactDir
from pytest_aero_virtio.errors import (
    NO_SERIAL_OUTPUT,
    QEMU_EXITED,
    QEMU_NOT_FOUND,
    TIMEOUT,
    AeroConfigError,
    AeroError,
)
from pytest_aero_virtio.qemu import process
from pytest_aero_virtio.qemu.lifecycle import Runstate, StopTimeouts
from pytest_aero_virtio.qemu.qmp import QmpChannel
from pytest_aero_virtio.qemu.session import VmSession
from pytest_aero_virtio.stream import MarkerStream

from .conftest import FAKE_QEMU, StandInStream, fake_argv, process_gone, wait_gone

FAST = StopTimeouts(quit=2.0, term=1.0, kill=3.0)


def make(
    tmp_path: Path,
    stream: StandInStream,
    mode: str = "normal",
    script: list[tuple[float, str]] | None = None,
    **kw: Any,
) -> VmSession:
    env = {"FAKE_QEMU_MODE": mode}
    if script is not None:
        env["FAKE_QEMU_SERIAL"] = json.dumps(script)
    kw.setdefault("stop_timeouts", FAST)
    kw.setdefault("start_timeout", 10.0)
    return VmSession(fake_argv, artifacts=ArtifactDir(tmp_path, "vm[fake]"), stream=stream, env=env, **kw)


def test_markers_qmp_quit_and_artifacts(tmp_path: Path, stream: StandInStream) -> None:
    followed: list[str] = []
    session = make(tmp_path, stream, follow_serial=followed.append)
    with session:
        pid = session.pid
        assert pid is not None and session.alive
        assert stream.wait_for("RESULT|PASS", 5.0) == "AERO_VIRTIO_SELFTEST|RESULT|PASS"
        # the line split over two writes arrives whole, CRLF and LF both end lines
        assert "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_bytes=1048576" in stream.lines
        assert "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS" in stream.lines
        assert stream.feed_threads == {"aero-vm-vm_fake"}
        assert session.qmp("query-status") == {"status": "running", "singlestep": False, "running": True}
        with pytest.raises(ExecuteError):
            session.qmp("no-such-command")
        assert stream.closed is None
    assert session.ending == "quit"
    assert session.returncode == 0
    assert not session.alive
    assert process_gone(pid)
    assert followed == stream.lines
    # stopping closed the stream: waits for what arrived still succeed, anything else fails with QEMU_EXITED
    assert stream.wait_for("virtio-net|PASS", 0.1)
    with pytest.raises(AeroError) as ei:
        stream.wait_for("virtio-snd", 0.1)
    assert ei.value.token == QEMU_EXITED
    art = session.artifacts
    assert art.serial.read_bytes().startswith(b"SeaBIOS noise\r\n\x1b[2J")
    assert b"write_bytes=1048576\r\n" in art.serial.read_bytes()
    argv_text = art.argv.read_text()
    assert str(FAKE_QEMU) in argv_text and "mode=control" in argv_text
    qmp_log = art.qmp.read_text()
    assert '"execute": "query-status"' in qmp_log
    assert "CommandNotFound" in qmp_log
    assert '"execute": "quit"' in qmp_log
    assert "<-- greeting" in qmp_log
    assert art.shutdown.read_text().startswith("how=quit status=exit status 0")
    assert "fake qemu: started" in art.stderr.read_text()
    assert "[aero-harness] QEMU ended: how=quit" in art.stderr.read_text()
    assert session.stop() == "quit"  # idempotent


def test_hanging_qemu_reaches_sigkill(tmp_path: Path, stream: StandInStream) -> None:
    session = make(tmp_path, stream, "hang", stop_timeouts=StopTimeouts(quit=0.5, term=0.5, kill=3.0))
    session.start()
    pid = session.pid
    assert pid is not None
    stream.wait_for("RESULT", 5.0)
    t0 = time.monotonic()
    assert session.stop() == "kill"
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 3.0, elapsed
    assert session.returncode == -signal.SIGKILL
    assert process_gone(pid)
    assert "how=kill" in session.artifacts.shutdown.read_text()


def test_crash_mid_run_ends_pending_wait_within_a_second(tmp_path: Path, stream: StandInStream) -> None:
    script = [(0.0, "AERO_VIRTIO_SELFTEST|START|version=1\n"), (0.8, "about to crash\n")]
    session = make(tmp_path, stream, "crash", script=script)
    with session:
        pid = session.pid
        assert pid is not None
        errors: list[BaseException] = []
        raised_at: list[float] = []

        def waiter() -> None:
            try:
                stream.wait_for("virtio-blk|PASS", 30.0)
            except BaseException as exc:
                raised_at.append(time.monotonic())
                errors.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        stream.wait_for("about to crash", 5.0)
        seen = time.monotonic()
        t.join(5.0)
        assert raised_at and raised_at[0] - seen < 1.0, (raised_at, seen)
        err = errors[0]
        assert isinstance(err, AeroError) and err.token == QEMU_EXITED
        assert "exited unexpectedly (exit status 1) before the guest's RESULT line" in err.message
        assert "fake crash: virtqueue corrupted" in err.message  # the stderr tail
        assert not session.alive
        assert session.returncode == 1
        with pytest.raises(AeroError) as ei:
            session.qmp("query-status", timeout=2.0)
        assert ei.value.token == QEMU_EXITED
    assert session.ending == "exited"
    assert process_gone(pid)


def test_guest_poweroff_after_result_is_a_normal_end(tmp_path: Path, stream: StandInStream) -> None:
    # the last line has no newline: it must still reach the stream before it closes
    script = [(0.0, "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS\n"), (0.2, "AERO_VIRTIO_SELFTEST|RESULT|PASS")]
    session = make(tmp_path, stream, "poweroff", script=script)
    with session:
        assert session.wait_exit(5.0) == 0
        err = stream.wait_closed(2.0)
        assert stream.lines[-1] == "AERO_VIRTIO_SELFTEST|RESULT|PASS"
        assert isinstance(err, AeroError) and err.token == QEMU_EXITED
        assert "after the guest's RESULT line" in err.message
        assert stream.wait_for("virtio-blk|PASS", 0.1)
    assert session.ending == "exited"
    assert "how=exited status=exit status 0" in session.artifacts.shutdown.read_text()


def test_qemu_exits_at_start_with_stderr(tmp_path: Path, stream: StandInStream) -> None:
    session = make(tmp_path, stream, "early_exit")
    with pytest.raises(AeroError) as ei:
        session.start()
    err = ei.value
    assert err.token == QEMU_EXITED
    assert "during start-up (exit status 1)" in err.message
    assert "Property 'virtio-blk-pci.x-pci-revision' not found" in err.message
    assert stream.closed is err
    assert session.pid is not None and process_gone(session.pid)
    assert session.stop() == "exited"


def test_missing_binary(tmp_path: Path, stream: StandInStream) -> None:
    session = VmSession(
        lambda q: ["/nonexistent/qemu-system-x86_64", "-S"],
        artifacts=ArtifactDir(tmp_path, "vm"),
        stream=stream,
    )
    with pytest.raises(AeroConfigError) as ei:
        session.start()
    assert ei.value.token == QEMU_NOT_FOUND
    assert "/nonexistent/qemu-system-x86_64" in ei.value.message
    assert ei.value.fix and "--qemu-system" in ei.value.fix
    assert session.pid is None
    assert session.stop() == "not-started"
    s2 = VmSession(lambda q: ["no-such-qemu-xyz"], artifacts=ArtifactDir(tmp_path, "vm"), stream=StandInStream())
    with pytest.raises(AeroConfigError, match="not found on PATH"):
        s2.start()


def test_silent_guest_fails_with_no_serial_output(tmp_path: Path, stream: StandInStream) -> None:
    session = make(tmp_path, stream, "silent", silence_timeout=0.5)
    with session:
        t0 = time.monotonic()
        with pytest.raises(AeroError) as ei:
            stream.wait_for("START", 10.0)
        assert time.monotonic() - t0 < 2.0
        assert ei.value.token == NO_SERIAL_OUTPUT
        assert "printed nothing on" in ei.value.message and "--vm-silence-timeout" in ei.value.message
        assert session.alive  # QEMU runs on until stop()


def test_every_quiet_stretch_counts_until_the_result(tmp_path: Path, stream: StandInStream) -> None:
    """A guest that printed START and then hung is as stuck as one that never printed."""
    script = [(0.0, "AERO_VIRTIO_SELFTEST|START|version=1\n"), (0.3, "still booting\n")]
    with make(tmp_path, stream, script=script, silence_timeout=1.0):
        stream.wait_for("still booting", 5.0)
        t0 = time.monotonic()
        err = stream.wait_closed(5.0)
        assert 0.5 < time.monotonic() - t0 < 2.5
        assert isinstance(err, AeroError) and err.token == NO_SERIAL_OUTPUT
        assert "printed nothing more" in err.message


def test_silence_after_the_result_is_not_a_failure(tmp_path: Path, stream: StandInStream) -> None:
    with make(tmp_path, stream, silence_timeout=0.5):
        stream.wait_for("RESULT", 5.0)
        time.sleep(1.2)
        assert stream.closed is None


def test_console_is_always_drained(tmp_path: Path, stream: StandInStream) -> None:
    env_flood = {"FAKE_QEMU_MODE": "flood", "FAKE_QEMU_FLOOD_S": "1.0"}
    session = VmSession(
        fake_argv, artifacts=ArtifactDir(tmp_path, "vm"), stream=stream, env=env_flood, stop_timeouts=FAST
    )
    with session:
        stream.wait_for("RESULT|PASS", 10.0)
        assert session.artifacts.serial.stat().st_size > 1_000_000


def test_services_start_before_qemu_and_stop_after(tmp_path: Path, stream: StandInStream) -> None:
    events: list[str] = []

    class Services:
        async def start(self) -> None:
            events.append("services.start")

        async def stop(self) -> None:
            events.append(f"services.stop alive={session.alive}")

    def argv(q: int) -> list[str]:
        events.append("argv")
        return fake_argv(q)

    services: Any = Services()
    session = VmSession(
        argv,
        artifacts=ArtifactDir(tmp_path, "vm"),
        stream=stream,
        env={},
        services=services,
        stop_timeouts=FAST,
    )
    with session:
        stream.wait_for("RESULT", 5.0)
    assert events == ["services.start", "argv", "services.stop alive=False"]


def test_reactions_run_on_the_loop_with_the_sessions_qmp_channel(tmp_path: Path, stream: StandInStream) -> None:
    """One path from a READY line to QMP: the channel the reactions were built with is the session's own."""
    script = [(0.0, "AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|READY\n")]
    results: list[Any] = []
    cancelled: list[bool] = []
    channel = QmpChannel("vm_fake", tmp_path / "qmp-channel.log")

    class Reactions:
        def on_marker(self, m: Any) -> None:
            if "READY" in m:

                async def act() -> None:
                    results.append((threading.current_thread().name, await channel.execute("query-status")))

                asyncio.get_running_loop().create_task(act())

        async def cancel(self) -> None:
            cancelled.append(True)

    session = make(tmp_path, stream, script=script, reactions=Reactions(), qmp=channel)
    assert session.qmp_channel is channel
    with session:
        deadline = time.monotonic() + 5
        while not results and time.monotonic() < deadline:
            time.sleep(0.02)
    assert results == [("aero-vm-vm_fake", {"status": "running", "singlestep": False, "running": True})]
    assert cancelled == [True]
    assert '"execute": "query-status"' in (tmp_path / "qmp-channel.log").read_text()


def test_states_follow_the_life_of_the_vm(tmp_path: Path, stream: StandInStream) -> None:
    session = make(tmp_path, stream)
    assert session.state is Runstate.IDLE
    session.start()
    assert session.state is Runstate.RUNNING
    stream.wait_for("RESULT", 5.0)
    session.stop()
    assert session.state is Runstate.STOPPED
    with pytest.raises(RuntimeError, match="start\\(\\) in state stopped"):
        session.start()
    never = make(tmp_path, StandInStream())
    assert never.stop() == "not-started" and never.state is Runstate.STOPPED


def test_kill_all_and_registry(tmp_path: Path) -> None:
    streams = [StandInStream(), StandInStream()]
    sessions = [make(tmp_path, s) for s in streams]
    try:
        for s in sessions:
            s.start()
        live = process.live_pids()
        assert all(s.pid in live for s in sessions)
        assert process.kill_all() >= 2
        for st in streams:
            err = st.wait_closed(1.0)
            assert isinstance(err, AeroError) and err.token == QEMU_EXITED
            assert "killed by signal 9 (SIGKILL)" in err.message
        assert not any(s.pid in process.live_pids() for s in sessions)
    finally:
        for s in sessions:
            s.stop()
    assert all(s.ending == "exited" and s.returncode == -9 for s in sessions)


def test_qmp_timeout(tmp_path: Path, stream: StandInStream) -> None:
    with make(tmp_path, stream, "hang", stop_timeouts=StopTimeouts(quit=0.2, term=0.2, kill=3.0)) as session:
        with pytest.raises(AeroError) as ei:
            session.qmp("quit", timeout=0.3)  # the hanging fake never answers quit
        assert ei.value.token == TIMEOUT


def test_pdeathsig_kills_qemu_when_harness_dies(tmp_path: Path) -> None:
    pidfile = tmp_path / "fake.pid"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import conftest
        from pathlib import Path
        from pytest_aero_virtio.artifacts import ArtifactDir
        from pytest_aero_virtio.qemu.session import VmSession
        st = conftest.StandInStream()
        s = VmSession(conftest.fake_argv, artifacts=ArtifactDir(Path({str(tmp_path)!r}), "child"),
                      stream=st, env={{"FAKE_QEMU_PIDFILE": {str(pidfile)!r}}})
        s.start()
        st.wait_for("RESULT", 10)  # the fake is done writing: nothing but PDEATHSIG can end it now
        print("started", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        fake_pid = int(pidfile.read_text())
        assert not process_gone(fake_pid)
        # QEMU is in its own session, so the group kill of the harness would not reach it; PDEATHSIG must
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        assert wait_gone(fake_pid, 3.0), f"fake QEMU {fake_pid} survived its harness"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if pidfile.exists() and not process_gone(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)  # do not leak it when the assertion failed


def test_real_marker_stream_wait_final_ends_on_crash(tmp_path: Path) -> None:
    stream = MarkerStream()
    script = [(0.0, "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_bytes=1\r\n"), (0.5, "boom\n")]
    with make(tmp_path, stream, "crash", script=script) as session:  # type: ignore[arg-type]
        assert stream.wait_final("virtio-blk", 5.0).status == "PASS"
        t0 = time.monotonic()
        with pytest.raises(AeroError) as ei:
            stream.wait_final("virtio-net", 30.0)
        assert time.monotonic() - t0 < 1.5
        assert ei.value.token == QEMU_EXITED
        assert "fake crash: virtqueue corrupted" in str(ei.value)
        assert stream.wait_final("virtio-blk", 0.1).status == "PASS"  # what arrived stays available
        assert session.returncode == 1

"""The chaos suite's harness: run a real pytest on real QEMU, hurt it, and check it left nothing behind.

Every case runs the plugin in a child ``python -m pytest`` (as a user would) with its own ``TMPDIR``, artifacts
root and JUnit file, and ends with :meth:`Chaos.assert_clean`: no QEMU left (by process tree: this process is a
child subreaper, so whatever the inner run orphans is re-parented here and found; and by the ``-name`` marker in
QEMU's command line), no file left in the inner run's temp directory, and every guarded disk image unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .guests import TinyGuest, tiny_guest

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def live_processes() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


@dataclass
class Outcome:
    """What one inner run did."""

    rc: int
    out: str
    elapsed: float
    junit: Path

    def cases(self) -> dict[str, tuple[str, str]]:
        """JUnit test name -> (outcome, message text); empty when no JUnit file was written."""
        if not self.junit.exists():
            return {}
        out: dict[str, tuple[str, str]] = {}
        for case in ET.parse(self.junit).getroot().iter("testcase"):
            verdict, text = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    verdict, text = tag, node.text or node.get("message") or ""
                    break
            out[case.get("name", "?")] = (verdict, text)
        return out

    def count(self, text: str) -> int:
        return self.out.count(text)

    def reports(self) -> str:
        """The output before pytest's short test summary. The summary repeats each message: cut to its first
        line on a terminal, whole when pytest sees a CI (``CI`` or ``BUILD_NUMBER`` set), so a count that must
        not depend on where the suite runs counts here."""
        return self.out.split(" short test summary info ", 1)[0]


@dataclass
class Chaos:
    """One chaos case: private directories for the inner run, and the checks that it left nothing behind."""

    root: Path
    marker: str = field(default_factory=lambda: f"aero-chaos-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.dir = self.root / "inner"
        self.tmpdir = self.root / "tmp"
        self.artifacts = self.root / "artifacts"
        self.junit = self.root / "junit.xml"
        for d in (self.dir, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        self._guarded: dict[Path, str] = {}

    # -- running ---------------------------------------------------------------------------------------------
    def argv(self, source: str, *args: str) -> list[str]:
        test_file = self.dir / "test_inner.py"
        test_file.write_text(textwrap.dedent(source))
        return [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--vm-artifacts={self.artifacts}",
            f"--junitxml={self.junit}",
            "--qemu-extra-arg=-name",
            f"--qemu-extra-arg={self.marker}",
            *args,
            str(test_file),
        ]

    def env(self) -> dict[str, str]:
        from pytest_aero_virtio.refenv.cache import cache_root

        return {
            **os.environ,
            "TMPDIR": str(self.tmpdir),
            "AERO_VIRTIO_CACHE": str(cache_root()),
            "PYTHONUNBUFFERED": "1",
            "PYTEST_ADDOPTS": "",
        }

    def start(self, source: str, *args: str) -> subprocess.Popen[str]:
        self.t0 = time.monotonic()
        return subprocess.Popen(
            self.argv(source, *args),
            cwd=self.dir,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, proc: subprocess.Popen[str], timeout: float = 240.0) -> Outcome:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"the inner run did not end within {timeout} s:\n{out}")
        outcome = Outcome(proc.returncode, out, time.monotonic() - self.t0, self.junit)
        print(outcome.out)
        return outcome

    def run(self, source: str, *args: str, timeout: float = 240.0) -> Outcome:
        return self.finish(self.start(source, *args), timeout)

    # -- what the inner run started ---------------------------------------------------------------------------
    def qemu_pids(self, under: int | None = None) -> list[int]:
        """Live QEMU processes of this case: by the marker in their command line, or (``under``) anywhere in the
        process tree below that pid."""
        found = []
        for pid in live_processes():
            st = _stat(pid)
            if st is None or st[0] == "Z":
                continue
            cmd = cmdline(pid)
            if "qemu-system" in cmd and (self.marker in cmd or (under is not None and self._below(pid, under))):
                found.append(pid)
        return found

    @staticmethod
    def _below(pid: int, ancestor: int) -> bool:
        for _ in range(64):
            st = _stat(pid)
            if st is None:
                return False
            pid = st[1]
            if pid == ancestor:
                return True
            if pid <= 1:
                return False
        return False

    def wait_for_qemu(self, proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.qemu_pids(under=proc.pid)
            if pids:
                return pids[0]
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        pytest.fail("QEMU never started")

    def wait_for_serial(self, needle: bytes, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for log in self.artifacts.glob("*/serial.log"):
                with contextlib.suppress(OSError):
                    if needle in log.read_bytes():
                        return
            time.sleep(0.1)
        pytest.fail(f"{needle!r} never appeared on the guest's serial port")

    # -- nothing left behind -------------------------------------------------------------------------------------
    def guard(self, *images: Path) -> None:
        """Remember the hash of disk images the run must never write."""
        for image in images:
            self._guarded[image] = _sha256(image)

    def leftovers(self, wait: float = 10.0) -> list[str]:
        """Processes of this case still alive after ``wait`` s: QEMUs with the marker, and any orphan of the inner
        run re-parented to this (subreaper) process. They are killed and reaped before returning."""
        deadline = time.monotonic() + wait
        while True:
            me = os.getpid()
            orphans = [p for p in live_processes() if (_stat(p) or ("Z", 0))[1] == me and self._is_ours(p)]
            left = sorted(set(self.qemu_pids()) | set(orphans))
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        described = [f"{pid}: {cmdline(pid)[:200]}" for pid in left]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.reap_orphans()
        return described

    def _is_ours(self, pid: int) -> bool:
        cmd = cmdline(pid)
        return self.marker in cmd or "qemu" in cmd or str(self.root) in cmd

    @staticmethod
    def reap_orphans() -> None:
        """Reap zombies re-parented to this process (only those: Popen objects reap their own)."""
        me = os.getpid()
        for pid in live_processes():
            st = _stat(pid)
            if st is not None and st[0] == "Z" and st[1] == me:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)

    def assert_clean(self) -> None:
        left = self.leftovers()
        assert not left, f"processes outlived the inner run: {left}"
        files = sorted(str(p.relative_to(self.tmpdir)) for p in self.tmpdir.rglob("*") if not _pytests_own(p))
        assert not files, f"files left in the inner run's temp directory: {files}"
        for image, digest in self._guarded.items():
            assert _sha256(image) == digest, f"the base image {image} was modified"


def _pytests_own(path: Path) -> bool:
    """pytest-xdist's controller makes pytest's base temp directory (``pytest-of-<user>/pytest-N``) for its
    workers, empty unless a test uses ``tmp_path``: not the plugin's."""
    return any(part.startswith("pytest-of-") for part in path.parts) and (path.is_dir() or path.is_symlink())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> None:
    """Orphans of an inner run (a QEMU whose pytest was SIGKILLed) become this process's children: found."""
    _become_subreaper()


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    case = Chaos(tmp_path)
    yield case
    case.leftovers(wait=0)  # a failed case must not leave QEMU running for the next one
    Chaos.reap_orphans()


class GuestShelf:
    """Tiny guests built once per session (the same script is the same guest)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, TinyGuest] = {}

    def __call__(self, script: str) -> TinyGuest:
        if script not in self._built:
            self._built[script] = tiny_guest(self.root, script)
        return self._built[script]


@pytest.fixture(scope="session")
def guests(tmp_path_factory: pytest.TempPathFactory) -> GuestShelf:
    return GuestShelf(tmp_path_factory.mktemp("chaos-guests"))


def lines_with(out: str, needle: str) -> Sequence[str]:
    return [line for line in out.splitlines() if needle in line]

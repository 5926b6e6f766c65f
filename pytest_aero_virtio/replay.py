"""``--vm-replay``: judge a recorded run without booting - the live session's twin, with no QEMU.

A recorded VM (a VM directory of an earlier run's ``--vm-artifacts``, or a bare serial log from anywhere, the
old harness included) is fed through the same :class:`~pytest_aero_virtio.stream.MarkerStream`, the same
requirements and the same tests: the serial bytes line by line, then the host markers the run recorded. The
stream is then closed the way the recorded QEMU ended (``shutdown.txt``), so a missing marker gets the verdict
it got live. What a check needs and the recording lacks (a bare serial log has no host side: no HTTP log, no
QMP, no WAV) skips that test with a reason naming the missing file.

Uses: re-judging a slow guest after changing a test, triaging a log from a bare-metal or old-harness run, and
testing the plugin itself on recorded runs.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import ArtifactDir
from .errors import QEMU_EXITED, AeroConfigError, AeroFailure, EvidenceMissing
from .markers import HostMarker, LineSplitter, parse_line
from .plan import PlannedVm
from .qemu.lifecycle import exit_failure, qemu_stderr_tail
from .settings import Settings
from .stream import MarkerStream
from .vmbase import VmBase, pci_ids

__all__ = ["HostLog", "RecordedVm", "Recording", "assign_recordings", "find_recordings", "parse_http_log"]


@dataclass(frozen=True)
class Recording:
    """One recorded VM: its directory, its serial log, and what ``vm.json`` says it was (None for a bare log)."""

    dir: Path
    serial: Path
    vm_id: str | None = None
    config: str | None = None
    tests: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return str(self.dir) if self.serial.name == "serial.log" else str(self.serial)


def _recording(directory: Path) -> Recording:
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((directory / "vm.json").read_text())
    return Recording(
        directory, directory / "serial.log", meta.get("id"), meta.get("config"), tuple(meta.get("tests", ()))
    )


def find_recordings(path: Path) -> list[Recording]:
    """The recorded VMs under ``path``: a serial log file, one VM directory, or an artifacts root of VM dirs."""
    if path.is_file():
        return [Recording(path.parent, path)]
    if not path.is_dir():
        raise AeroConfigError(
            f"--vm-replay={path}: no such file or directory",
            fix="give an artifacts directory of an earlier run (--vm-artifacts), one VM's directory, or a serial log",
        )
    if (path / "serial.log").is_file():
        return [_recording(path)]
    found = [_recording(d) for d in sorted(path.iterdir()) if (d / "serial.log").is_file()]
    if not found:
        raise AeroConfigError(
            f"--vm-replay={path}: no serial.log in it or in its subdirectories",
            fix="point --vm-replay at the --vm-artifacts directory of a run, a VM directory in it, or a serial log",
        )
    return found


def assign_recordings(vms: Sequence[PlannedVm], recordings: list[Recording]) -> dict[str, Recording]:
    """Planned VM id -> the recording that serves it.

    Each recording with metadata serves the planned VM with the same configuration, else one whose tests it
    ran (the newest such recording, when a VM was booted twice). A lone recording that matches no planned VM
    (a bare serial log, another run's VM) serves the first planned VM: the log is of one VM, and the other
    VMs' tests skip rather than judge it against devices it never had.
    """
    out: dict[str, Recording] = {}
    for vm in vms:
        for wanted in (
            lambda r, vm=vm: r.config == str(vm.config),
            lambda r, vm=vm: bool(r.tests) and set(vm.tests) <= set(r.tests),
        ):
            candidates = [r for r in recordings if wanted(r)]
            if candidates:
                out[vm.id] = max(candidates, key=lambda r: r.serial.stat().st_mtime)
                break
    if not out and len(recordings) == 1 and vms:
        out[vms[0].id] = recordings[0]
    return out


@dataclass(frozen=True)
class HostLog:
    """What the host's services logged (http.log): HTTP statuses, UDP echoes, the ports they served."""

    requests: tuple[tuple[str, str, int], ...]
    echoed: int
    http_port: int | None
    udp_port: int | None


_START = re.compile(r" START http=[^:]+:(\d+)\S* udp=[^:]+:(\d+)")
_HTTP = re.compile(r" HTTP (\S+) (\S+) (\d{3}) ")
_UDP = re.compile(r" UDP \S+ bytes=\d+ echoed")


def parse_http_log(text: str) -> HostLog:
    """The host services' log, as written by host/services.py (pure)."""
    requests = tuple((m[1], m[2], int(m[3])) for m in _HTTP.finditer(text))
    start = _START.search(text)
    return HostLog(
        requests,
        len(_UDP.findall(text)),
        int(start[1]) if start else None,
        int(start[2]) if start else None,
    )


def parse_shutdown(text: str) -> tuple[str, int | None]:
    """``how=exited status=exit status 0 returncode=0`` -> (``exited``, 0)."""
    how = re.search(r"how=(\S+)", text)
    rc = re.search(r"returncode=(-?\d+)", text)
    return (how[1] if how else "unknown", int(rc[1]) if rc else None)


def query_pci_from_qmp_log(text: str) -> list[dict[str, Any]] | None:
    """The reply to the first ``query-pci`` in a qmp.log (the harness asks it right after the handshake)."""
    asked = False
    for line in text.splitlines():
        if '--> {"execute": "query-pci"}' in line:
            asked = True
        elif asked and " <-- {" in line:
            payload = json.loads(line.split(" <-- ", 1)[1])
            reply = payload.get("return")
            return reply if isinstance(reply, list) else None
    return None


class RecordedVm(VmBase):
    """A planned VM judged from a recording: the same waits and requirements as a live one, no QEMU."""

    def __init__(self, settings: Settings, planned: PlannedVm, recording: Recording) -> None:
        self.settings = settings
        self.planned = planned
        self.config = planned.config
        self.recording = recording
        self.artifacts = ArtifactDir.existing(recording.dir)
        self.stream = MarkerStream(log_paths=self.artifact_paths())
        self._http: HostLog | None = None

    def __repr__(self) -> str:
        return f"<RecordedVm {self.planned.id} from {self.recording.label}>"

    def artifact_paths(self) -> dict[str, Path]:
        paths = self.artifacts.paths(existing_only=True)
        paths["serial"] = self.recording.serial
        return paths

    def start(self) -> None:
        """Feed the recording through the stream, then end it as the recorded QEMU ended."""
        splitter = LineSplitter()
        with open(self.recording.serial, "rb") as fh:
            while chunk := fh.read(1 << 16):
                for line in splitter.feed(chunk):
                    self.stream.feed_line(line)
        for line in splitter.flush():
            self.stream.feed_line(line)
        for line in self._optional_text(self.artifacts.host_markers).splitlines():
            item = parse_line(line)
            if isinstance(item, HostMarker):
                self.stream.add_host(item)
        self.stream.close(self._end())

    def _end(self) -> AeroFailure:
        text = self._optional_text(self.artifacts.shutdown)
        if not text:
            return AeroFailure(
                QEMU_EXITED,
                f"the recording ends here ({self.recording.label}; a replay, no QEMU ran)",
                fix="the recorded guest never printed the awaited line",
                artifacts=self.artifact_paths(),
            )
        how, rc = parse_shutdown(text)
        return exit_failure(
            rc,
            during_start=False,
            result_seen=self.stream.result is not None,
            stopped_how=None if how == "exited" else how,
            stderr_tail=qemu_stderr_tail(self.artifacts.stderr),
            artifacts=self.artifact_paths(),
        )

    def stop(self) -> str:
        return "replayed"

    def require_host_evidence(self) -> None:
        """A bare serial log has no host side; a VM directory of this harness always has its argv."""
        if not self.artifacts.host_markers.exists() and not self.artifacts.argv.exists():
            raise EvidenceMissing(f"replay of {self.recording.label}: the host's markers were not recorded")

    def status(self) -> str:
        return f"replayed from {self.recording.label}"

    @staticmethod
    def _optional_text(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _evidence(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise EvidenceMissing(f"replay of {self.recording.label}: {what} was not recorded ({path.name} missing)")
        return path

    def _host_log(self) -> HostLog:
        if self._http is None:
            log = self._evidence(self.artifacts.http, "the host's HTTP/UDP log")
            self._http = parse_http_log(self._optional_text(log))
        return self._http

    def ports(self) -> tuple[int, int]:
        log = self._host_log()
        if log.http_port is None or log.udp_port is None:
            raise EvidenceMissing(f"replay of {self.recording.label}: http.log does not say which ports were served")
        return log.http_port, log.udp_port

    def udp_datagrams(self) -> int:
        return self._host_log().echoed

    def http_statuses(self) -> list[tuple[str, str, int]]:
        return list(self._host_log().requests)

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        raise EvidenceMissing(f"replay of {self.recording.label}: no QEMU runs in a replay (QMP {command!r})")

    def pci_devices(self) -> dict[str, tuple[int, int]]:
        reply = query_pci_from_qmp_log(self._optional_text(self._evidence(self.artifacts.qmp, "QEMU's QMP log")))
        if reply is None:
            raise EvidenceMissing(f"replay of {self.recording.label}: qmp.log has no query-pci reply")
        return pci_ids(reply)

    def finish_for_wav(self) -> Path:
        return self._evidence(self.artifacts.dir / "audio.wav", "the recorded audio")

"""One planned VM of the run, wired: artifacts, marker stream, host services, QMP, reactions and the session.

This is where a READY line's path is assembled, once, before QEMU starts::

    plan (VmConfig.reactions) -> actions.reactions_for() -> Reactor(ActionContext(qmp=channel))
    session: serial line -> stream.feed_line -> Reactor.on_marker -> reaction -> channel.execute -> QEMU

The :class:`~pytest_aero_virtio.qemu.qmp.QmpChannel` is made here and given to both the reactions and the
session, so there is no late binding. Host markers have one writer: the stream's subscriber that appends
them to host-markers.log. A :class:`VmHandle` is booted by the pool when the first test needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .actions import vm_reactions
from .actions.base import ActionContext, Reactor
from .artifacts import ArtifactDir
from .config import VmConfig
from .errors import UDP_PORT_MISMATCH, AeroConfigError, AeroFailure
from .host.portlock import PortLocks
from .host.services import HostServices
from .markers import HostMarker, Marker, StreamItem
from .plan import PlannedVm, guest_args
from .qemu.argv import ImageFormat, RuntimePaths, anonymous_overlay, build_argv, image_format, tablet_display
from .qemu.caps import Caps
from .qemu.qmp import QmpChannel
from .qemu.session import VmSession
from .report.attach import AttachPoint, KeepRequest, hold
from .report.screens import screen_path, screendump
from .report.story import StoryLog
from .settings import Settings
from .stream import MarkerStream
from .vmbase import VmBase, pci_ids

__all__ = ["WORKER", "VmHandle", "port_mismatch", "runtime_paths"]

LOG = logging.getLogger(__name__)

#: The xdist worker this process is (``main`` without xdist): part of artifact names, so workers never collide.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def runtime_paths(
    settings: Settings,
    config: VmConfig,
    *,
    accel: str,
    http_port: int,
    udp_port: int,
    serial: int | str,
    qmp: int | None,
    wav_path: Path | None,
    overlay: Path | int | None,
    image_format: ImageFormat,
) -> RuntimePaths:
    """The launch-time facts of one VM, for a boot and for the dry run alike (one rule for each of them).

    The wav file exists only for a VM with sound on the wav backend; the overlay only with snapshot on; the
    guest's arguments only with fw_cfg provisioning (a baked guest is sent nothing).
    """
    args = guest_args(
        config,
        http_port=http_port,
        udp_port=udp_port,
        http_path=settings.options.http_path,
        extra=settings.guest_extra_args,
    )
    return RuntimePaths(
        serial=serial,  # type: ignore[arg-type]
        qmp=qmp,
        wav_path=wav_path if config.snd and config.audio == "wav" else None,
        guest_args=args if settings.provisioning == "fw_cfg" else "",
        accel=accel,
        image_format=image_format,
        overlay=overlay if settings.options.snapshot else None,
    )


def port_mismatch(config_marker: Marker, http_port: int, udp_port: int) -> str | None:
    """Why the guest's CONFIG line does not match the host's services, or None (pure)."""
    problems = []
    udp = config_marker.get("udp_port")
    if udp is not None and udp.isdigit() and int(udp) != udp_port:
        problems.append(f"guest sends UDP to port {udp}, host echoes on {udp_port}")
    url = config_marker.get("http_url")
    if url is not None:
        tail = url.split("://", 1)[-1].split("/", 1)[0]
        port = tail.rsplit(":", 1)[1] if ":" in tail else "80"
        if port.isdigit() and int(port) != http_port:
            problems.append(f"guest fetches {url}, host serves HTTP on port {http_port}")
    return "; ".join(problems) or None


class VmHandle(VmBase):
    """One VM of the run: its session, stream, services and what the tests ask of it."""

    def __init__(
        self,
        settings: Settings,
        planned: PlannedVm,
        caps: Caps,
        accel: str,
        follow: Callable[[str], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Writes a line to the user's terminal (AeroRun.say), or None: where the silence warning goes.
        self.say = say
        self.planned = planned
        self.config = planned.config
        self.caps = caps
        self.accel = accel
        prefix = "" if WORKER == "main" else f"{WORKER}-"
        self.artifacts = ArtifactDir(settings.options.artifacts_dir, f"{prefix}{planned.id}")
        self.stream = MarkerStream(log_paths=self.artifacts.paths())
        self.story = StoryLog(planned.id)
        for subscriber in (self._write_host_marker, self._check_config, self.story, self._screen_at_result):
            self.stream.subscribe(subscriber)
        #: Where a person reaches this VM (--vm-keep-on-failure, --pdb); None otherwise.
        self.attach = AttachPoint() if settings.attachable else None
        #: Set when a test of this VM failed under --vm-keep-on-failure: the stop waits for the person.
        self.keep: KeepRequest | None = None
        self._screen_tasks: set[asyncio.Task[Path | None]] = set()
        self.services = HostServices(
            http_port=settings.options.http_port,
            udp_port=settings.options.udp_port,
            http_path=settings.options.http_path,
            log_path=self.artifacts.http,
        )
        self.wav_path = self.artifacts.file("audio.wav") if self.config.snd and self.config.audio == "wav" else None
        # The snapshot overlay takes the guest's writes: a file without a name, QEMU's descriptor its only
        # reference (see anonymous_overlay), so no way of dying leaves it behind.
        self.overlay: int | None = None
        self.image_format: ImageFormat = "raw"
        self._pci: dict[str, tuple[int, int]] | None = None
        self._port_locks = PortLocks(
            (settings.options.http_port, settings.options.udp_port), settings.options.timeout_s
        )
        self.session = self._session(follow)
        self.started_at = 0.0
        self.deadline = 0.0

    def _session(self, follow: Callable[[str], None] | None) -> VmSession:
        """The session, with the READY-to-QMP path wired once: one QMP channel for the reactions and QEMU."""
        qmp = QmpChannel(self.artifacts.name, self.artifacts.qmp)
        ctx = ActionContext(
            qmp=qmp,
            stream=self.stream,
            vm=self.config,
            caps=self.caps,
            tablet_display=tablet_display(self.caps),
            blk_resize_delta=self.settings.blk_resize_delta,
        )
        return VmSession(
            self._argv,
            artifacts=self.artifacts,
            stream=self.stream,
            qmp=qmp,
            services=self.services,
            reactions=Reactor(ctx, vm_reactions(self.config)),
            follow_serial=follow,
            silence_timeout=self.settings.silence_timeout_s,
            name=self.artifacts.name,
            silence_warn=self._warn_silence if self.say is not None else None,
        )

    def __repr__(self) -> str:
        return f"<VmHandle {self.planned.id} {self.planned.devices()} {self.session.state.value}>"

    def ports(self) -> tuple[int, int]:
        return self.services.http_port, self.services.udp_port

    # -- lifecycle ------------------------------------------------------------------------------------------
    def _argv(self, qmp_fd: int) -> list[str]:
        rt = runtime_paths(
            self.settings,
            self.config,
            accel=self.accel,
            http_port=self.services.http_port,
            udp_port=self.services.udp_port,
            serial="pipe",
            qmp=qmp_fd,
            wav_path=self.wav_path,
            overlay=self.overlay,
            image_format=self.image_format,
        )
        if self.attach is not None:
            rt = dataclasses.replace(rt, **self.attach.runtime())
        return build_argv(self.options, self.config, self.caps, rt)

    def _prepare_disk(self) -> None:
        image = self.options.image
        if image is None:
            return
        if self.options.snapshot:
            self.overlay, self.image_format = anonymous_overlay(image)
            self.session.extra_fds = [self.overlay]
            return
        self.image_format = image_format(image)

    def start(self) -> None:
        self._write_vm_json()
        self._prepare_disk()
        # Fixed ports (a Windows guest's) are taken in turn by this user's VMs; ephemeral ones need no lock.
        self._port_locks.acquire()
        self.started_at = time.monotonic()
        self.story.t0 = self.started_at
        self.deadline = self.started_at + self.options.timeout_s
        LOG.info("%s: booting (%s, %s)", self.planned.id, self.planned.devices(), self.accel)
        try:
            self.session.start()
            if self.attach is not None:
                self.session.loop.call(self.attach.start(self.session.console), 10.0)
        except BaseException:
            self._port_locks.release()
            if self.attach is not None:
                self.attach.remove()
            raise
        finally:
            self._close_overlay()  # QEMU holds its own descriptor (or never will)
        LOG.info("%s: QMP up, QEMU pid %s, artifacts %s", self.planned.id, self.session.pid, self.artifacts.dir)
        with contextlib.suppress(AeroFailure):
            self._pci = self._query_pci()

    def stop(self) -> str:
        try:
            interrupted = self._last_look()
        except BaseException as exc:  # pytest-timeout firing while a person looks: stop all the same, re-raise
            interrupted = exc
        try:
            ending = self.session.stop().value
            LOG.info("%s: stopped (%s)", self.planned.id, ending)
            return ending
        finally:
            self._port_locks.release()
            self._close_overlay()
            self._write_timeline()
            if self.attach is not None:
                self.attach.remove()
            if interrupted is not None:
                raise interrupted

    def _last_look(self) -> BaseException | None:
        """Before the stop ladder, while QEMU may still run: the person's turn (a kept VM), the end-of-VM
        screenshot if RESULT did not take one, and the attach point's sockets closed on the loop."""
        interrupted = hold(self, self.keep) if self.keep is not None and self.session.alive else None
        if self.session.alive and not screen_path(self.artifacts, "end").exists():
            self.screenshot("end")
        if self.attach is not None and self.session.loop.running:
            with contextlib.suppress(Exception):
                self.session.loop.call(self.attach.close(), 5.0)
        return interrupted

    def _close_overlay(self) -> None:
        fd, self.overlay = self.overlay, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _write_vm_json(self) -> None:
        """vm.json: which planned VM this directory belongs to and which tests it served (for replays)."""
        data = {"id": self.planned.id, "config": str(self.config), "tests": list(self.planned.tests)}
        with contextlib.suppress(OSError):
            self.artifacts.file("vm.json").write_text(json.dumps(data, indent=1) + "\n")

    def _write_timeline(self) -> None:
        """timeline.jsonl: every marker and host marker with its arrival time relative to QEMU's start.

        It is what the benchmarks read (READY -> injection latency, time to RESULT) and what a reader
        needs to see where a slow run spent its time.
        """
        if not self.started_at:
            return
        lines = []
        for item in self.stream.history:
            entry: dict[str, object] = {"t": round(item.t - self.started_at, 4)}
            if isinstance(item, HostMarker):
                entry.update(host=item.topic, status=item.status)
            else:
                entry.update(kind=item.kind, name=item.name, status=item.status)
            lines.append(json.dumps(entry))
        with contextlib.suppress(OSError):
            self.artifacts.file("timeline.jsonl").write_text("".join(f"{line}\n" for line in lines))

    # -- screenshots -----------------------------------------------------------------------------------------
    def screenshot(self, reason: str) -> Path | None:
        """A PNG of the VM's display now, ``<vm dir>/screen-<reason>.png``; None when QEMU is not running.

        From a test thread it waits for QEMU (10 s at most). On the VM loop (a stream subscriber, the silence
        warning) it cannot wait: it starts the dump and returns the path the file is about to have.
        """
        if not self.session.alive or not self.session.loop.running:
            return None
        path = screen_path(self.artifacts, reason)
        if self.session.loop.on_loop_thread():
            task = asyncio.get_running_loop().create_task(screendump(self.session.qmp_channel, path))
            self._screen_tasks.add(task)
            task.add_done_callback(self._screen_tasks.discard)
            return path
        try:
            return self.session.loop.call(screendump(self.session.qmp_channel, path), 10.0)
        except Exception as exc:  # a timeout or a loop already gone: evidence only, never a new failure
            LOG.info("%s: no screenshot %s: %s", self.planned.id, path.name, exc)
            return None

    def _screen_at_result(self, item: StreamItem) -> None:
        """The end-of-VM screenshot as RESULT arrives: the reference guest powers off a second later."""
        if isinstance(item, Marker) and item.kind == "RESULT":
            self.screenshot("end")

    def artifact_paths(self) -> dict[str, Path]:
        """The VM's artifact files that exist, the newest screenshot and the WAV among them."""
        paths = self.artifacts.paths(existing_only=True)
        screen = self.latest_screenshot()
        if screen is not None:
            paths["screenshot"] = screen
        if self.wav_path is not None and self.wav_path.exists():
            paths["audio"] = self.wav_path
        return paths

    def _warn_silence(self, quiet_s: float) -> None:
        """On the VM loop: a guest quiet for a long stretch gets a terminal line now, not only a failure at the
        silence timeout. Said from a helper thread: taking a screenshot is a QMP call, which the loop's own
        thread cannot wait for."""
        name = f"{self.artifacts.name}-quiet"
        threading.Thread(target=self._say_silent, args=(quiet_s,), name=name, daemon=True).start()

    def _say_silent(self, quiet_s: float) -> None:
        shot = self.screenshot("guest-silent")
        where = f"; screenshot: {shot}" if shot else ""
        limit = self.settings.silence_timeout_s
        last = self.stream.tail(1)
        since = f" more since: {last[0][:120]}" if last else ""
        if self.say is not None:
            self.say(
                f"aero-virtio: WARNING: {self.planned.id} ({self.artifacts.dir}): the guest has printed nothing"
                f"{since} for {quiet_s:.0f} s (it fails with NO_SERIAL_OUTPUT at {limit:g} s){where}"
            )

    def allow_quiet(self, seconds: float) -> None:
        """A check that legitimately prints nothing for a while: the silence timeout ignores the next
        ``seconds`` (from now)."""
        if self.session.silence is not None:
            self.session.silence.allow_quiet(seconds)

    def udp_datagrams(self) -> int:
        return sum(1 for d in self.services.datagrams if d.echoed)

    def http_statuses(self) -> list[tuple[str, str, int]]:
        return [(r.method, r.path, r.status) for r in self.services.requests]

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        return self.session.qmp(command, arguments)

    def status(self) -> str:
        return self.session.ending.value if self.session.ending is not None else self.session.state.value

    def pci_devices(self) -> dict[str, tuple[int, int]]:
        """Read once right after QMP is up and kept: the PCI layout never changes, and a test asking after the
        guest powered off (it does so after RESULT) must still get an answer."""
        if self._pci is None:
            self._pci = self._query_pci()
        return self._pci

    def _query_pci(self) -> dict[str, tuple[int, int]]:
        return pci_ids(self.qmp("query-pci"))

    def finish_for_wav(self) -> Path:
        """Wait for the guest's RESULT and for QEMU to exit (a clean exit writes the WAV header)."""
        if self.wav_path is None:
            raise AeroConfigError("this VM has no wav audio backend", fix="mark the test aero_check(audio='wav')")
        self.stream.wait_result(self.remaining())
        if self.session.wait_exit(min(30.0, self.remaining())) is None:
            self.session.stop()  # QMP quit first: still a clean exit, so the header is written
        return self.wav_path

    # -- stream subscribers (on the VM loop) --------------------------------------------------------------
    def _write_host_marker(self, item: StreamItem) -> None:
        """The one writer of host-markers.log (subscribers run in order, one at a time: no lock needed)."""
        if isinstance(item, HostMarker):
            with open(self.artifacts.host_markers, "a", encoding="utf-8") as fh:
                fh.write(item.line() + "\n")

    def _check_config(self, item: StreamItem) -> None:
        if isinstance(item, Marker) and item.kind == "CONFIG":
            why = port_mismatch(item, self.services.http_port, self.services.udp_port)
            if why is not None:
                self.stream.close(
                    AeroFailure(
                        UDP_PORT_MISMATCH,
                        why,
                        fix="the guest's ports are fixed by its provisioning: pass --vm-http-port/--vm-udp-port "
                        "with the guest's ports, or re-provision the guest",
                    )
                )

"""The run's VMs: settings resolved once, one :class:`VmHandle` per planned configuration, booted lazily.

This is the thin I/O layer between pytest (``plugin.py``) and the machine (``qemu/machine.py``): it resolves
the options (the reference guest and QEMU when none are given), probes QEMU once, and for each VM wires a
:class:`VmSession` to its marker stream, host services, reactions and artifacts. A VM is booted by the first
test that needs it and stopped right after the last one (or at session end), so a run never holds more VMs
than it is using.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import options as opts
from .actions import vm_reactions
from .actions.base import ActionContext, Reactor
from .artifacts import ArtifactDir
from .checks import GuestCheck, lookup
from .config import DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT, QemuCommand, RunOptions, Vectors, VmConfig
from .errors import QEMU_NOT_FOUND, UDP_PORT_MISMATCH, AeroConfigError, AeroError, AeroFailure
from .host.portlock import PortLocks
from .host.services import HostServices
from .markers import HostMarker, Marker, MarkerStream
from .plan import Plan, guest_args, required_checks
from .qemu.accel import kvm_device_usable, resolve_accel
from .qemu.argv import RuntimePaths, build_argv, format_argv, prepare_overlay
from .qemu.caps import Caps, probe_cached
from .qemu.machine import QmpChannel, VmSession

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


@dataclass(frozen=True)
class Settings:
    """Everything the options say, validated: RunOptions plus what only the plugin layer uses."""

    options: RunOptions
    vectors: Vectors
    silence_timeout_s: float
    guest_extra_args: tuple[str, ...]
    blk_resize_delta: int
    reference_guest: bool
    follow_fd: int | None = None  # where --follow-serial writes (the terminal, past pytest's capture)


def _resolve_qemu(value: str | None) -> QemuCommand:
    if value is None or value == "":
        from .refenv.qemu import ensure_qemu

        return QemuCommand(ensure_qemu())
    found = shutil.which(value) if os.sep not in value else value
    if found is None or not os.path.isfile(found):
        raise AeroConfigError(
            f"--qemu-system={value}: no such QEMU binary",
            fix="install QEMU (apt-get install qemu-system-x86), pass its path, or omit the option to use "
            "the pinned QEMU (aero-virtio-refenv qemu)",
            token=QEMU_NOT_FOUND,
        )
    if not os.access(found, os.X_OK):
        raise AeroConfigError(
            f"--qemu-system={found}: not executable", fix=f"chmod +x {found}", token=QEMU_NOT_FOUND
        )
    return QemuCommand(Path(found).resolve())


def settings_from_config(config: pytest.Config) -> Settings:
    """Validate every option (clear errors naming the option and the fix) and resolve the defaults."""
    raw = opts.collect(config.getoption, config.getini)
    for opt in opts.OPTIONS:
        if opt.choices and raw[opt.ini] is not None and opt.kind == "string":
            opts.parse_choice(opt.flag, str(raw[opt.ini]), opt.choices)
    image = opts.readable_file("--vm-image", raw["vm_image"])
    kernel = opts.readable_file("--vm-kernel", raw["vm_kernel"])
    initrd = opts.readable_file("--vm-initrd", raw["vm_initrd"])
    append = raw["vm_append"] or None
    reference = image is None
    if not reference and raw["vm_direct_boot"] == "on" and kernel is None:
        raise AeroConfigError(
            "--vm-direct-boot=on boots the reference guest's kernel, but --vm-image names another guest",
            fix="give that guest's kernel with --vm-kernel (and --vm-initrd/--vm-append), or drop --vm-direct-boot",
        )
    if reference:
        from .refenv.image import ensure_image

        ref = ensure_image()
        image = ref.disk
        if raw["vm_direct_boot"] == "on" and kernel is None:
            kernel, initrd, append = ref.kernel, ref.initrd, ref.append
    qemu = _resolve_qemu(raw["qemu_system"])
    default_http = 0 if reference else DEFAULT_HTTP_PORT
    default_udp = 0 if reference else DEFAULT_UDP_PORT
    vec = opts.vectors_from(raw)
    artifacts = Path(str(raw["vm_artifacts"])).expanduser()
    run = RunOptions(
        qemu=qemu,
        image=image,
        kernel=kernel,
        initrd=initrd,
        append=append,
        memory_mib=opts.parse_int("--vm-memory", raw["vm_memory"], minimum=16) or 512,
        smp=opts.parse_int("--vm-smp", raw["vm_smp"], minimum=1, maximum=64) or 1,
        machine=str(raw["vm_machine"]),
        accel=raw["vm_accel"],
        timeout_s=opts.parse_seconds("--vm-timeout", raw["vm_timeout"]),
        snapshot=raw["vm_snapshot"] != "off",
        extra_args=tuple(raw["qemu_extra_args"]),
        http_port=opts.parse_port("--vm-http-port", raw["vm_http_port"], default_http),
        udp_port=opts.parse_port("--vm-udp-port", raw["vm_udp_port"], default_udp),
        http_path=opts.parse_http_path(str(raw["vm_http_path"])),
        artifacts_dir=artifacts.resolve(),
        follow_serial=bool(raw["follow_serial"]),
        dry_run=bool(raw["vm_dry_run"]),
    )
    return Settings(
        options=run,
        vectors=Vectors(**vec),
        silence_timeout_s=opts.parse_seconds("--vm-silence-timeout", raw["vm_silence_timeout"]),
        guest_extra_args=tuple(raw["vm_guest_args"]),
        blk_resize_delta=(
            opts.parse_int("--blk-resize-delta-mib", raw["blk_resize_delta_mib"], minimum=1) or 64
        )
        << 20,
        reference_guest=reference,
        follow_fd=terminal_fd(config) if run.follow_serial else None,
    )


class _LateQmp:
    """The QMP executor handed to actions: bound to the VM's QMP channel once the session creates it."""

    def __init__(self) -> None:
        self.channel: QmpChannel | None = None

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        if self.channel is None:
            raise AeroFailure("QEMU_EXITED", f"QMP {cmd!r} before QEMU started")
        return await self.channel.execute(cmd, args)


class _Reactions:
    """Adapts the action Reactor to the session's Reactions protocol (bind + on_marker)."""

    def __init__(
        self, reactor: Reactor, qmp: _LateQmp, extra: Sequence[Callable[[Marker | HostMarker], None]]
    ):
        self.reactor = reactor
        self.qmp = qmp
        self.extra = extra

    def bind(self, qmp: QmpChannel) -> None:
        self.qmp.channel = qmp

    def on_marker(self, item: Marker | HostMarker) -> None:
        for cb in self.extra:
            cb(item)
        self.reactor.on_marker(item)

    async def aclose(self) -> None:
        await self.reactor.cancel()


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


class VmHandle:
    """One booted VM of the run: its session, stream, services and what the tests ask of it."""

    def __init__(self, settings: Settings, config: VmConfig, caps: Caps, accel: str, index: int) -> None:
        self.settings = settings
        self.config = config
        self.caps = caps
        self.accel = accel
        self.artifacts = ArtifactDir(settings.options.artifacts_dir, f"{WORKER}-vm{index}-{config}")
        self.stream = MarkerStream(log_paths=self.artifacts.paths())
        self.services = HostServices(
            http_port=settings.options.http_port,
            udp_port=settings.options.udp_port,
            http_path=settings.options.http_path,
            log_path=self.artifacts.http,
        )
        self.wav_path = self.artifacts.file("audio.wav") if config.snd and config.audio == "wav" else None
        # The snapshot overlay takes the guest's writes: private and temporary, not an artifact.
        self._private = Path(tempfile.mkdtemp(prefix="aero-vm-"))
        self.overlay = self._private / "overlay.qcow2"
        self.image_format = "raw"
        self._qmp = _LateQmp()
        self._pci: dict[str, tuple[int, int]] | None = None
        fixed_ports = (settings.options.http_port, settings.options.udp_port)
        self._port_locks = PortLocks(fixed_ports, settings.options.timeout_s)
        ctx = ActionContext(
            qmp=self._qmp,
            stream=self.stream,
            vm=config,
            caps=caps,
            host_log=self._host_log,
            blk_resize_delta=settings.blk_resize_delta,
        )
        self._reactions = _Reactions(Reactor(ctx, vm_reactions(config)), self._qmp, [self._check_config])
        self._host_log_lock = threading.Lock()
        self.session = VmSession(
            self._argv,
            artifacts=self.artifacts,
            stream=self.stream,
            services=self.services,
            reactions=self._reactions,
            follow_serial=_follower(settings.follow_fd) if settings.follow_fd is not None else None,
            first_output_timeout=settings.silence_timeout_s,
            name=self.artifacts.name,
        )
        self.started_at = 0.0
        self.deadline = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def options(self) -> RunOptions:
        return self.settings.options

    @property
    def http_port(self) -> int:
        return self.services.http_port

    @property
    def udp_port(self) -> int:
        return self.services.udp_port

    def guest_args(self) -> str:
        return guest_args(
            self.config,
            http_port=self.services.http_port,
            udp_port=self.services.udp_port,
            http_path=self.options.http_path,
            extra=self.settings.guest_extra_args,
        )

    def runtime(self, serial: int | str, qmp: int | None) -> RuntimePaths:
        return RuntimePaths(
            serial=serial,  # type: ignore[arg-type]
            qmp=qmp,
            wav_path=self.wav_path,
            guest_args=self.guest_args(),
            accel=self.accel,
            image_format=self.image_format,  # type: ignore[arg-type]
            overlay=self.overlay if self.options.snapshot else None,
        )

    def _argv(self, serial_fd: int, qmp_fd: int) -> list[str]:
        return build_argv(self.options, self.config, self.caps, self.runtime(serial_fd, qmp_fd))

    def start(self) -> None:
        image = self.options.image
        if image is not None and self.options.snapshot:
            self.image_format = prepare_overlay(image, self.overlay)
        elif image is not None:
            from .qemu.argv import detect_image_format

            with open(image, "rb") as fh:
                self.image_format = detect_image_format(fh.read(512))
        # Fixed ports (a Windows guest's) are taken in turn by this user's VMs; ephemeral ones need no lock.
        self._port_locks.acquire()
        self.started_at = time.monotonic()
        self.deadline = self.started_at + self.options.timeout_s
        try:
            self.session.start()
        except BaseException:
            self._port_locks.release()
            raise
        # QEMU holds the overlay open: unlink it now, so no death of ours (SIGKILL, os._exit) can leave it.
        shutil.rmtree(self._private, ignore_errors=True)
        with contextlib.suppress(AeroError):
            self._pci = self._query_pci()

    def stop(self) -> str:
        try:
            return self.session.stop()
        finally:
            self._port_locks.release()
            shutil.rmtree(self._private, ignore_errors=True)
            self._write_timeline()

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

    # -- waits ----------------------------------------------------------------------------------------------
    def remaining(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def wait_final(self, name: str) -> Marker:
        """The check's final marker. INFO ends the wait only for informational checks: a PASS check may
        print INFO progress lines before its verdict."""
        if lookup(name).expect == "info":
            return self.stream.wait_final(name, self.remaining())
        return self.stream.wait_final(name, self.remaining(), statuses=("PASS", "FAIL", "SKIP"))

    def wait_result(self) -> Marker:
        return self.stream.wait_result(self.remaining())

    def wait_config(self) -> Marker:
        return self.stream.wait_for(lambda m: m.kind == "CONFIG", self.remaining(), "the guest's CONFIG line")

    def required_checks(self) -> list[GuestCheck]:
        """Checks that must accompany RESULT|PASS on this VM (see :func:`plan.required_checks`)."""
        return required_checks(self.config)

    # -- host side ------------------------------------------------------------------------------------------
    def serial_tail(self) -> list[str]:
        return self.stream.tail()

    def artifact_paths(self) -> dict[str, Path]:
        return self.artifacts.paths(existing_only=True)

    def host_markers(self) -> list[HostMarker]:
        return [m for m in self.stream.history if isinstance(m, HostMarker)]

    def record_host(self, hm: HostMarker) -> None:
        self.stream.add_host(hm)
        self._host_log(hm.line())

    def _host_log(self, line: str) -> None:
        with self._host_log_lock, open(self.artifacts.host_markers, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def udp_datagrams(self) -> int:
        return sum(1 for d in self.services.datagrams if d.echoed)

    def http_statuses(self) -> list[tuple[str, str, int]]:
        return [(r.method, r.path, r.status) for r in self.services.requests]

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        return self.session.qmp(command, arguments)

    def pci_devices(self) -> dict[str, tuple[int, int]]:
        """qdev id -> (vendor, device) of every PCI function, from QMP ``query-pci`` at boot.

        Read once right after QMP is up and kept: the PCI layout never changes, and a test asking after the
        guest powered off (it does so after RESULT) must still get an answer."""
        if self._pci is None:
            self._pci = self._query_pci()
        return self._pci

    def _query_pci(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}

        def walk(devices: list[dict[str, Any]]) -> None:
            for dev in devices:
                ident = dev.get("id", {})
                qdev = dev.get("qdev_id") or ""
                if qdev:
                    out[qdev] = (int(ident.get("vendor", 0)), int(ident.get("device", 0)))
                bridge = dev.get("pci_bridge", {})
                walk(bridge.get("devices", []))

        for bus in self.qmp("query-pci"):
            walk(bus.get("devices", []))
        return out

    def finish_for_wav(self) -> Path:
        """Wait for the guest's RESULT and for QEMU to exit (a clean exit writes the WAV header)."""
        if self.wav_path is None:
            raise AeroConfigError(
                "this VM has no wav audio backend", fix="mark the test aero_check(audio='wav')"
            )
        self.stream.wait_result(self.remaining())
        if self.session.wait_exit(min(30.0, self.remaining())) is None:
            self.session.stop()  # QMP quit first: still a clean exit, so the header is written
        return self.wav_path

    # -- stream subscribers ---------------------------------------------------------------------------------
    def _check_config(self, item: Marker | HostMarker) -> None:
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


def terminal_fd(config: pytest.Config) -> int:
    """A descriptor of the terminal pytest started on, past its output capture.

    With ``--capture=fd`` (the default) fds 1 and 2 point into capture files during tests; the capture
    manager keeps a duplicate of the original ones (``targetfd_save``), which is where live serial output must
    go. With ``-s`` there is no capture and fd 2 is the terminal itself.
    """
    capman = config.pluginmanager.getplugin("capturemanager")
    multi = getattr(capman, "_global_capturing", None)
    for capture in (getattr(multi, "err", None), getattr(multi, "out", None)):
        saved = getattr(capture, "targetfd_save", None)
        if isinstance(saved, int):
            return os.dup(saved)
    return os.dup(2)


def _follower(fd: int) -> Callable[[str], None]:
    """Echo serial lines live to ``fd`` (see :func:`terminal_fd`), prefixed with the xdist worker."""
    prefix = f"[{WORKER}] " if WORKER != "main" else ""

    def follow(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, f"{prefix}{line}\n".encode(errors="replace"))

    return follow


@dataclass
class PlanContext:
    """The run's settings, plan and (lazily) caps and pool: stashed on the pytest config."""

    settings: Settings
    plan: Plan | None = None
    dry_run_lines: list[str] = field(default_factory=list)
    started_pool: VmPool | None = None
    on_vm_stopped: Callable[[VmConfig, float], None] | None = None  # boot-to-stop seconds (sharding.recorder)
    _caps: Caps | None = None

    def caps(self) -> Caps:
        if self._caps is None:
            self._caps = probe_cached(self.settings.options.qemu)
        return self._caps

    def has_sound(self) -> bool:
        return self.caps().has_device("virtio-sound-pci")

    def no_sound_reason(self) -> str:
        return (
            f"QEMU {self.settings.options.qemu} ({self.caps().version_str}) has no virtio-sound-pci "
            "(needs QEMU >= 8.2; the pinned reference QEMU has it): virtio-snd tests skipped"
        )

    def pool(self) -> VmPool:
        if self.started_pool is None:
            self.started_pool = VmPool(self.settings, self.caps(), on_vm_stopped=self.on_vm_stopped)
        return self.started_pool

    def header_lines(self) -> list[str]:
        o = self.settings.options
        lines = [
            f"aero-virtio: qemu={o.qemu} image={o.image}"
            f"{' (reference guest)' if self.settings.reference_guest else ''} accel={o.accel}",
        ]
        if self.plan is not None:
            lines.append(
                f"aero-virtio: {len(self.plan.configs)} VM(s) planned for {len(self.plan.order)} test(s):"
            )
            lines.extend(f"  vm{i}: {cfg}" for i, cfg in enumerate(self.plan.configs))
        return lines


class VmPool:
    """Boots each planned VM on first use, remembers boot failures, stops VMs after their last test."""

    def __init__(
        self, settings: Settings, caps: Caps, on_vm_stopped: Callable[[VmConfig, float], None] | None = None
    ) -> None:
        self.settings = settings
        self.caps = caps
        self.on_vm_stopped = on_vm_stopped
        self._accel: str | None = None
        self._handles: dict[VmConfig, VmHandle] = {}
        self._failed: dict[VmConfig, AeroError] = {}
        self._released: set[VmConfig] = set()
        self._order: list[VmConfig] = []

    def accel(self) -> str:
        if self._accel is None:
            o = self.settings.options
            kernel = o.kernel
            if o.accel == "auto" and kernel is None and kvm_device_usable():
                from .refenv.image import ensure_image

                kernel = ensure_image().kernel
            from .refenv.cache import cache_root

            self._accel = resolve_accel(o.accel, o.qemu, kernel, cache_root())
        return self._accel

    def get(self, config: VmConfig) -> VmHandle:
        """The running VM for ``config``, booting it now if this is its first test (or if it was stopped
        because other tests ran in between, as after ``--ff`` reordering)."""
        if config in self._failed:
            raise self._failed[config]
        handle = self._handles.get(config)
        if handle is None or config in self._released:
            self._released.discard(config)
            try:
                handle = VmHandle(self.settings, config, self.caps, self.accel(), len(self._order))
                self._order.append(config)
                self._handles[config] = handle
                handle.start()
            except AeroError as exc:
                self._failed[config] = exc
                raise
            except Exception as exc:  # an OSError preparing the overlay, a bug: keep the cause, never retry blind
                failure = AeroFailure(
                    "VM_BOOT_FAILED",
                    f"the VM {config} could not be started: {type(exc).__name__}: {exc}",
                    fix="see the cause above; the VM's artifacts, if any, are under --vm-artifacts",
                )
                self._failed[config] = failure
                raise failure from exc
        return handle

    def release(self, config: VmConfig) -> None:
        """No test needs this VM next: stop it now rather than at session end."""
        handle = self._handles.get(config)
        if handle is not None and config not in self._released:
            self._released.add(config)
            handle.stop()
            self._stopped(config, handle)

    def close_all(self) -> None:
        for config, handle in list(self._handles.items()):
            if config not in self._released:
                self._released.add(config)
                handle.stop()
                self._stopped(config, handle)

    def _stopped(self, config: VmConfig, handle: VmHandle) -> None:
        """Report how long the VM ran, boot to stop: recorded for --vm-shard's balancing (docs/sharding.md).
        A VM that failed to boot says nothing about how long it runs."""
        if self.on_vm_stopped is not None and handle.started_at and config not in self._failed:
            self.on_vm_stopped(config, time.monotonic() - handle.started_at)

    def describe(self, plan: Plan) -> list[str]:
        """Dry run: the QEMU command line of every planned VM (fds shown as placeholders)."""
        lines = []
        for i, config in enumerate(plan.configs):
            handle_opts = self.settings.options
            rt_args = guest_args(
                config,
                http_port=handle_opts.http_port or DEFAULT_HTTP_PORT,
                udp_port=handle_opts.udp_port or DEFAULT_UDP_PORT,
                http_path=handle_opts.http_path,
                extra=self.settings.guest_extra_args,
            )
            snapshot_overlay = Path(f"<artifacts>/vm{i}/overlay.qcow2") if handle_opts.snapshot else None
            rt = RuntimePaths(
                serial=3,
                qmp=4,
                wav_path=Path(f"<artifacts>/vm{i}/audio.wav")
                if config.snd and config.audio == "wav"
                else None,
                guest_args=rt_args,
                accel=self.accel(),
                overlay=snapshot_overlay,
            )
            items = [n for n in plan.order if plan.assignment[n] == config]
            lines.append(f"# vm{i}: {config} ({len(items)} tests)")
            lines.append(format_argv(build_argv(handle_opts, config, self.caps, rt)))
        return lines

    def summary_lines(self) -> list[str]:
        out = []
        for config in self._order:
            h = self._handles[config]
            status = "boot failed" if config in self._failed else (h.session.ended or "running")
            out.append(f"{h.artifacts.dir}  [{status}]")
        return out


__all__ = [
    "PlanContext",
    "Settings",
    "VmHandle",
    "VmPool",
    "settings_from_config",
]

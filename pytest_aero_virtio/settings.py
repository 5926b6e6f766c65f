"""The run's settings: every option validated once, defaults resolved (the reference guest and QEMU).

Why a module of its own: options are read in exactly one place, at collection, and every later layer gets
frozen values (:class:`Settings`, :class:`~pytest_aero_virtio.config.RunOptions`) instead of asking pytest
again. Errors name the option and the fix (:class:`AeroConfigError`), which the plugin turns into a usage
error (exit code 4) before any VM boots.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import options as opts
from .config import DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT, QemuCommand, RunOptions, Vectors
from .errors import QEMU_NOT_FOUND, AeroConfigError
from .preflight import check_artifacts_dir, check_image

__all__ = ["Settings", "check_user_inputs", "resolve_qemu", "settings_from_config"]


@dataclass(frozen=True)
class Settings:
    """Everything the options say, validated: RunOptions plus what only the plugin layer uses."""

    options: RunOptions
    vectors: Vectors
    silence_timeout_s: float
    guest_extra_args: tuple[str, ...]
    blk_resize_delta: int
    reference_guest: bool
    #: ``--vm-replay``: judge this recording instead of booting (no QEMU, no image, no services).
    replay: Path | None = None
    #: ``--vm-provisioning``: ``fw_cfg`` sends the guest its flags and ports each boot; ``baked`` sends nothing.
    provisioning: str = "fw_cfg"
    #: --vm-keep-on-failure: after a failed test, wait for Enter before the VM is stopped.
    keep_on_failure: bool = False
    #: Every VM gets its attach point (a QMP and a console unix socket, VNC): keep-on-failure or --pdb.
    attachable: bool = False


def resolve_qemu(value: str | None) -> QemuCommand:
    """``--qemu-system`` as a usable binary; none given means the pinned reference QEMU (provisioned now)."""
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
        raise AeroConfigError(f"--qemu-system={found}: not executable", fix=f"chmod +x {found}", token=QEMU_NOT_FOUND)
    return QemuCommand(Path(found).resolve())


#: Stands in for what is not resolved: under --vm-replay (nothing boots) or when only checking the options.
_UNRESOLVED_IMAGE = Path("reference.img")
_UNRESOLVED_QEMU = QemuCommand(Path("qemu-system-x86_64"))


def _boot_files(raw: dict[str, Any], provision: bool) -> tuple[Path, Path | None, Path | None, str | None, bool]:
    """(image, kernel, initrd, append, reference guest?): the reference guest when no image is given (built
    only when ``provision``)."""
    image = opts.readable_file("--vm-image", raw["vm_image"])
    kernel = opts.readable_file("--vm-kernel", raw["vm_kernel"])
    initrd = opts.readable_file("--vm-initrd", raw["vm_initrd"])
    append = raw["vm_append"] or None
    direct = raw["vm_direct_boot"] == "on"
    if image is not None:
        if direct and kernel is None:
            raise AeroConfigError(
                "--vm-direct-boot=on boots the reference guest's kernel, but --vm-image names another guest",
                fix="give that guest's kernel with --vm-kernel (and --vm-initrd/--vm-append), or drop --vm-direct-boot",
            )
        check_image("--vm-image", image, direct_kernel=kernel is not None)
        return image, kernel, initrd, append, False
    if not provision:
        return _UNRESOLVED_IMAGE, kernel, initrd, append, True
    from .refenv.image import ensure_image

    ref = ensure_image()
    if direct and kernel is None:
        kernel, initrd, append = ref.kernel, ref.initrd, ref.append
    return ref.disk, kernel, initrd, append, True


def _plain_values(raw: dict[str, Any], told: bool) -> dict[str, Any]:
    """The RunOptions fields that need nothing but parsing (each error names its option). Ports default to
    ephemeral ones only when the guest is ``told`` them."""
    return {
        "memory_mib": opts.parse_int("--vm-memory", raw["vm_memory"], minimum=16) or 512,
        "smp": opts.parse_int("--vm-smp", raw["vm_smp"], minimum=1, maximum=64) or 1,
        "machine": str(raw["vm_machine"]),
        "accel": raw["vm_accel"],
        "timeout_s": opts.parse_seconds("--vm-timeout", raw["vm_timeout"]),
        "snapshot": raw["vm_snapshot"] != "off",
        "extra_args": tuple(raw["qemu_extra_args"]),
        "http_port": opts.parse_port("--vm-http-port", raw["vm_http_port"], 0 if told else DEFAULT_HTTP_PORT),
        "udp_port": opts.parse_port("--vm-udp-port", raw["vm_udp_port"], 0 if told else DEFAULT_UDP_PORT),
        "http_path": opts.parse_http_path(str(raw["vm_http_path"])),
        "follow_serial": bool(raw["vm_follow_serial"]),
        "dry_run": bool(raw["vm_dry_run"]),
    }


def _run_options(raw: dict[str, Any], replay: bool, provision: bool) -> tuple[RunOptions, bool]:
    """RunOptions from the raw values. Ports default to ephemeral ones only when the guest is told them: the
    reference guest provisioned through fw_cfg; a guest with baked provisioning uses the fixed defaults.
    Without ``provision`` the reference guest and the pinned QEMU are left unresolved."""
    given_artifacts = Path(str(raw["vm_artifacts"])).expanduser()
    if replay:  # nothing boots: no QEMU and no image to provision or check, no artifacts written
        image, kernel, initrd, append, reference = _UNRESOLVED_IMAGE, None, None, None, raw["vm_image"] is None
        qemu = _UNRESOLVED_QEMU
        artifacts = given_artifacts.resolve()
    else:
        image, kernel, initrd, append, reference = _boot_files(raw, provision)
        qemu = resolve_qemu(raw["qemu_system"]) if provision or raw["qemu_system"] else _UNRESOLVED_QEMU
        artifacts = check_artifacts_dir("--vm-artifacts", given_artifacts)
    told = reference and raw["vm_provisioning"] == "fw_cfg"
    run = RunOptions(
        qemu=qemu,
        image=image,
        kernel=kernel,
        initrd=initrd,
        append=append,
        artifacts_dir=artifacts,
        **_plain_values(raw, told),
    )
    return run, reference


def _raw_checked(config: pytest.Config) -> dict[str, Any]:
    raw = opts.collect(config)
    for opt in opts.OPTIONS:
        if opt.choices and raw[opt.ini] is not None:
            opts.parse_choice(opt.flag, str(raw[opt.ini]), opt.choices)
    return raw


def check_user_inputs(config: pytest.Config) -> None:
    """Validate what the user gave without provisioning anything (the reference guest and QEMU are not
    resolved): for pytest-xdist's controller, which collects no tests, so a bad option fails the run once, at
    start, instead of in every worker (where xdist reports only that no worker is left)."""
    raw = _raw_checked(config)
    settings = _settings(config, raw, provision=False)
    if settings.replay is None and raw["qemu_system"]:
        from .qemu.caps import probe_cached

        probe_cached(settings.options.qemu)


def settings_from_config(config: pytest.Config) -> Settings:
    """Validate every option (clear errors naming the option and the fix) and resolve the defaults."""
    return _settings(config, _raw_checked(config), provision=True)


def _settings(config: pytest.Config, raw: dict[str, Any], provision: bool) -> Settings:
    replay = Path(str(raw["vm_replay"])).expanduser().resolve() if raw["vm_replay"] else None
    if raw["vm_provisioning"] == "baked" and raw["vm_guest_args"]:
        raise AeroConfigError(
            "--vm-guest-arg cannot reach a guest with --vm-provisioning=baked: nothing is sent to it",
            fix="bake the arguments into the guest's image, or use --vm-provisioning=fw_cfg",
        )
    run, reference = _run_options(raw, replay is not None, provision)
    delta_mib = opts.parse_int("--vm-blk-resize-delta-mib", raw["vm_blk_resize_delta_mib"], minimum=1) or 64
    return Settings(
        options=run,
        vectors=Vectors(**opts.vectors_from(raw)),
        silence_timeout_s=opts.parse_seconds("--vm-silence-timeout", raw["vm_silence_timeout"]),
        guest_extra_args=tuple(raw["vm_guest_args"]),
        blk_resize_delta=delta_mib << 20,
        reference_guest=reference,
        replay=replay,
        provisioning=str(raw["vm_provisioning"]),
        keep_on_failure=bool(raw["vm_keep_on_failure"]),
        attachable=bool(raw["vm_keep_on_failure"]) or bool(getattr(config.option, "usepdb", False)),
    )

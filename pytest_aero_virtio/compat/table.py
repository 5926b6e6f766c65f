"""The old harness's command line, one row per option: the single source of the compatibility mapping.

``invoke_aero_virtio_win7_tests.py`` took about seventy option spellings. Each row of :data:`OLD_OPTIONS`
says, for one option and its aliases, what the compatibility command does with it:

* ``value`` / ``flag``: becomes pytest options of the plugin (:data:`PYTEST_OPTION` names them);
* ``select`` / ``choice``: a requirement; selects the ``vmm_flows`` tests that check it (node ids relative to
  the ``vmm_flows`` directory), on top of the old default set;
* ``copy``: a file the old harness wrote; the matching per-VM artifact is copied there at the end;
* ``refuse``: cannot be honoured; using it is an error that says why and what to do in pytest instead.

The argument parser, the translation, ``--help`` and the table in ``docs/migration.md`` are all generated
from these rows (a test keeps the document in step), so an option's meaning is written exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: The plugin's option names, in one place: the compatibility command emits only these. (Issue 8.7 renamed
#: every plugin option under ``--vm-``/``--qemu-``; a further rename needs an edit here and nowhere else.)
PYTEST_OPTION: dict[str, str] = {
    "qemu": "--qemu-system",
    "image": "--vm-image",
    "memory": "--vm-memory",
    "smp": "--vm-smp",
    "timeout": "--vm-timeout",
    "silence": "--vm-silence-timeout",
    "snapshot": "--vm-snapshot",
    "http_port": "--vm-http-port",
    "udp_port": "--vm-udp-port",
    "http_path": "--vm-http-path",
    "artifacts": "--vm-artifacts",
    "follow": "--vm-follow-serial",
    "dry_run": "--vm-dry-run",
    "msix": "--vm-msix-vectors",
    "blk_vectors": "--vm-blk-vectors",
    "net_vectors": "--vm-net-vectors",
    "input_vectors": "--vm-input-vectors",
    "snd_vectors": "--vm-snd-vectors",
    "resize_delta": "--vm-blk-resize-delta-mib",
    "qemu_arg": "--qemu-extra-arg",
}

#: The test that checks ``RESULT|PASS`` and the per-test markers that must come with it: the old harness's
#: verdict. Its pass is what prints ``PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS``.
RESULT_TEST = "test_selftest.py::test_selftest_result"

#: The marker the compatibility plugin puts on the tests a requirement flag asked for; the selection is
#: ``-m "not aero_opt_in or <this>"``: the old default set plus the requested tests.
REQUIRED_MARKER = "aero_compat_required"
BASE_EXPRESSION = f"not aero_opt_in or {REQUIRED_MARKER}"

VALUE = "{}"  # in PytestArg.value: the old option's value
FLOWS = "vmm_flows"  # test names below are relative to it

Kind = Literal["value", "flag", "select", "choice", "copy", "refuse"]


@dataclass(frozen=True)
class PytestArg:
    """One pytest argument: a plugin option (a :data:`PYTEST_OPTION` key) with the old option's value
    (``VALUE``), a fixed value, or none (``None``: a bare flag)."""

    option: str
    value: str | None = VALUE

    def render(self, given: str | None = None) -> str:
        flag = PYTEST_OPTION[self.option]
        if self.value is None:
            return flag
        return f"{flag}={self.value.replace(VALUE, given or '')}"

    def doc(self, metavar: str | None) -> str:
        return self.render(metavar) if self.value == VALUE else self.render()


@dataclass(frozen=True)
class OldOption:
    """One option of the old harness with its aliases (``flags[0]`` is the name the old help showed)."""

    flags: tuple[str, ...]
    kind: Kind
    note: str
    args: tuple[PytestArg, ...] = ()
    tests: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] | None = None
    artifact: str | None = None
    default: str | None = None
    metavar: str | None = None
    integer: bool = False
    skip_token: str | None = None

    @property
    def name(self) -> str:
        return self.flags[0]

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    def selected(self, value: str | None) -> tuple[str, ...]:
        """The tests this option asks for, given its value (None for a flag that was given)."""
        if self.kind == "select":
            return self.tests
        if self.kind == "choice" and self.choices is not None and value is not None:
            return self.choices.get(value, ())
        return ()


def _sel(flags: tuple[str, ...], tests: tuple[str, ...], note: str, skip_token: str | None = None) -> OldOption:
    return OldOption(flags, "select", note, tests=tests, skip_token=skip_token)


def _refuse(flags: tuple[str, ...], note: str, metavar: str | None = None) -> OldOption:
    return OldOption(flags, "refuse", note, metavar=metavar)


def _with(stem: str, *extra: str) -> tuple[str, ...]:
    """An opt-in requirement's spellings: ``--with-<x>`` and the old ``virtio-`` aliases."""
    return (f"--with-{stem}", f"--with-virtio-{stem}", f"--require-virtio-{stem}", f"--enable-virtio-{stem}", *extra)


_GUEST_FLAG = "; the guest's own flag `{}` is accepted too"
_INPUT_EVENTS = "test_input_events.py::test_virtio_input_events"
_WAV_TEST = "test_snd.py::test_virtio_snd_wav_on_host"
_SND_TESTS = tuple(f"test_snd.py::test_virtio_snd{part}" for part in ("", "_capture", "_duplex"))
_NO_COUNTER_TEST = (
    "no test asserts the virtio-blk recovery counters or miniport flags; pytest: "
    "`vmm_flows/test_blk.py::test_virtio_blk_counters` records what the guest reports as JUnit properties, "
    "assert it in a test of your own"
)


def _vectors(dev: str) -> OldOption:
    return OldOption(
        (f"--virtio-{dev}-vectors", f"--virtio-{dev}-msix-vectors"),
        "value",
        f"MSI-X table size of virtio-{dev} (0 = INTx)",
        args=(PytestArg(f"{dev}_vectors"),),
        metavar="N",
        integer=True,
    )


def _msix(dev: str) -> OldOption:
    return _sel(
        (f"--require-virtio-{dev}-msix", f"--require-{dev}-msix"),
        (f"test_{dev}.py::test_virtio_{dev}_msix",),
        "the guest must report mode=msix (intx when the device's vectors are 0)",
    )


OLD_OPTIONS: tuple[OldOption, ...] = (
    # -- the VM -------------------------------------------------------------------------------------------
    OldOption(
        ("--qemu-system",),
        "value",
        "optional here: without it the pinned QEMU 10 of the reference environment runs",
        args=(PytestArg("qemu"),),
        metavar="PATH",
    ),
    OldOption(
        ("--disk-image",),
        "value",
        "optional here: without it the reference guest runs",
        args=(PytestArg("image"),),
        metavar="PATH",
    ),
    OldOption(
        ("--snapshot",),
        "flag",
        "without it the old harness wrote the image; here a private qcow2 overlay always takes the writes "
        "(pytest: --vm-snapshot=off writes the image)",
        args=(PytestArg("snapshot", "on"),),
    ),
    OldOption(
        ("--memory-mb",),
        "value",
        "the old default is kept",
        args=(PytestArg("memory"),),
        default="2048",
        metavar="MIB",
        integer=True,
    ),
    OldOption(
        ("--smp",), "value", "the old default is kept", args=(PytestArg("smp"),), default="2", metavar="N", integer=True
    ),
    OldOption(
        ("--timeout-seconds",),
        "value",
        "a limit per VM (the default set boots several); the old harness had no separate limit for a silent "
        "guest, so both limits get the value",
        args=(PytestArg("timeout"), PytestArg("silence")),
        default="600",
        metavar="S",
        integer=True,
    ),
    OldOption(
        ("--http-port",),
        "value",
        "default: 18080 for --disk-image, an ephemeral port for the reference guest",
        args=(PytestArg("http_port"),),
        metavar="PORT",
        integer=True,
    ),
    OldOption(
        ("--udp-port",),
        "value",
        "default: 18081 for --disk-image, an ephemeral port for the reference guest",
        args=(PytestArg("udp_port"),),
        metavar="PORT",
        integer=True,
    ),
    OldOption(
        ("--http-path",), "value", "default /aero-virtio-selftest", args=(PytestArg("http_path"),), metavar="PATH"
    ),
    OldOption(("--follow-serial",), "flag", "the guest's serial output, live", args=(PytestArg("follow", None),)),
    OldOption(
        ("--dry-run", "--print-qemu", "--print-qemu-cmd"),
        "flag",
        "prints the QEMU command line of every planned VM and runs nothing",
        args=(PytestArg("dry_run", None),),
    ),
    OldOption(
        ("--virtio-msix-vectors",),
        "value",
        "MSI-X table size of every virtio device",
        args=(PytestArg("msix"),),
        metavar="N",
        integer=True,
    ),
    *(_vectors(dev) for dev in ("blk", "net", "input", "snd")),
    OldOption(
        ("--virtio-disable-msix", "--force-intx", "--intx-only"),
        "flag",
        "vectors=0 on every device: the guest must run on INTx",
        args=(PytestArg("msix", "0"),),
    ),
    OldOption(
        ("--blk-resize-delta-mib",),
        "value",
        "how much the resize reaction grows the disk (64)",
        args=(PytestArg("resize_delta"),),
        metavar="MIB",
        integer=True,
    ),
    # -- files the old harness wrote ------------------------------------------------------------------------
    OldOption(
        ("--serial-log",),
        "copy",
        "the old default is kept; with several VMs the one that checked RESULT goes to PATH, each other one "
        "beside it as `<stem>.vm<N><suffix>`",
        artifact="serial.log",
        default="win7-virtio-serial.log",
        metavar="PATH",
    ),
    OldOption(("--http-log",), "copy", "the host's HTTP and UDP request log", artifact="http.log", metavar="PATH"),
    OldOption(
        ("--virtio-snd-wav-path",),
        "copy",
        "what the guest played, recorded by the wav backend",
        artifact="audio.wav",
        metavar="PATH",
    ),
    # -- requirements: tests on top of the default set --------------------------------------------------------
    _sel(
        ("--with-virtio-snd", "--require-virtio-snd", "--enable-virtio-snd", "--test-snd"),
        _SND_TESTS,
        "playback, capture and duplex must PASS" + _GUEST_FLAG.format("--test-snd"),
    ),
    _sel(
        ("--test-snd-capture",),
        ("test_snd.py::test_virtio_snd_capture",),
        "the guest's own flag: selects the capture test",
    ),
    _sel(
        _with("snd-buffer-limits", "--enable-snd-buffer-limits", "--test-snd-buffer-limits"),
        ("test_snd.py::test_virtio_snd_buffer_limits",),
        "the WASAPI buffer stress test must PASS" + _GUEST_FLAG.format("--test-snd-buffer-limits"),
    ),
    OldOption(
        ("--virtio-snd-audio-backend",),
        "choice",
        "the plugin picks the backend per test: wav for the playback check, none for capture",
        choices={"none": (), "wav": (_WAV_TEST,)},
        metavar="{none,wav}",
    ),
    _sel(
        ("--virtio-snd-verify-wav",),
        (_WAV_TEST,),
        "a silent or wrong recording fails with WAV_CHECK_FAILED (exit code 4)",
    ),
    _sel(
        _with("blk-resize", "--test-blk-resize"),
        ("test_blk.py::test_virtio_blk_resize",),
        "arms the QMP resize for the guest's READY line" + _GUEST_FLAG.format("--test-blk-resize"),
    ),
    _sel(
        _with("blk-reset", "--test-blk-reset"),
        ("test_blk.py::test_virtio_blk_reset",),
        "the reset test must PASS" + _GUEST_FLAG.format("--test-blk-reset"),
    ),
    _sel(("--with-virtio-tablet",), ("test_input.py::test_virtio_input_tablet",), "attaches virtio-tablet-pci"),
    _sel(
        _with("input-events", "--test-input-events"),
        (_INPUT_EVENTS,),
        "arms the QMP keyboard and mouse injection" + _GUEST_FLAG.format("--test-input-events"),
    ),
    _sel(
        _with("input-wheel"),
        (_INPUT_EVENTS, "test_input_events.py::test_virtio_input_wheel"),
        "implies --with-input-events, as before",
    ),
    _sel(
        ("--with-input-events-extended", "--with-input-events-extra", "--test-input-events-extended"),
        (
            _INPUT_EVENTS,
            *(f"test_input_events.py::test_virtio_input_events_{p}" for p in ("modifiers", "buttons", "wheel")),
        ),
        "implies --with-input-events, as before" + _GUEST_FLAG.format("--test-input-events-extended"),
    ),
    _sel(
        _with("input-media-keys", "--test-input-media-keys"),
        ("test_input_events.py::test_virtio_input_media_keys",),
        "arms the QMP media key injection" + _GUEST_FLAG.format("--test-input-media-keys"),
    ),
    _sel(
        _with("input-led", "--test-input-led"),
        ("test_input.py::test_virtio_input_led",),
        "the LED/statusq test must PASS" + _GUEST_FLAG.format("--test-input-led"),
    ),
    _sel(
        _with("input-leds", "--test-input-leds"),
        ("test_input.py::test_virtio_input_leds",),
        "the legacy LED marker must PASS" + _GUEST_FLAG.format("--test-input-leds"),
    ),
    _sel(
        (
            "--with-input-tablet-events",
            "--with-tablet-events",
            "--with-virtio-input-tablet-events",
            "--require-virtio-input-tablet-events",
            "--enable-virtio-input-tablet-events",
            "--test-input-tablet-events",
            "--test-tablet-events",
        ),
        ("test_input_events.py::test_virtio_input_tablet_events",),
        "attaches the tablet and arms the QMP tablet injection" + _GUEST_FLAG.format("--test-input-tablet-events"),
    ),
    _sel(
        _with("net-link-flap", "--test-net-link-flap"),
        ("test_net.py::test_virtio_net_link_flap",),
        "arms the QMP set_link flap" + _GUEST_FLAG.format("--test-net-link-flap"),
    ),
    _sel(
        ("--require-net-csum-offload", "--require-virtio-net-csum-offload"),
        ("test_net.py::test_virtio_net_tx_csum_offloaded",),
        "the test skips when the device offers no TX offload (user networking never does); required here, "
        "that skip fails the run as before",
        skip_token="VIRTIO_NET_CSUM_OFFLOAD_ZERO",
    ),
    _sel(
        ("--require-net-udp-csum-offload", "--require-virtio-net-udp-csum-offload"),
        ("test_net.py::test_virtio_net_udp_csum_offloaded",),
        "as --require-net-csum-offload, for UDP",
        skip_token="VIRTIO_NET_UDP_CSUM_OFFLOAD_ZERO",
    ),
    *(_msix(dev) for dev in ("blk", "net", "input", "snd")),
    _sel(
        ("--require-virtio-input-binding",),
        ("test_input.py::test_virtio_input_binding",),
        "the driver service binding must PASS",
    ),
    _sel(
        ("--qemu-preflight-pci", "--qmp-preflight-pci"),
        tuple(f"test_{d}.py::test_{d}_pci_preflight" for d in ("blk", "net", "input", "snd")),
        "QMP query-pci: vendor 1af4 and the modern device IDs (query-pci has no revision field)",
    ),
    # -- what cannot be honoured --------------------------------------------------------------------------
    _refuse(
        ("--virtio-transitional",),
        "the plugin runs transitional devices only for tests marked aero_vm(transitional=True); "
        "pytest: `vmm_flows/test_selftest.py::test_transitional_pci_ids`",
    ),
    _refuse(
        ("--disable-udp",),
        "the UDP echo is always served and virtio-net-udp must come with RESULT|PASS; pytest: deselect "
        "the test with `-k 'not test_virtio_net_udp'` (test_selftest_result still requires the marker)",
    ),
    _refuse(
        ("--virtio-snd-wav-peak-threshold",),
        "the WAV check is RMS and a dominant 440 Hz, not a peak; pytest: "
        "`vmm_flows/test_snd.py::test_virtio_snd_wav_on_host`, or audio.check_tone in a test of your own",
        metavar="N",
    ),
    _refuse(
        ("--virtio-snd-wav-rms-threshold",),
        "the WAV check's RMS floor is fixed; pytest: audio.check_tone(min_rms=...) in a test of your own",
        metavar="N",
    ),
    _refuse(
        ("--require-intx",),
        "the msix tests check the mode the VM was configured for; pytest: --vm-msix-vectors=0 (old "
        "--force-intx) with the test_virtio_*_msix tests, or `vmm_flows/test_blk.py::test_virtio_blk_intx`",
    ),
    _refuse(
        ("--require-msi",),
        "the msix tests require MSI-X itself, not MSI or MSI-X; pytest: the test_virtio_*_msix tests "
        "(old --require-virtio-<dev>-msix)",
    ),
    _refuse(
        ("--require-expect-blk-msi",),
        "no test reads the guest's provisioning flags back; pytest: provision the guest with --expect-blk-msi "
        "(reference guest: --vm-guest-arg=--expect-blk-msi)",
    ),
    # Six separate options of the old harness, one refusal.
    _refuse(
        (
            "--require-no-blk-recovery",
            "--fail-on-blk-recovery",
            "--require-no-blk-reset-recovery",
            "--fail-on-blk-reset-recovery",
            "--require-no-blk-miniport-flags",
            "--fail-on-blk-miniport-flags",
        ),
        _NO_COUNTER_TEST,
    ),
)


def by_flag() -> dict[str, OldOption]:
    """Every spelling (canonical and alias) to its row; a spelling in two rows is a bug in the table."""
    out: dict[str, OldOption] = {}
    for row in OLD_OPTIONS:
        for flag in row.flags:
            if flag in out:
                raise AssertionError(f"{flag} is in two rows of the compatibility table")
            out[flag] = row
    return out


def mapping_text(row: OldOption) -> str:
    """What the option becomes, in words: the middle column of the table in docs/migration.md."""
    if row.kind in ("value", "flag"):
        text = " ".join(f"`{arg.doc(row.metavar)}`" for arg in row.args)
        return text + (f" (default {row.default})" if row.default is not None else "")
    if row.kind == "select":
        return "selects " + ", ".join(f"`{FLOWS}/{t}`" for t in row.tests)
    if row.kind == "choice":
        assert row.choices is not None
        parts = [
            f"`{v}`: " + (", ".join(f"selects `{FLOWS}/{t}`" for t in ts) or "nothing to select")
            for v, ts in row.choices.items()
        ]
        return "; ".join(parts)
    if row.kind == "copy":
        default = f" (default {row.default})" if row.default is not None else ""
        return f"copies the VM's `{row.artifact}` to {row.metavar}{default}"
    return "refused"


def markdown_rows() -> list[str]:
    """The rows of the migration guide's option table, generated from :data:`OLD_OPTIONS`."""
    rows = ["| old option | here | notes |", "|---|---|---|"]
    for row in OLD_OPTIONS:
        flags = " / ".join(
            f"`{f}`" + (f" {row.metavar}" if i == 0 and row.takes_value else "") for i, f in enumerate(row.flags)
        )
        cells = (flags, mapping_text(row), row.note)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows


if __name__ == "__main__":  # python -m pytest_aero_virtio.compat.table: the table for docs/migration.md
    print("\n".join(markdown_rows()))

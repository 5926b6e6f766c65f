"""pytest hooks only: the options, the markers, the fixtures and the report hooks.

Everything with logic lives elsewhere (options/settings: validation; plan: which VMs; run/pool/vm: their
lifecycle; testing: the assertions; report: what the terminal shows); this module wires them into pytest.
Read top to bottom it is the run: options -> markers -> collection (plan, order, xdist groups) -> fixtures
(boot on first use) -> teardown (stop a VM its next test does not use) -> header and summary.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from . import interrupts, sharding
from . import options as opts
from ._pytest_internals import set_node_id, terminal_fd
from .checks import CATALOG, Device, lookup
from .config import Vectors
from .errors import AeroError, AeroFailure, EvidenceMissing
from .plan import ItemNeeds, PlannedVm, make_plan
from .pool import VmPool
from .report.dryrun import dry_run_lines
from .report.hooks import ObservePlugin
from .report.terminal import header_lines, snapshot_off_lines, summary_lines, terminal_writer
from .run import AeroRun
from .settings import check_user_inputs, settings_from_config
from .stream import MarkerStream
from .testing import AeroDevice, AeroVm, checks_of
from .timeouts import VmTimeouts

_RUN_KEY = pytest.StashKey[AeroRun]()
_VM_KEY = pytest.StashKey[PlannedVm]()
#: xdist's loadgroup scheduler groups tests whose node ids end in the same ``@<group>``.
_GROUP_SUFFIX = "@aero-vm"

MARKERS = (
    "aero_check(*names, audio=None, at_end=False, catalogued=True): the guest checks this test asserts; the plan "
    "attaches the devices, passes the guest's opt-in flags and arms the host reactions they need "
    "(catalogued=False accepts check names the plugin's catalog does not know yet)",
    "aero_vm(vectors=None, transitional=False): run this test on a VM variant (vectors=0 forces INTx; a "
    "Vectors(...) sets them per device); tests with different variants get different VMs",
    "aero_opt_in: set by the plugin on every test whose check needs a guest opt-in flag; "
    "-m 'not aero_opt_in' selects the old harness's default (base) set",
    "virtio_blk: a virtio-blk test",
    "virtio_net: a virtio-net test",
    "virtio_input: a virtio-input test",
    "virtio_snd: a virtio-snd test (needs QEMU >= 8.2 with virtio-sound-pci)",
)


# --------------------------------------------------------------------------------------------------------
# options and configuration
# --------------------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.register(parser)


def pytest_cmdline_main(config: pytest.Config) -> None:
    """Under ``-n`` with xdist's default distribution, switch to ``loadgroup`` so the tests of one VM run on
    one worker (see the node id suffix in :func:`pytest_collection_finish`). An explicit ``--dist`` is kept.

    A plain hook on purpose: xdist's (tryfirst) has turned ``-n`` into ``dist=load`` already, and pytest's
    own implementation (plain, firstresult) ends the chain, so a trylast hook would never run."""
    if getattr(config.option, "numprocesses", None) and (config.getoption("vm_dry_run") or config.getini("vm_dry_run")):
        # A dry run starts nothing: no workers either, so its listing is printed by this process.
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []
        return
    given = [*config.invocation_params.args, *config.getini("addopts"), *os.environ.get("PYTEST_ADDOPTS", "").split()]
    explicit = any(a == "-d" or a.startswith("--dist") for a in given)
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "load" and not explicit:
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker that the controller schedules by group: workers parse the original command
    line, which does not carry the ``loadgroup`` chosen in pytest_cmdline_main."""
    if node.config.option.dist == "loadgroup":
        node.workerinput["aero_loadgroup"] = True


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(sharding, "aero-virtio-sharding")
    # Progress, screenshots, kept VMs, JUnit and HTML evidence: their hooks live in report/hooks.py.
    config.pluginmanager.register(ObservePlugin(config, _RUN_KEY, _VM_KEY), "aero-virtio-observe")
    interrupts.install(config)  # SIGTERM ends the run like Ctrl-C, reported (interrupts.py)
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(VmTimeouts(_uses_vm, _stream_of), "aero-virtio-timeouts")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # The xdist controller collects nothing, and a worker's usage error reaches it only as "no active
        # workers": check what the user gave (an image, a QEMU, the artifacts root) here, once, first.
        try:
            check_user_inputs(config)
        except AeroError as exc:
            raise pytest.UsageError(str(exc)) from None


def _uses_vm(item: pytest.Item) -> bool:
    return _VM_KEY in item.stash


def _stream_of(item: pytest.Item) -> MarkerStream | None:
    """The marker stream of the VM ``item`` runs on, once booted (for pytest-timeout's takeover)."""
    run = item.config.stash.get(_RUN_KEY, None)
    planned = item.stash.get(_VM_KEY, None)
    pool = run.started_pool if run is not None else None
    handle = pool.in_use(planned) if pool is not None and planned is not None else None
    return handle.stream if handle is not None else None


# --------------------------------------------------------------------------------------------------------
# collection: what each test needs, the plan, the order
# --------------------------------------------------------------------------------------------------------


def _needs(item: pytest.Item) -> ItemNeeds | None:
    """An item's needs from its markers; None for tests that use no VM. Bad marker arguments are usage
    errors that name the test."""
    check = item.get_closest_marker("aero_check")
    variant = item.get_closest_marker("aero_vm")
    if check is None and variant is None:
        return None

    def bad(what: str) -> pytest.UsageError:
        return pytest.UsageError(f"{item.nodeid}: {what}")

    names = tuple(check.args) if check is not None else ()
    if not all(isinstance(n, str) and n for n in names):
        raise bad(f"aero_check takes check names as strings, got {names!r}")
    kw: dict[str, Any] = dict(check.kwargs) if check is not None else {}
    vkw: dict[str, Any] = dict(variant.kwargs) if variant is not None else {}
    unknown = (set(kw) - {"audio", "at_end", "catalogued"}) | (set(vkw) - {"vectors", "transitional"})
    if unknown:
        raise bad(f"unknown aero_check/aero_vm argument(s): {', '.join(sorted(unknown))}")
    strangers = [n for n in names if n not in CATALOG]
    if strangers and kw.get("catalogued", True):
        raise bad(
            f"aero_check names {', '.join(map(repr, strangers))}, not in the plugin's catalog of checks; if the "
            "guest really prints it (a newer selftest), say so: @pytest.mark.aero_check(..., catalogued=False)"
        )
    if kw.get("audio") not in (None, "wav", "none"):
        raise bad(f"aero_check(audio=...) must be 'wav' or 'none', got {kw['audio']!r}")
    vectors = vkw.get("vectors")
    try:
        if isinstance(vectors, bool) or not (vectors is None or isinstance(vectors, (int, Vectors))):
            raise bad(f"aero_vm(vectors=...) takes an int or a Vectors, got {vectors!r}")
        if isinstance(vectors, int):
            vectors = Vectors(blk=vectors, net=vectors, input=vectors, snd=vectors)
    except AeroError as exc:
        raise bad(str(exc)) from None
    return ItemNeeds(
        checks=names,
        audio=kw.get("audio"),
        vectors=vectors,
        transitional=bool(vkw.get("transitional", False)),
        at_end=bool(kw.get("at_end", False)),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark opt-in tests ``aero_opt_in`` before ``-m`` deselects (tryfirst), so ``-m "not aero_opt_in"``
    selects the old harness's default set without anyone maintaining the marker by hand."""
    for item in items:
        if any(lookup(n).opt_in for n in checks_of(item)):
            item.add_marker(pytest.mark.aero_opt_in)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the VMs from the final selection and order the items by VM.

    Here rather than in ``pytest_collection_modifyitems``: only now is every deselection and reordering done
    (``-k``, ``-m``, and also ``--lf``/``--ff``/``--nf``, whose hook wrappers run after any plain hook). tryfirst:
    before xdist's worker reports its collection (with our group suffixes) and before the terminal prints it.
    """
    config = session.config
    vm_items = [(item, needs) for item in session.items if (needs := _needs(item)) is not None]
    if not vm_items:
        sharding.split_without_vms(session)
        return
    try:
        run = AeroRun(settings_from_config(config))
        planned: list[tuple[str, ItemNeeds]] = []
        for item, needs in vm_items:
            if any(lookup(n).snd for n in needs.checks) and not run.has_sound():
                item.add_marker(pytest.mark.skip(reason=run.no_sound_reason()))
                continue
            planned.append((item.nodeid, needs))
        run.plan = make_plan(planned, run.settings.vectors, canonical=sharding.canonical_order(session))
        sharding.select(session, run, dict(planned))
        run.say = terminal_writer(terminal_fd(config))
    except AeroError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_RUN_KEY] = run
    _order_and_group(session, run)
    if run.settings.options.dry_run:
        try:
            run.dry_run_lines = dry_run_lines(run)
        except AeroError as exc:
            raise pytest.UsageError(str(exc)) from None
        session.items[:] = []


def _order_and_group(session: pytest.Session, run: AeroRun) -> None:
    """Items of one VM run back to back (each VM boots once); under ``--dist loadgroup`` they share a group."""
    assert run.plan is not None
    config = session.config
    rank = {nodeid: i for i, nodeid in enumerate(run.plan.order)}
    vm_sorted = sorted((item for item in session.items if item.nodeid in rank), key=lambda it: rank[it.nodeid])
    session.items[:] = vm_sorted + [item for item in session.items if item.nodeid not in rank]
    workerinput = getattr(config, "workerinput", {})
    loadgroup = bool(getattr(config.option, "loadgroup", False) or workerinput.get("aero_loadgroup"))
    for item in vm_sorted:
        planned = run.plan.vm_of(item.nodeid)
        item.stash[_VM_KEY] = planned
        if loadgroup and _GROUP_SUFFIX not in item.nodeid:
            set_node_id(item, f"{item.nodeid}{_GROUP_SUFFIX}{planned.index}")


# --------------------------------------------------------------------------------------------------------
# running: reports, teardown
# --------------------------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the xdist controller, drop the ``@aero-vmN`` scheduling suffix before the terminal and JUnit see the
    report: test names stay the same with and without ``-n`` (CI histories key on them)."""
    if _GROUP_SUFFIX in report.nodeid and "PYTEST_XDIST_WORKER" not in os.environ:
        report.nodeid = report.nodeid.split(_GROUP_SUFFIX, 1)[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """An error the plugin raised in a test body becomes one clean report: ``FAIL: <TOKEN>: ...`` with the
    VM's serial tail and artifact paths, once (raised outside the ``except``, so no chained repeat); a replay
    without the evidence a check needs skips it."""
    failure: str | None = None
    skip: str | None = None
    try:
        return (yield)
    except AeroFailure as exc:
        vm = next((v for v in getattr(item, "funcargs", {}).values() if isinstance(v, AeroVm)), None)
        if vm is not None:
            vm.handle.failure_screenshot(item.name)  # first, so the failure text names it among the artifacts
            exc = exc.with_context(vm.handle.serial_tail(), vm.handle.artifact_paths())
        failure = str(exc)
    except AeroError as exc:
        failure = str(exc)
    except EvidenceMissing as exc:
        skip = str(exc)
    if skip is not None:
        pytest.skip(skip)
    pytest.fail(failure or "", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After a test of a VM, stop that VM if the next test does not use it.

    Decided from the actual next item, not from the plan, so a skipped, failed or reordered test never leaves a
    VM running beside the next one (which for a fixed-port guest would wait on its own port lock).
    """
    try:
        yield
    finally:
        run = item.config.stash.get(_RUN_KEY, None)
        planned = item.stash.get(_VM_KEY, None)
        pool = run.started_pool if run is not None else None
        if pool is not None and planned is not None:
            following = nextitem.stash.get(_VM_KEY, None) if nextitem is not None else None
            if following != planned:
                pool.release(planned)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist the controller collects nothing, so it never prints the plan header: it still says, once
    (also under ``-q``), that ``--vm-snapshot=off`` lets the guest write the image."""
    config = session.config
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None and getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        for line in snapshot_off_lines(opts.collect(config)):
            reporter.write_line(line)


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Any, items: list[pytest.Item]
) -> list[str] | None:
    run = config.stash.get(_RUN_KEY, None)
    if run is None:
        return None
    try:
        return header_lines(run, verbose=config.get_verbosity() > 0)
    except AeroError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(_RUN_KEY, None)
    if run is None:
        return
    if run.dry_run_lines:
        terminalreporter.section("aero-virtio dry run: planned QEMU command lines")
        for line in run.dry_run_lines:
            terminalreporter.write_line(line)
        assert run.plan is not None
        # The summary line counts what would run ("7 planned"), not "deselected".
        terminalreporter.stats.setdefault("planned", []).extend(run.plan.order)
    if run.started_pool is not None:
        lines = summary_lines(run.started_pool)
        if lines:
            terminalreporter.section("aero-virtio VMs")
            for line in lines:
                terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(_RUN_KEY, None)
    if run is None:
        return
    if run.started_pool is not None:
        run.started_pool.close_all()
    if run.settings.options.dry_run and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


# --------------------------------------------------------------------------------------------------------
# fixtures: they read like the plan
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aero_pool(request: pytest.FixtureRequest) -> Iterator[VmPool]:
    """The session's VMs, booted lazily one per planned VM and stopped right after their last test."""
    run = request.config.stash.get(_RUN_KEY, None)
    if run is None:
        raise pytest.UsageError("aero_pool is only available to tests marked with aero_check or aero_vm")
    pool = run.pool()
    try:
        yield pool
    finally:
        pool.close_all()


@pytest.fixture
def aero_vm(request: pytest.FixtureRequest, aero_pool: VmPool) -> AeroVm:
    """The VM the plan gave this test (``aero_vm.planned``: its id, devices, guest flags, reactions and why;
    ``aero_vm.plan``: the whole plan), booted on first use with its host services and reactions armed."""
    node = request.node
    assert isinstance(node, pytest.Item)
    planned = node.stash.get(_VM_KEY, None)
    if planned is None:
        pytest.fail(
            f"{node.nodeid} uses a VM fixture but has no VM planned: mark it with "
            "@pytest.mark.aero_check(...) (or aero_vm(...)) so the plan knows what it needs",
            pytrace=False,
        )
    boot_error: AeroError | None = None
    try:
        handle = aero_pool.get(planned)
    except AeroError as exc:
        boot_error = exc
    except EvidenceMissing as exc:
        pytest.skip(str(exc))
    if boot_error is not None:
        # Outside the except block: the report shows the token and the cause, not a chained traceback.
        pytest.fail(str(boot_error), pytrace=False)
    return AeroVm(handle, node, request.config.stash[_RUN_KEY].plan)


def _device_fixture(device: Device, what: str) -> Any:
    """``virtio_<device>``: the test's VM seen through one device group (it asserts that device's checks only;
    its repr names the VM and how the plan configured it)."""

    def fixture(aero_vm: AeroVm) -> AeroDevice:
        return AeroDevice(aero_vm, device)

    fixture.__doc__ = f"The test's VM seen through {what}."
    return pytest.fixture(name=f"virtio_{device}")(fixture)


virtio_blk = _device_fixture("blk", "its virtio-blk disk")
virtio_net = _device_fixture("net", "its virtio-net NIC and the host's HTTP and UDP echo services")
virtio_input = _device_fixture("input", "its virtio keyboard, mouse (and tablet when a selected test needs one)")
virtio_snd = _device_fixture("snd", "its virtio sound device (attached only when a selected test needs it)")

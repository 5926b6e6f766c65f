"""pytest hooks only: the option group, the markers, the fixtures and the report hooks.

Everything with logic lives elsewhere (options: validation; plan: which VMs; pool: their lifecycle;
testing: the assertions); this module wires them into pytest.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any

import pytest

from . import options as opts
from . import sharding
from .checks import lookup
from .config import Vectors, VmConfig
from .errors import AeroError
from .plan import ItemNeeds, Plan, make_plan
from .pool import PlanContext, VmPool, settings_from_config
from .qemu.machine import kill_all
from .testing import AeroDevice, AeroVm

_PLAN_KEY = pytest.StashKey[PlanContext]()
_VM_KEY = pytest.StashKey[VmConfig]()
_SKIPPED_SND = "QEMU {qemu} ({version}) has no virtio-sound-pci (needs QEMU >= 8.2): sound tests skipped"

MARKERS = (
    "aero_check(*names, audio=None, at_end=False): the guest checks this test asserts; the plan attaches the "
    "devices, passes the guest's opt-in flags and arms the host reactions they need",
    "aero_vm(vectors=None, transitional=False): run this test on a VM variant (vectors=0 forces INTx; a "
    "Vectors(...) sets them per device); tests with different variants get different VMs",
    "virtio_blk: a virtio-blk test",
    "virtio_net: a virtio-net test",
    "virtio_input: a virtio-input test",
    "virtio_snd: a virtio-snd test (needs QEMU >= 8.2 with virtio-sound-pci)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(opts.GROUP, opts.GROUP_DESCRIPTION)
    for opt in opts.OPTIONS:
        dest = opt.flag.lstrip("-").replace("-", "_")
        default_text = "" if opt.default is None else f" (default: {opt.default})"
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", dest=dest, default=None, help=opt.help)
            parser.addini(opt.ini, opt.help, type="bool", default=False)
        elif opt.kind == "args":
            group.addoption(
                opt.flag, action="append", dest=dest, default=None, metavar=opt.metavar, help=opt.help
            )
            parser.addini(opt.ini, opt.help, type="args", default=[])
        else:
            group.addoption(
                opt.flag,
                action="store",
                dest=dest,
                default=None,
                metavar=opt.metavar,
                choices=opt.choices,
                help=opt.help + default_text,
            )
            parser.addini(opt.ini, opt.help + default_text, type="string", default="")


def pytest_cmdline_main(config: pytest.Config) -> None:
    """Under ``-n`` with xdist's default distribution, switch to ``loadgroup`` so the tests of one VM run on
    one worker (see the node id suffix in pytest_collection_modifyitems). An explicit ``--dist`` is kept.

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
    if not config.pluginmanager.is_registered(sharding):
        config.pluginmanager.register(sharding, "aero-virtio-shard")
    _kill_qemu_on_sigterm()


def _kill_qemu_on_sigterm() -> None:
    """A SIGTERM to pytest (a CI runner cancelling the job) kills every QEMU at once, then does what it did.

    SIGINT needs nothing: it raises KeyboardInterrupt and the fixtures' teardown stops the VMs. SIGKILL
    cannot be caught: there PR_SET_PDEATHSIG in the QEMU child does the work (see qemu/machine.py).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        kill_all()
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


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
    unknown = (set(kw) - {"audio", "at_end"}) | (set(vkw) - {"vectors", "transitional"})
    if unknown:
        raise bad(f"unknown aero_check/aero_vm argument(s): {', '.join(sorted(unknown))}")
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
def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the VMs from the final selection and order the items by VM.

    Here rather than in ``pytest_collection_modifyitems``: only now is every deselection and reordering done
    (``-k``, ``-m``, and also ``--lf``/``--ff``/``--nf``, whose hook wrappers run after any plain hook). tryfirst:
    before xdist's worker reports its collection (with our group suffixes) and before the terminal prints it.
    """
    config = session.config
    items = session.items
    wanted = [(item, _needs(item)) for item in items]
    vm_items = [(item, needs) for item, needs in wanted if needs is not None]
    if not vm_items:
        sharding.split_without_vms(session)
        return
    try:
        settings = settings_from_config(config)
        ctx = PlanContext(settings=settings)
        planned: list[tuple[str, ItemNeeds]] = []
        for item, needs in vm_items:
            if any(lookup(n).snd for n in needs.checks) and not ctx.has_sound():
                item.add_marker(pytest.mark.skip(reason=ctx.no_sound_reason()))
                continue
            planned.append((item.nodeid, needs))
        plan: Plan = make_plan(planned, default_vectors=settings.vectors)
        plan = sharding.select(session, ctx, planned, plan)
    except AeroError as exc:
        raise pytest.UsageError(str(exc)) from None
    ctx.plan = plan
    config.stash[_PLAN_KEY] = ctx

    rank = {nodeid: i for i, nodeid in enumerate(plan.order)}
    others = [item for item in items if item.nodeid not in rank]
    vm_sorted = sorted((item for item in items if item.nodeid in rank), key=lambda it: rank[it.nodeid])
    items[:] = vm_sorted + others
    vm_index = {cfg: i for i, cfg in enumerate(plan.configs)}
    workerinput = getattr(config, "workerinput", {})
    loadgroup = bool(getattr(config.option, "loadgroup", False) or workerinput.get("aero_loadgroup"))
    for item in vm_sorted:
        vm_config = plan.assignment[item.nodeid]
        item.stash[_VM_KEY] = vm_config
        if loadgroup and "@aero-vm" not in item.nodeid:
            _set_group(item, f"aero-vm{vm_index[vm_config]}")

    if settings.options.dry_run:
        try:
            ctx.dry_run_lines = ctx.pool().describe(plan)
        except AeroError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.hook.pytest_deselected(items=list(items))
        items[:] = []


def _set_group(item: pytest.Item, group: str) -> None:
    """Suffix the node id with ``@group``: pytest-xdist's ``--dist loadgroup`` sends every test whose node id
    ends in the same ``@group`` to one worker, so the tests of one VM share one boot instead of every worker
    booting the same VM. xdist does the same for ``xdist_group`` markers (``item._nodeid``); pytest 9 keeps
    the id in ``item._id`` (a NodeId), where xdist 3.8's assignment no longer lands, so both are handled."""
    new_id = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id  # type: ignore[import-not-found, unused-ignore]

        item._id = coerce_node_id(new_id)  # type: ignore[attr-defined, unused-ignore]
    else:  # pragma: no cover - pytest < 9
        item._nodeid = new_id  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the xdist controller, drop the ``@aero-vmN`` scheduling suffix before the terminal and JUnit see the
    report: test names stay the same with and without ``-n`` (CI histories key on them)."""
    if "@aero-vm" in report.nodeid and "PYTEST_XDIST_WORKER" not in os.environ:
        report.nodeid = report.nodeid.split("@aero-vm", 1)[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """After a test of a VM, stop that VM if the next test does not use it.

    Decided from the actual next item, not from the plan, so a skipped, failed or reordered test never leaves a
    VM running beside the next one (which for a fixed-port guest would wait on its own port lock).
    """
    try:
        yield
    finally:
        ctx = item.config.stash.get(_PLAN_KEY, None)
        vm_config = item.stash.get(_VM_KEY, None)
        pool = ctx.started_pool if ctx is not None else None
        if pool is not None and vm_config is not None:
            following = nextitem.stash.get(_VM_KEY, None) if nextitem is not None else None
            if following != vm_config:
                pool.release(vm_config)


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Any, items: list[pytest.Item]
) -> list[str] | None:
    ctx = config.stash.get(_PLAN_KEY, None)
    if ctx is None:
        return None
    return ctx.header_lines()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    ctx = config.stash.get(_PLAN_KEY, None)
    if ctx is None:
        return
    if ctx.dry_run_lines:
        terminalreporter.section("aero-virtio dry run: planned QEMU command lines")
        for line in ctx.dry_run_lines:
            terminalreporter.write_line(line)
    if ctx.started_pool is not None:
        lines = ctx.started_pool.summary_lines()
        if lines:
            terminalreporter.section("aero-virtio VMs")
            for line in lines:
                terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ctx = session.config.stash.get(_PLAN_KEY, None)
    if ctx is None:
        return
    if ctx.started_pool is not None:
        ctx.started_pool.close_all()
    if ctx.settings.options.dry_run and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(scope="session")
def aero_pool(request: pytest.FixtureRequest) -> Iterator[VmPool]:
    """The session's VMs, booted lazily one per planned configuration and stopped after their last test."""
    ctx = request.config.stash.get(_PLAN_KEY, None)
    if ctx is None:
        raise pytest.UsageError("aero_pool is only available to tests marked with aero_check or aero_vm")
    pool = ctx.pool()
    try:
        yield pool
    finally:
        pool.close_all()


@pytest.fixture
def aero_vm(request: pytest.FixtureRequest, aero_pool: VmPool) -> Iterator[AeroVm]:
    """The VM planned for this test: booted on first use with its host services and reactions armed."""
    node = request.node
    assert isinstance(node, pytest.Item)
    vm_config = node.stash.get(_VM_KEY, None)
    if vm_config is None:
        pytest.fail(
            f"{node.nodeid} uses a VM fixture but has no VM planned: mark it with "
            "@pytest.mark.aero_check(...) (or aero_vm(...)) so the plan knows what it needs",
            pytrace=False,
        )
    boot_error: AeroError | None = None
    try:
        handle = aero_pool.get(vm_config)
    except AeroError as exc:
        boot_error = exc
    if boot_error is not None:
        # Outside the except block: the report shows the token and the cause, not a chained traceback.
        pytest.fail(str(boot_error), pytrace=False)
    yield AeroVm(handle, node)


@pytest.fixture
def virtio_blk(aero_vm: AeroVm) -> AeroDevice:
    """The VM seen through its virtio-blk disk."""
    return AeroDevice(aero_vm, "blk")


@pytest.fixture
def virtio_net(aero_vm: AeroVm) -> AeroDevice:
    """The VM seen through its virtio-net NIC (with the host's HTTP and UDP echo services)."""
    return AeroDevice(aero_vm, "net")


@pytest.fixture
def virtio_input(aero_vm: AeroVm) -> AeroDevice:
    """The VM seen through its virtio keyboard, mouse (and tablet when a selected test needs one)."""
    return AeroDevice(aero_vm, "input")


@pytest.fixture
def virtio_snd(aero_vm: AeroVm) -> AeroDevice:
    """The VM seen through its virtio sound device (attached only when a selected test needs it)."""
    return AeroDevice(aero_vm, "snd")

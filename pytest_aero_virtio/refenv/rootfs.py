"""The base layer of the reference image: Debian packages -> kernel, initramfs and the /usr tree.

``build_base`` fills a cache entry with

- ``vmlinuz``: the Debian kernel as shipped;
- ``initrd.img``: the initramfs that stays the guest's root (zstd): busybox with its applet links, /etc,
  the modules that mount /usr, and ``/init`` (scripts.render_init);
- ``usr/``: the tree the image's erofs /usr is made from: decompressed, unsigned kernel modules, Python 3.13
  (stripped stdlib as sourceless .pyc), alsa-utils and the shared libraries they need.  Its Python also
  compiles the guest layer.

Everything is built as an ordinary user would (no loop mounts, no chroot, no root privileges): the cpio is
written from Python with uid/gid 0 and device nodes in the archive; the erofs image is made ``--all-root``.
"""

from __future__ import annotations

import lzma
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_aero_virtio.refenv import cpio, debs, elf, kmod, scripts
from pytest_aero_virtio.refenv.buildtools import LIBDIRS, PYVER, ImageBuildError, compile_tree, run_captured, run_tool
from pytest_aero_virtio.refenv.cache import progress

# Modules in the initramfs, to mount /usr: the disk, the loop device, erofs (which needs libcrc32c, which
# needs a crc32c implementation it would otherwise ask modprobe for).
ROOT_MODULES = ("virtio_blk", "loop", "crc32c_generic", "erofs")
# Modules in /usr loaded before the selftest starts: fw_cfg, where the guest's args come from.
BOOT_MODULES = ("qemu_fw_cfg",)
# Device drivers in /usr, loaded while the selftest starts, in groups by the virtio device (id as in
# /sys/bus/virtio/devices/*/device) that needs them ("": always): the FAT the blk check writes to (codepage
# 437, iocharset ascii: Debian's vfat defaults) and af_packet (udhcpc's raw socket; built into Debian's
# kernel, then skipped), virtio-net, virtio-input, virtio-sound.
MODULE_GROUPS = (
    ("", ("vfat", "nls_cp437", "nls_ascii", "af_packet")),
    ("0x0001", ("virtio_net",)),
    ("0x0012", ("virtio_input", "evdev")),
    ("0x0019", ("virtio_snd",)),
)
MODULES = (*BOOT_MODULES, *(m for _dev, group in MODULE_GROUPS for m in group))
# Stdlib parts no selftest needs.
STDLIB_DROP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "ensurepip",
        "turtledemo",
        "turtle.py",
        "lib2to3",
        "pydoc_data",
        "sqlite3",
        "dbm",
        "venv",
        "unittest",
        "doctest.py",
        "pydoc.py",
        "__phello__",
        "site-packages",
        "dist-packages",
    }
)
# Extension modules the selftest does not import, dropped with the libraries only they need (OpenSSL alone is
# ~7.6 MB): no TLS, no hashlib (the builtin _sha2 etc. remain), no terminal UI, no compression, no CJK codecs.
EXT_DROP_PREFIXES = (
    "_sqlite3", "_tkinter", "_dbm", "_gdbm", "_test", "xxlimited", "_xx", "_ctypes_test",
    "_ssl", "_hashlib", "_curses", "readline", "_lzma", "_bz2", "_decimal", "_codecs_", "_interp", "_lsprof",
    "_zoneinfo", "_uuid", "xxsubtype",
)  # fmt: skip
ALSA_TOOLS = ("aplay", "arecord", "amixer")
# The initramfs: mount points and writable directories; usr-merge style links into /usr (Debian's binaries
# and the dynamic loader live there), except /bin, which holds busybox and its applets before /usr exists.
INITRD_DIRS = ("dev", "proc", "sys", "tmp", "run", "root", "mnt", "mnt/blk", "usr", "var", "var/tmp", "etc",
               "etc/aero-selftest", "bin", "modules")  # fmt: skip
INITRD_LINKS = (
    ("sbin", "bin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
    ("bin/sh", "busybox"),
    (scripts.BAKED_ARGS, f"/{scripts.GUEST_DIR}/args"),
)
USR_LINKS = (
    ("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ("usr/bin/python3", f"python{PYVER}"),
)


@dataclass(frozen=True)
class Modules:
    """/usr's kernel modules (paths from /, load order): loaded before the selftest, and by device group."""

    boot: list[str]
    groups: list[tuple[str, list[str]]]


def stdlib_keep(relpath: str) -> bool:
    """Whether a path under /usr/lib/python3.13 goes into the image."""
    parts = relpath.split("/")
    if parts[0] in STDLIB_DROP or "__pycache__" in parts or parts[0].startswith("config-"):
        return False
    return not (parts[0] == "lib-dynload" and parts[-1].startswith(EXT_DROP_PREFIXES))


def resolve_libs(roots: dict[str, bytes], find: dict[str, Path]) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Close ``roots`` (name -> ELF bytes) over DT_NEEDED using ``find`` (soname -> file).

    Returns (soname -> file for every library reached, root -> sonames it needs that ``find`` lacks).  The
    caller drops roots with unresolvable needs (an extension module whose library is not in the closure).
    """
    libs: dict[str, Path] = {}
    unresolved: dict[str, list[str]] = {}

    def close(name: str, data: bytes, chain: set[str]) -> list[str]:
        bad: list[str] = []
        for so in elf.needed(data):
            if so in libs or so in chain:
                continue
            if so not in find:
                bad.append(so)
                continue
            libs[so] = find[so]
            bad += close(so, find[so].read_bytes(), chain | {so})
        return bad

    for name, data in roots.items():
        bad = close(name, data, set())
        if bad:
            unresolved[name] = bad
    return libs, unresolved


def busybox_links(applets: Iterable[str], existing: Iterable[str]) -> list[str]:
    """Applet names that get a ``usr/bin/<name> -> busybox`` link (not those a real program already has)."""
    have = set(existing)
    return sorted({a for a in applets if a and "/" not in a and a not in have and a != "busybox"})


# --------------------------------------------------------------------------------------------------------
# Builders (I/O)
# --------------------------------------------------------------------------------------------------------
def _tree_files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file() or p.is_symlink())


def _soname_index(sysroot: Path) -> dict[str, Path]:
    idx: dict[str, Path] = {}
    for d in LIBDIRS:
        dd = sysroot / d
        if dd.is_dir():
            for p in dd.iterdir():
                if ".so" in p.name and p.is_file() and p.name not in idx:
                    idx[p.name] = p
    return idx


def _read_ko(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()


def _module_index(mroot: Path) -> dict[str, Path]:
    """Module name -> file, for the whole tree (one walk over ~4000 files)."""
    return {kmod.normalize(p.name): p for p in mroot.joinpath("kernel").rglob("*.ko*")}


def _modinfo_depends(
    mroot: Path, index: dict[str, Path], wanted: Iterable[str], builtin: Iterable[str]
) -> dict[str, list[str]]:
    """{module path: depends names} for ``wanted`` and what they pull in, read from .modinfo.

    Debian ships no modules.dep; decompressing all ~4000 modules to write one took most of a cold build,
    so only the modules reachable from ``wanted`` are read.
    """
    built = {kmod.normalize(b) for b in builtin}
    out: dict[str, list[str]] = {}
    todo = [kmod.normalize(w) for w in wanted]
    while todo:
        name = todo.pop()
        if name in built or name not in index:
            continue  # load_order reports wanted names that are neither modules nor built in
        rel = index[name].relative_to(mroot).as_posix()
        if rel in out:
            continue
        deps = [d for d in ",".join(elf.modinfo(_read_ko(index[name])).get("depends", [""])).split(",") if d]
        out[rel] = deps
        todo += [kmod.normalize(d) for d in deps]
    return out


def _module_deps(mroot: Path, index: dict[str, Path], builtin: list[str]) -> dict[str, list[str]]:
    """{module path: dependency paths} covering every module the image installs (read once per build)."""
    depfile = mroot / "modules.dep"
    if depfile.is_file():
        return kmod.parse_modules_dep(depfile.read_text())
    wanted = (*ROOT_MODULES, *MODULES)
    return kmod.parse_modules_dep(kmod.render_modules_dep(_modinfo_depends(mroot, index, wanted, builtin)))


def _module_files(
    mroot: Path, dep: dict[str, list[str]], wanted: Sequence[str], builtin: list[str]
) -> list[tuple[str, bytes]]:
    """(path in the kernel tree, decompressed unsigned module) of ``wanted`` and their deps, in load order."""
    return [
        (rel.removesuffix(".xz"), kmod.strip_signature(_read_ko(mroot / rel)))
        for rel in kmod.load_order(dep, wanted, builtin)
    ]


def _install_usr_modules(
    tmp: Path, mroot: Path, kver: str, dep: dict[str, list[str]], wanted: Sequence[str], builtin: list[str]
) -> list[str]:
    """Write ``wanted`` (and their deps) under usr/lib/modules; their paths from / in load order."""
    paths = []
    for rel, data in _module_files(mroot, dep, wanted, builtin):
        path = tmp / "usr/lib/modules" / kver / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path.relative_to(tmp).as_posix())
    return paths


def _install_kernel(staging: Path, tmp: Path, kernel_pkg: str) -> tuple[str, dict[str, bytes], Modules]:
    """vmlinuz and /usr's modules into the entry: (kver, initramfs modules by path, /usr's modules)."""
    moddirs = sorted((staging / "usr/lib/modules").iterdir())
    if not moddirs:
        raise ImageBuildError(f"{kernel_pkg} unpacked no /usr/lib/modules; fix: delete the cache and retry")
    mroot = moddirs[0]
    kver = mroot.name
    shutil.copyfile(staging / "boot" / f"vmlinuz-{kver}", tmp / "vmlinuz")
    builtin_file = mroot / "modules.builtin"
    builtin = builtin_file.read_text().split() if builtin_file.is_file() else []
    dep = _module_deps(mroot, _module_index(mroot), builtin)
    initrd = {
        f"modules/{rel.rsplit('/', 1)[-1]}": data for rel, data in _module_files(mroot, dep, ROOT_MODULES, builtin)
    }
    boot = _install_usr_modules(tmp, mroot, kver, dep, BOOT_MODULES, builtin)
    groups = [(dev, _install_usr_modules(tmp, mroot, kver, dep, w, builtin)) for dev, w in MODULE_GROUPS]
    return kver, initrd, Modules(boot, groups)


def _install_python(staging: Path, root: Path) -> None:
    """The interpreter and the stdlib minus what no selftest needs."""
    pysrc = staging / "usr/lib" / f"python{PYVER}"
    pydst = root / "usr/lib" / f"python{PYVER}"
    for p in _tree_files(pysrc):
        rel = p.relative_to(pysrc).as_posix()
        if stdlib_keep(rel) and not p.is_symlink():
            (pydst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, pydst / rel)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(staging / "usr/bin" / f"python{PYVER}", root / "usr/bin" / f"python{PYVER}")


def _install_tools(staging: Path, root: Path) -> None:
    """The alsa tools and their data, udhcpc's default event script."""
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    for tool in ALSA_TOOLS:
        shutil.copy2((staging / "usr/bin" / tool).resolve(), root / "usr/bin" / tool)
    shutil.copytree(staging / "usr/share/alsa", root / "usr/share/alsa", symlinks=True)
    udhcpc = root / "usr/share/udhcpc/default.script"
    udhcpc.parent.mkdir(parents=True, exist_ok=True)
    udhcpc.write_text(scripts.UDHCPC_SCRIPT)
    udhcpc.chmod(0o755)


def _install_libs(staging: Path, root: Path) -> int:
    """Shared libraries from DT_NEEDED, dropping extension modules whose needs are not in the closure."""
    pydst = root / "usr/lib" / f"python{PYVER}"
    elves: dict[str, bytes] = {}
    for p in [*(root / "usr/bin").iterdir(), *(pydst / "lib-dynload").glob("*.so")]:
        data = p.read_bytes()
        if elf.is_elf(data):
            elves[p.relative_to(root).as_posix()] = data
    by_soname = _soname_index(staging)
    libs, unresolved = resolve_libs(elves, by_soname)
    for name, sonames in unresolved.items():
        if "/lib-dynload/" not in name:
            raise ImageBuildError(f"{name} needs {sonames}, not in the package closure; fix: add their packages")
        progress(f"dropping {name.rsplit('/', 1)[-1]} (needs {', '.join(sonames)})")
        (root / name).unlink()
    if unresolved:
        libs, _ = resolve_libs({k: v for k, v in elves.items() if k not in unresolved}, by_soname)
    libdst = root / LIBDIRS[0]
    libdst.mkdir(parents=True, exist_ok=True)
    for so, src in libs.items():
        shutil.copyfile(src.resolve(), libdst / so)
    shutil.copyfile((staging / LIBDIRS[0] / "ld-linux-x86-64.so.2").resolve(), libdst / "ld-linux-x86-64.so.2")
    (libdst / "ld-linux-x86-64.so.2").chmod(0o755)
    for link, target in USR_LINKS:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / link)
    return len(libs)


def _compile_stdlib(root: Path) -> None:
    """The stdlib ships as sourceless .pyc: half the bytes to read at every boot (tracebacks through the
    stdlib lose their source lines, which a selftest can live with)."""
    pydst = root / "usr/lib" / f"python{PYVER}"
    compile_tree(root, pydst, root, legacy=True)
    for py in pydst.rglob("*.py"):
        py.unlink()
    for cache_dir in list(pydst.rglob("__pycache__")):  # written by compileall's own imports; unusable now
        shutil.rmtree(cache_dir)


def _etc_files(staging: Path) -> dict[str, bytes]:
    files = {name: text.encode() for name, text in scripts.ETC_FILES.items()}
    for name in ("protocols", "services"):  # netbase: socket.getservbyname and friends
        if (staging / "etc" / name).is_file():
            files[f"etc/{name}"] = (staging / "etc" / name).read_bytes()
    return files


def _write_initrd(tmp: Path, staging: Path, modules: dict[str, bytes], usr_modules: Modules) -> None:
    """The initramfs as ``initrd.img`` (zstd: SYSLINUX reads it through BIOS calls).

    busybox's applet links are made here once, not with ``busybox --install`` at every boot.
    """
    busybox = next(p for p in (staging / "usr/bin/busybox", staging / "bin/busybox") if p.is_file())
    applets = run_captured([str(busybox), "--list"]).stdout
    with open(tmp / "initrd.cpio", "wb") as fh:
        w = cpio.CpioWriter(fh)
        for d in INITRD_DIRS:
            w.add_dir(d, 0o1777 if d in ("tmp", "var/tmp") else 0o755)
        w.add_chardev("dev/console", 5, 1)
        w.add_chardev("dev/null", 1, 3, 0o666)
        w.add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for link, target in INITRD_LINKS:
            w.add_symlink(link, target)
        for name in busybox_links(applets.split(), ["sh"]):
            w.add_symlink(f"bin/{name}", "busybox")
        for name, data in {**_etc_files(staging), **modules}.items():
            w.add_file(name, data)
        w.add_file(scripts.DRIVERS_SCRIPT, scripts.render_drivers(usr_modules.groups).encode(), 0o755)
        w.add_file("init", scripts.render_init(list(modules), usr_modules.boot).encode(), 0o755)
        w.close()
    run_tool(["zstd", "-q", "-3", "--rm", str(tmp / "initrd.cpio"), "-o", str(tmp / "initrd.img")])


def build_base(tmp: Path, apt: debs.Apt, infos: list[debs.DebInfo], kernel_pkg: str) -> None:
    """Fill the base entry ``tmp``: vmlinuz, initrd.img, usr/, kver, versions.txt."""
    t0 = time.monotonic()
    files = apt.download(infos)
    staging = tmp / "staging"
    progress(f"unpacking {len(files)} packages for the guest")
    debs.unpack(files, staging)
    kver, initrd_modules, usr_modules = _install_kernel(staging, tmp, kernel_pkg)
    _install_python(staging, tmp)
    _install_tools(staging, tmp)
    nlibs = _install_libs(staging, tmp)
    _compile_stdlib(tmp)
    (tmp / "usr").chmod(0o755)
    _write_initrd(tmp, staging, initrd_modules, usr_modules)
    (tmp / "kver").write_text(kver)
    (tmp / "versions.txt").write_text(debs.versions_text(infos))
    shutil.rmtree(staging)
    nmod = len(initrd_modules) + len(usr_modules.boot) + sum(len(paths) for _dev, paths in usr_modules.groups)
    progress(f"guest /usr and initramfs ready ({nmod} modules, {nlibs} libraries, {time.monotonic() - t0:.1f} s)")

"""The reference guest image: Debian 13 kernel + a layered initramfs + a SYSLINUX FAT disk.

Layers, each a cache entry (cache.py) keyed by a hash of its inputs:

- ``base-<key>``: kernel, decompressed modules, busybox, Python 3.13 (stripped stdlib, precompiled .pyc), alsa
  and ``/init`` as ``base.cpio`` (plus the unpacked ``rootfs/`` whose Python compiles the guest layer).
  Keyed by the resolved package versions and this builder's source.
- ``guest-<key>``: the selftest package and ``/etc/aero-selftest/args`` as ``guest.cpio``, keyed by bytes;
  editing the selftest rebuilds only this layer and the disk.
- ``image-<key>``: ``initrd.img`` (base + guest cpio concatenated; Linux unpacks concatenated archives),
  ``vmlinuz`` and ``disk.img`` (plain FAT, SYSLINUX, no partition table) that SeaBIOS boots from a
  modern-only virtio-blk disk, like a Windows image would be.

Everything is built as an ordinary user would (no loop mounts, no chroot): the cpio is written from Python
with uid/gid 0 and device nodes in the archive, the disk with mkfs.vfat/syslinux/mtools on an image file.
The initramfs is uncompressed: it boots fastest under TCG (shared/REFENV-NOTES.md).
"""

from __future__ import annotations

import lzma
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest_aero_virtio
from pytest_aero_virtio.refenv import cpio, debs, elf, kmod
from pytest_aero_virtio.refenv.cache import cache_root, ensure_entry, progress, source_digest, stable_key

PYVER = "3.13"
BASE_ROOTS = (
    f"python{PYVER}-minimal",
    f"libpython{PYVER}-minimal",
    f"libpython{PYVER}-stdlib",
    "alsa-utils",
    "libasound2t64",
    "libasound2-data",
    "busybox-static",
    "netbase",
)
KERNEL_META = "linux-image-amd64"
MODULES = (
    "virtio_blk",
    "virtio_net",
    "virtio_input",
    "evdev",
    "virtio_snd",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "qemu_fw_cfg",
    "af_packet",  # udhcpc's raw socket; built into Debian's kernel (then skipped), a module elsewhere
)
# Stdlib parts no selftest needs; dropping them saves ~20 MB of initramfs and boot time.
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
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib")
GUEST_DIR = "opt/aero-selftest"
DEFAULT_APPEND = "console=ttyS0 panic=-1 quiet"
MIN_FREE_MIB = 64  # the guest's blk test writes files on the FAT disk (>= 48 MiB asked)


class ImageBuildError(RuntimeError):
    """The reference image could not be built; the message names the cause and the fix."""


@dataclass(frozen=True)
class RefImage:
    """A built reference guest: boot ``disk`` like a Windows image, or kernel/initrd/append directly."""

    disk: Path
    kernel: Path
    initrd: Path
    append: str


# --------------------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------------------
UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script (aero reference guest): configure the interface, default route and resolver.
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
  ip -4 addr flush dev "$interface"
  ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
  for r in $router; do ip -4 route add default via "$r" dev "$interface"; break; done
  : > /etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  ;;
esac
exit 0
"""


SITECUSTOMIZE = '''"""aero reference guest: make the kernel's random generator ready at once.

Under TCG the guest has no RDRAND and few interrupts, so the kernel's CRNG becomes ready only after a
jitter-entropy dance of ~1.5 s that the first reader of /dev/urandom (Python's hash seed, ``import random``)
pays for.  A test VM needs no secret randomness: credit 256 bits once, if the CRNG is not ready yet.
/init sets PYTHONHASHSEED=0 so that this interpreter itself starts without reading /dev/urandom.
"""

import fcntl
import os
import struct
import time


def _seed() -> None:
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
        return  # ready already
    except BlockingIOError:
        pass
    except OSError:
        return
    try:
        noise = os.getrandom(32, 0x0004)  # GRND_INSECURE: never blocks
    except OSError:
        noise = b""
    data = (noise + time.time_ns().to_bytes(8, "little") + os.getpid().to_bytes(4, "little")).ljust(32, b"a")[:32]
    rndaddentropy = 0x40085203
    try:
        fd = os.open("/dev/urandom", os.O_WRONLY)
        try:
            fcntl.ioctl(fd, rndaddentropy, struct.pack("ii", 256, 32) + data)
        finally:
            os.close(fd)
    except OSError:
        pass


_seed()
'''


def render_init(modules: Sequence[str], guest_dir: str = GUEST_DIR) -> str:
    """The guest's /init (busybox sh).

    Order matters for boot time and for the protocol: modules before ``dmesg -n 1`` (so driver chatter does
    not land inside marker lines), ``stty -opost`` so markers end in a bare LF, the selftest's output teed to
    a file so a crash (no RESULT line) is reported as one, and the UART drained (``stty`` = TCSADRAIN)
    before ``poweroff -f`` so the last line is not cut off and QEMU exits by itself.
    """
    insmods = "".join(f"insmod /{m} || echo 'aero-init: insmod {m} failed'\n" for m in modules)
    return f"""#!/usr/bin/busybox sh
# aero-virtio reference guest /init (generated by pytest_aero_virtio.refenv.image; do not edit)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/usr/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /mnt /var/tmp
{insmods}dmesg -n 1
stty -F /dev/ttyS0 -opost
ip link set lo up
export HOME=/root TERM=dumb LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
export PYTHONPATH=/{guest_dir}
cd /
python3 -m aero_selftest </dev/null 2>&1 | tee /run/aero-selftest.log >/dev/ttyS0
if ! grep -q '^AERO_VIRTIO_SELFTEST|RESULT|' /run/aero-selftest.log; then
  echo 'AERO_VIRTIO_SELFTEST|RESULT|FAIL|reason=selftest_crashed' >/dev/ttyS0
fi
sync
stty -F /dev/ttyS0 -opost
sleep 0.1
poweroff -f
"""


def render_syslinux_cfg(append: str) -> str:
    """SYSLINUX config: boot at once (no prompt, no timeout) with the image's fixed command line."""
    return f"DEFAULT aero\nPROMPT 0\nTIMEOUT 0\nLABEL aero\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {append}\n"


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


# --------------------------------------------------------------------------------------------------------
# Builders (I/O)
# --------------------------------------------------------------------------------------------------------
def _builder_sources() -> list[Path]:
    here = Path(__file__).parent
    return [here / n for n in ("image.py", "cpio.py", "elf.py", "kmod.py", "debs.py")]


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


def _add_parents(w: cpio.CpioWriter, path: str) -> None:
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in w.names:
            w.add_dir(d)


def _add_tree(w: cpio.CpioWriter, src: Path, dest: str) -> None:
    """Add a directory tree (files, symlinks, dirs) under ``dest``, keeping file modes."""
    for p in [src, *sorted(src.rglob("*"))]:
        rel = p.relative_to(src).as_posix()
        name = dest if rel == "." else f"{dest}/{rel}"
        _add_parents(w, name)
        if p.is_symlink():
            w.add_symlink(name, os.readlink(p))
        elif p.is_dir():
            if name not in w.names:
                w.add_dir(name)
        else:
            w.add_file(name, p.read_bytes(), stat.S_IMODE(p.stat().st_mode))


def _guest_python(rootfs: Path) -> list[str]:
    """argv prefix that runs the *guest's* python3.13 on the host through its own loader."""
    lib = rootfs / LIBDIRS[0]
    return [
        str(lib / "ld-linux-x86-64.so.2"),
        "--library-path",
        str(lib),
        str(rootfs / "usr/bin" / f"python{PYVER}"),
    ]


def _compile(rootfs: Path, target: Path, strip_prefix: Path, legacy: bool = False) -> None:
    """Precompile .pyc in one process (``-j0`` re-execs the wrong binary through the loader).

    ``legacy`` writes ``x.pyc`` next to ``x.py`` (importable without the source, which the caller then
    deletes); otherwise ``__pycache__`` with unchecked hashes, so the guest never stats or re-hashes sources.
    """
    proc = subprocess.run(
        [
            *_guest_python(rootfs),
            "-I",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(strip_prefix),
            "-p",
            "/",
            *(["-b"] if legacy else []),
            str(target),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONHOME": str(rootfs / "usr"), "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    if proc.returncode != 0:
        raise ImageBuildError(f"compileall failed in {target}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")


def _read_ko(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()


def _modinfo_depends(mroot: Path, wanted: Iterable[str], builtin: Iterable[str]) -> dict[str, list[str]]:
    """{module path: depends names} for ``wanted`` and what they pull in, read from .modinfo.

    Debian ships no modules.dep; decompressing all ~4000 modules to write one took most of a cold build,
    so only the modules reachable from ``wanted`` are read.
    """
    index = {kmod.normalize(p.name): p for p in mroot.joinpath("kernel").rglob("*.ko*")}
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


def _build_base(tmp: Path, apt: debs.Apt, infos: list[debs.DebInfo], kernel_pkg: str) -> None:
    t0 = time.monotonic()
    files = apt.download(infos)
    staging = tmp / "staging"
    progress(f"unpacking {len(files)} packages for the guest")
    debs.unpack(files, staging)
    rootfs = tmp / "rootfs"

    # Kernel and modules.
    moddirs = sorted((staging / "usr/lib/modules").iterdir())
    if not moddirs:
        raise ImageBuildError(f"{kernel_pkg} unpacked no /usr/lib/modules; fix: delete the cache and retry")
    kver = moddirs[0].name
    vmlinuz = staging / "boot" / f"vmlinuz-{kver}"
    shutil.copyfile(vmlinuz, tmp / "vmlinuz")
    mroot = moddirs[0]
    builtin_file = mroot / "modules.builtin"
    builtin = builtin_file.read_text().split() if builtin_file.is_file() else []
    depfile = mroot / "modules.dep"
    if depfile.is_file():
        dep = kmod.parse_modules_dep(depfile.read_text())
    else:
        dep = kmod.parse_modules_dep(kmod.render_modules_dep(_modinfo_depends(mroot, MODULES, builtin)))
    order = kmod.load_order(dep, MODULES, builtin)
    mod_paths = []
    for rel in order:
        src = mroot / rel
        data = kmod.strip_signature(_read_ko(src))
        out_rel = f"usr/lib/modules/{kver}/{rel.removesuffix('.xz')}"
        (rootfs / out_rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / out_rel).write_bytes(data)
        mod_paths.append(out_rel)

    # Python: interpreter, stripped stdlib, extension modules whose libraries we can ship.
    pysrc = staging / "usr/lib" / f"python{PYVER}"
    pydst = rootfs / "usr/lib" / f"python{PYVER}"
    for p in _tree_files(pysrc):
        rel = p.relative_to(pysrc).as_posix()
        if stdlib_keep(rel) and not p.is_symlink():
            (pydst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, pydst / rel)
    (rootfs / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(staging / "usr/bin" / f"python{PYVER}", rootfs / "usr/bin" / f"python{PYVER}")
    busybox = next(p for p in (staging / "usr/bin/busybox", staging / "bin/busybox") if p.is_file())
    shutil.copy2(busybox, rootfs / "usr/bin/busybox")
    for tool in ALSA_TOOLS:
        src = staging / "usr/bin" / tool
        shutil.copy2(src.resolve(), rootfs / "usr/bin" / tool)
    shutil.copytree(staging / "usr/share/alsa", rootfs / "usr/share/alsa", symlinks=True)
    for f in ("protocols", "services"):
        if (staging / "etc" / f).is_file():
            (rootfs / "etc").mkdir(exist_ok=True)
            shutil.copy2(staging / "etc" / f, rootfs / "etc" / f)

    # Shared libraries from DT_NEEDED, dropping extension modules whose needs are not in the closure.
    elves: dict[str, bytes] = {}
    for p in [*(rootfs / "usr/bin").iterdir(), *(pydst / "lib-dynload").glob("*.so")]:
        data = p.read_bytes()
        if elf.is_elf(data):
            elves[p.relative_to(rootfs).as_posix()] = data
    libs, unresolved = resolve_libs(elves, _soname_index(staging))
    for name, sonames in unresolved.items():
        if "/lib-dynload/" not in name:
            raise ImageBuildError(f"{name} needs {sonames}, not in the package closure; fix: add their packages")
        progress(f"dropping {name.rsplit('/', 1)[-1]} (needs {', '.join(sonames)})")
        (rootfs / name).unlink()
    if unresolved:
        libs, _ = resolve_libs({k: v for k, v in elves.items() if k not in unresolved}, _soname_index(staging))
    libdst = rootfs / LIBDIRS[0]
    libdst.mkdir(parents=True, exist_ok=True)
    for so, src in libs.items():
        shutil.copyfile(src.resolve(), libdst / so)
    ldso = staging / LIBDIRS[0] / "ld-linux-x86-64.so.2"
    shutil.copyfile(ldso.resolve(), libdst / "ld-linux-x86-64.so.2")
    (libdst / "ld-linux-x86-64.so.2").chmod(0o755)

    (pydst / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # The stdlib ships as sourceless .pyc: half the bytes to load and unpack at every boot (tracebacks
    # through the stdlib lose their source lines, which a selftest can live with).
    _compile(rootfs, pydst, rootfs, legacy=True)
    for py in pydst.rglob("*.py"):
        py.unlink()
    for cache_dir in list(pydst.rglob("__pycache__")):  # written by compileall's own imports; unusable now
        shutil.rmtree(cache_dir)
    progress(f"guest rootfs ready ({len(order)} modules, {len(libs)} libraries, {time.monotonic() - t0:.1f} s)")

    # The archive.
    init = render_init(mod_paths)
    with open(tmp / "base.cpio", "wb") as fh:
        w = cpio.CpioWriter(fh)
        for d in (
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "root",
            "mnt",
            "etc",
            "usr",
            "usr/lib64",
            "var",
            "var/tmp",
        ):
            w.add_dir(d, 0o1777 if d in ("tmp", "var/tmp") else 0o755)
        w.add_chardev("dev/console", 5, 1)
        w.add_chardev("dev/null", 1, 3, 0o666)
        for link, target in (
            ("bin", "usr/bin"),
            ("sbin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ):
            w.add_symlink(link, target)
        for top in sorted(rootfs.iterdir()):
            _add_tree(w, top, top.name)
        w.add_symlink("usr/sbin", "bin")
        w.add_symlink("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        w.add_symlink("usr/bin/python3", f"python{PYVER}")
        w.add_file("init", init.encode(), 0o755)
        extras = {
            "etc/hostname": b"aero-ref\n",
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
            "etc/group": b"root:x:0:\naudio:x:29:\n",
            "etc/hosts": b"127.0.0.1 localhost aero-ref\n",
            "etc/resolv.conf": b"nameserver 10.0.2.3\n",
        }
        for name, data in extras.items():
            w.add_file(name, data)
        _add_parents(w, "usr/share/udhcpc/default.script")
        w.add_file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
        w.close()
    (tmp / "kver").write_text(kver)
    (tmp / "versions.txt").write_text(debs.versions_text(infos))
    shutil.rmtree(staging)


def _build_guest(tmp: Path, selftest: Path, baked_args: str, rootfs: Path) -> None:
    pkg = tmp / "src" / "aero_selftest"
    shutil.copytree(selftest, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _compile(rootfs, pkg, tmp / "src")
    with open(tmp / "guest.cpio", "wb") as fh:
        w = cpio.CpioWriter(fh, first_ino=1 << 24)
        w.add_dir(GUEST_DIR.split("/")[0])  # an existing dir again is fine for the kernel's unpacker
        _add_tree(w, pkg, f"{GUEST_DIR}/aero_selftest")
        w.add_dir("etc/aero-selftest")
        w.add_file("etc/aero-selftest/args", baked_args.encode())
        w.close()
    shutil.rmtree(tmp / "src")


def _run_tool(argv: list[str], env: dict[str, str] | None = None) -> None:
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} not found; fix: run scripts/setup-host as root (installs it)")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"{shlex.join(argv)} failed: {proc.stderr.strip()[-1500:]}")


def _build_image(tmp: Path, base: Path, guest: Path, append: str) -> None:
    shutil.copyfile(base / "vmlinuz", tmp / "vmlinuz")
    with open(tmp / "initrd.cpio", "wb") as out:
        for part in (base / "base.cpio", guest / "guest.cpio"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    # zstd -3: ~0.3 s here, and the initrd shrinks from ~46 to ~15 MB. SYSLINUX reads it through BIOS disk
    # calls, which are slow under TCG: a disk boot reaches its first marker ~1.5 s sooner than uncompressed
    # (direct kernel boot gains little: the kernel's zstd unpack costs about what the smaller load saves).
    _run_tool(["zstd", "-q", "-3", "-T0", "--rm", str(tmp / "initrd.cpio"), "-o", str(tmp / "initrd.img")])
    (tmp / "append").write_text(append)
    (tmp / "layers").write_text(f"{base.name}\n{guest.name}\n")  # what `aero-virtio-refenv clean` keeps
    payload = (tmp / "vmlinuz").stat().st_size + (tmp / "initrd.img").stat().st_size
    kib = ((payload >> 10) + (MIN_FREE_MIB + 8) * 1024 + 1023) // 1024 * 1024
    disk = tmp / "disk.img"
    _run_tool(["mkfs.vfat", "-n", "AEROREF", "-C", str(disk), str(kib)])
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    _run_tool(["syslinux", "--install", str(disk)], env)
    (tmp / "syslinux.cfg").write_text(render_syslinux_cfg(append))
    _run_tool(
        [
            "mcopy",
            "-i",
            str(disk),
            str(tmp / "syslinux.cfg"),
            str(tmp / "vmlinuz"),
            str(tmp / "initrd.img"),
            "::",
        ],
        env,
    )


def default_selftest_dir() -> Path:
    """The guest selftest package next to the plugin (refguest/aero_selftest), or the test placeholder.

    The placeholder (tests/refenv/placeholder/aero_selftest) exists so the image can be proven to boot before
    the real selftest has an entry point.
    """
    repo = Path(pytest_aero_virtio.__file__).resolve().parent.parent
    real = repo / "refguest" / "aero_selftest"
    if (real / "__main__.py").is_file():
        return real
    placeholder = repo / "tests" / "refenv" / "placeholder" / "aero_selftest"
    if (placeholder / "__main__.py").is_file():
        progress(f"{real}/__main__.py missing: using the placeholder selftest {placeholder}")
        return placeholder
    raise ImageBuildError(f"no guest selftest at {real}; fix: run from a checkout of pytest-aero-virtio")


def _files_digest(base: Path) -> list[tuple[str, bytes]]:
    return [
        (f"file:{p.relative_to(base).as_posix()}", p.read_bytes())
        for p in _tree_files(base)
        if "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def ensure_image(
    root: Path | None = None,
    selftest_dir: Path | None = None,
    baked_args: str = "",
    append: str = DEFAULT_APPEND,
) -> RefImage:
    """Build (if needed) and return the reference guest image.

    A warm call reads only small files (resolution memo, the selftest sources) and stats three entries.
    ``baked_args`` land in /etc/aero-selftest/args (fw_cfg ``opt/aero/args`` overrides them per run).
    """
    root = root or cache_root()
    apt = debs.Apt(root)
    infos = apt.resolve("image-base", BASE_ROOTS, metas=(KERNEL_META,))
    kernel_pkg = infos[-1].package
    base_key = stable_key(
        [
            ("versions", debs.versions_text(infos)),
            ("builder", source_digest(_builder_sources())),
            ("modules", " ".join(MODULES)),
        ]
    )
    base = ensure_entry(root, "base", base_key, lambda tmp, _f: _build_base(tmp, apt, infos, kernel_pkg))

    selftest = selftest_dir or default_selftest_dir()
    guest_key = stable_key(
        [
            *_files_digest(selftest),
            ("args", baked_args),
            ("base", base_key),
            ("builder", Path(__file__).read_bytes()),
        ]
    )
    guest = ensure_entry(
        root, "guest", guest_key, lambda tmp, _f: _build_guest(tmp, selftest, baked_args, base / "rootfs")
    )

    image_key = stable_key([("base", base_key), ("guest", guest_key), ("append", append)])
    image = ensure_entry(root, "image", image_key, lambda tmp, _f: _build_image(tmp, base, guest, append))
    return RefImage(disk=image / "disk.img", kernel=image / "vmlinuz", initrd=image / "initrd.img", append=append)


def image_layers(img: RefImage) -> list[Path]:
    """The entries an image is made of (its own, base, guest), for pruning old entries."""
    entry = img.disk.parent
    names = (entry / "layers").read_text().split() if (entry / "layers").is_file() else []
    return [entry, *(entry.parent / n for n in names)]


def iter_entries(root: Path, kinds: Iterable[str] = ("base", "guest", "image")) -> list[Path]:
    """Existing entries of the given kinds (for cleanup tools and tests)."""
    return sorted(p for k in kinds for p in root.glob(f"{k}-*") if p.is_dir())


__all__ = ["DEFAULT_APPEND", "ImageBuildError", "RefImage", "ensure_image"]

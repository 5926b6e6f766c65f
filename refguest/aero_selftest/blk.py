"""virtio-blk checks: file I/O on the virtio disk, MSI-X routing, counters, runtime resize, driver reset.

The disk is the first virtio_blk disk (the boot disk of the reference image: an MBR disk whose first
partition is a FAT filesystem; the host runs it with snapshot=on), its first FAT filesystem (a partition,
or the whole disk for images without a partition table) mounted read-write at /mnt/blk unless already
mounted; ``--blk-root=DIR`` names a directory on a virtio disk instead.  Every read is proven to come from
the device: the page cache is dropped after fsync, and the disk's /sys/block/<disk>/stat sector counters
must grow by at least the bytes written and read.

The reference image's root filesystem is a read-only image on the same disk, read through a read-only
loop device.  Before the reset check unbinds the disk's driver, :func:`move_loops_to_ram` copies every
loop device's backing partition on that disk into /run and switches the loop device to the copy
(``LOOP_CHANGE_FD``), so the running system never reads from the disk while it is gone.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from . import irq, sysfs
from .config import Config
from .markers import Reporter
from .pure import mib_per_s
from .record import record

MOUNTPOINT = Path("/mnt/blk")
TEST_FILE = "aero-selftest.bin"
IO_BYTES = 4 * 1024 * 1024
CHUNK = 256 * 1024
RESIZE_TIMEOUT_S = 60.0
RESIZE_POLL_S = 0.1
LOOP_CHANGE_FD = 0x4C06  # <linux/loop.h>
RAM_COPY_DIR = Path("/run")

NAMES = ("virtio-blk", "virtio-blk-msix", "virtio-blk-counters", "virtio-blk-resize", "virtio-blk-reset")

# /sys/block/<disk>/stat columns (Documentation/block/stat.rst)
STAT_FIELDS = (
    "read_ios",
    "read_merges",
    "read_sectors",
    "read_ticks",
    "write_ios",
    "write_merges",
    "write_sectors",
    "write_ticks",
    "in_flight",
    "io_ticks",
    "time_in_queue",
    "discard_ios",
    "discard_merges",
    "discard_sectors",
    "discard_ticks",
    "flush_ios",
    "flush_ticks",
)


def parse_stat(text: str) -> dict[str, int]:
    """/sys/block/<disk>/stat -> named counters (older kernels have fewer columns)."""
    return {name: int(v) for name, v in zip(STAT_FIELDS, text.split(), strict=False)}


def stat_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


@record
class Disk:
    name: str  # "vda"
    dev: str  # "virtio0"
    root: Path  # directory the test files go to
    mounted_by_us: bool

    @property
    def sys(self) -> Path:
        return Path("/sys/block") / self.name

    def stat(self) -> dict[str, int]:
        return parse_stat(sysfs.read(self.sys / "stat"))

    def size_bytes(self) -> int:
        return int(sysfs.read(self.sys / "size", "0")) * 512


def virtio_disks() -> list[tuple[str, str]]:
    """(disk name, virtioN) of every disk bound to virtio_blk."""
    out: list[tuple[str, str]] = []
    for dev in sysfs.virtio_devices("virtio_blk"):
        try:
            names = sorted(os.listdir(sysfs.VIRTIO_BUS / "devices" / dev / "block"))
        except OSError:
            continue
        out.extend((n, dev) for n in names)
    return out


def partitions(name: str, sys_block: Path = Path("/sys/block")) -> list[str]:
    """Partition names of disk ``name`` (vda1, vda2, ...) in partition-number order."""
    try:
        entries = os.listdir(sys_block / name)
    except OSError:
        return []
    parts = [e for e in entries if e.startswith(name) and (sys_block / name / e / "partition").exists()]
    return sorted(parts, key=lambda e: int(sysfs.read(sys_block / name / e / "partition", "0") or 0))


def disk_devices(name: str, parts: list[str] | None = None) -> list[str]:
    """/dev paths of a disk's filesystems to try, partitions first, then the whole disk."""
    return [f"/dev/{p}" for p in (partitions(name) if parts is None else parts)] + [f"/dev/{name}"]


def _disk_of_path(path: Path) -> str:
    """Whole-disk name of the block device holding ``path`` (vda for a file on vda or vda1)."""
    st = os.stat(path)
    link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
    if (link / "partition").exists():
        link = link.parent
    return link.name


def _writable(mountpoint: str) -> bool:
    try:
        return not os.statvfs(mountpoint).f_flag & os.ST_RDONLY
    except OSError:
        return False


def rw_mounts(devices: list[str]) -> list[tuple[str, str]]:
    """(device, mountpoint) of the read-write mounts of ``devices`` (a read-only one, such as an image's
    /usr mounted straight from a partition, is neither a place for test files nor something to unmount)."""
    return [(src, mp) for src, mp, _fs in sysfs.mounts() if src in devices and _writable(mp)]


def mount_disk(name: str, mountpoint: Path = MOUNTPOINT) -> tuple[Path, bool]:
    """Where disk ``name`` is mounted read-write (mounting its first FAT at ``mountpoint`` if it is not)."""
    devices = disk_devices(name)
    for _src, mp in rw_mounts(devices):
        if Path(mp) != Path("/"):
            return Path(mp), False
    mountpoint.mkdir(parents=True, exist_ok=True)
    errors = []
    attempts = [["mount", "-t", "vfat", "-o", "rw", dev, str(mountpoint)] for dev in devices]
    attempts += [["mount", "-o", "rw", dev, str(mountpoint)] for dev in devices]
    for argv in attempts:
        cp = sysfs.run(argv, timeout=15)
        if cp.returncode == 0 and _writable(str(mountpoint)):
            return mountpoint, True
        if cp.returncode == 0:  # a read-only file system (the image's erofs /usr): not where files can go
            sysfs.run(["umount", str(mountpoint)], timeout=15)
            errors.append(f"{argv[-2]} is read-only")
            continue
        errors.append(sysfs.out_text(cp))
    raise RuntimeError(
        f"cannot mount a filesystem of /dev/{name} read-write ({'; '.join(errors[-3:])}); give a writable "
        "directory on a virtio disk with --blk-root=PATH"
    )


def find_disk(cfg: Config) -> Disk:
    disks = virtio_disks()
    if not disks:
        raise LookupError("no disk is bound to the virtio_blk driver (is a virtio-blk-pci device attached?)")
    if cfg.blk_root:
        root = Path(cfg.blk_root)
        name = _disk_of_path(root)
        devs = dict(disks)
        if name not in devs:
            raise LookupError(f"--blk-root={root} is on {name}, not on a virtio disk ({sorted(devs)})")
        return Disk(name, devs[name], root, False)
    name, dev = disks[0]
    root, ours = mount_disk(name)
    return Disk(name, dev, root, ours)


def drop_caches() -> None:
    """Make the next read come from the device, not the page cache."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def io_roundtrip(disk: Disk, nbytes: int) -> dict[str, str | int | float]:
    """Write ``nbytes`` of fresh random data, fsync, drop caches, read back and compare; with figures."""
    root = disk.root
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    nbytes = max(CHUNK, min(nbytes, (free // 2) // CHUNK * CHUNK))
    block = os.urandom(CHUNK)
    path = root / TEST_FILE
    before = disk.stat()

    t0 = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(nbytes // CHUNK):
            chunk = i.to_bytes(8, "little") + block[8:]
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    t_write = time.monotonic() - t0
    after_write = disk.stat()

    drop_caches()
    t0 = time.monotonic()
    bad = -1
    got = 0
    with open(path, "rb", buffering=0) as f:
        for i in range(nbytes // CHUNK):
            data = f.read(CHUNK)
            got += len(data)
            if data != i.to_bytes(8, "little") + block[8:] and bad < 0:
                bad = i * CHUNK
    t_read = time.monotonic() - t0
    after_read = disk.stat()

    wd = stat_delta(before, after_write)
    rd = stat_delta(after_write, after_read)
    if got != nbytes:
        raise RuntimeError(f"read back {got} of {nbytes} bytes from {path}")
    if bad >= 0:
        raise RuntimeError(f"data read back from {path} differs from what was written (chunk at {bad})")
    if wd.get("write_sectors", 0) * 512 < nbytes:
        raise RuntimeError(
            f"{disk.name} stat shows {wd.get('write_sectors', 0) * 512} bytes written for {nbytes}: "
            "the write did not reach the virtio disk"
        )
    if rd.get("read_sectors", 0) * 512 < nbytes:
        raise RuntimeError(
            f"{disk.name} stat shows {rd.get('read_sectors', 0) * 512} bytes read for {nbytes}: the read was "
            "served from the cache, not the virtio disk"
        )
    return {
        "write_bytes": nbytes,
        "write_mbps": round(mib_per_s(nbytes, t_write), 2),
        "read_bytes": nbytes,
        "read_mbps": round(mib_per_s(nbytes, t_read), 2),
        "flushes": wd.get("flush_ios", 0),
    }


class BlkState:
    disk: Disk | None = None


def check_io(rep: Reporter, cfg: Config, state: BlkState) -> None:
    name = "virtio-blk"
    try:
        disk = find_disk(cfg)
    except (LookupError, RuntimeError) as exc:
        rep.fail(name, "disk_not_found" if isinstance(exc, LookupError) else "mount_failed", err=str(exc))
        return
    state.disk = disk
    figures = io_roundtrip(disk, IO_BYTES)
    info = irq.read_device_irqs(disk.dev)
    rep.pass_(
        name,
        disk=disk.name,
        dev=disk.dev,
        root=str(disk.root),
        **figures,
        irq_mode=info.mode,
        irq_message_count=info.messages,
        msix_config_vector=info.vector("config"),
        msix_queue_vector=info.first_queue_vector(),
    )


def check_msix(rep: Reporter, cfg: Config, state: BlkState) -> None:
    name = "virtio-blk-msix"
    devs = [d for _n, d in virtio_disks()]
    if not devs:
        rep.skip(name, "device_missing")
        return
    info = irq.read_device_irqs(state.disk.dev if state.disk else devs[0])
    fields = irq.msix_fields(info)
    required = cfg.has("require-blk-msix") or cfg.has("expect-blk-msi")
    if info.mode == "msix":
        rep.pass_(name, **fields)
    elif required:
        flag = "--require-blk-msix" if cfg.has("require-blk-msix") else "--expect-blk-msi"
        rep.fail(name, "not_msix", **fields, required_by=flag)
    else:
        rep.skip(name, "not_msix", **fields)


def check_counters(rep: Reporter, cfg: Config, state: BlkState) -> None:
    name = "virtio-blk-counters"
    disks = virtio_disks()
    if not disks:
        rep.skip(name, "device_missing")
        return
    disk_name, dev = disks[0]
    if state.disk:
        disk_name, dev = state.disk.name, state.disk.dev
    stat = parse_stat(sysfs.read(Path("/sys/block") / disk_name / "stat"))
    keep = ("read_ios", "read_sectors", "write_ios", "write_sectors", "flush_ios", "in_flight")
    info = irq.read_device_irqs(dev)
    rep.info(name, disk=disk_name, **{k: stat[k] for k in keep if k in stat}, interrupts=info.total)


def check_resize(rep: Reporter, cfg: Config, state: BlkState) -> None:
    """READY|disk=<index>|old_bytes=X, then poll the size (every 100 ms, 60 s) until it grows."""
    name = "virtio-blk-resize"
    if not cfg.has("test-blk-resize"):
        rep.skip_flag_not_set(name)
        return
    disks = virtio_disks()
    if not disks:
        rep.fail(name, "device_missing")
        return
    disk_name = state.disk.name if state.disk else disks[0][0]
    size_path = Path("/sys/block") / disk_name / "size"
    index = [n for n, _d in disks].index(disk_name)
    old = int(sysfs.read(size_path, "0")) * 512
    rep.ready(name, disk=index, old_bytes=old, dev=disk_name)
    t0 = time.monotonic()
    while True:
        new = int(sysfs.read(size_path, "0")) * 512
        elapsed_ms = int((time.monotonic() - t0) * 1000)
        if new != old:
            if new > old:
                rep.pass_(name, disk=index, old_bytes=old, new_bytes=new, elapsed_ms=elapsed_ms)
            else:
                rep.fail(name, "shrunk", disk=index, old_bytes=old, new_bytes=new, elapsed_ms=elapsed_ms)
            return
        if elapsed_ms >= RESIZE_TIMEOUT_S * 1000:
            rep.fail(name, "timeout", disk=index, old_bytes=old, new_bytes=new, elapsed_ms=elapsed_ms)
            return
        time.sleep(RESIZE_POLL_S)


def loop_backings(sys_block: Path = Path("/sys/block")) -> list[tuple[str, str]]:
    """(loopN, backing file) of every bound loop device."""
    out = []
    for name in sorted(os.listdir(sys_block)):
        if name.startswith("loop"):
            backing = sysfs.read(sys_block / name / "loop" / "backing_file")
            if backing:
                out.append((name, backing))
    return out


def move_loops_to_ram(disk: str, ram_dir: Path = RAM_COPY_DIR) -> list[str]:
    """Switch every loop device backed by ``disk`` (or one of its partitions) to a copy in RAM.

    ``LOOP_CHANGE_FD`` needs a read-only loop device and a new file of the same size; the copy keeps both
    true.  Returns the loop devices moved.
    """
    devices = set(disk_devices(disk))
    moved = []
    for loop, backing in loop_backings():
        if backing not in devices:
            continue
        copy = ram_dir / f"aero-{loop}.img"
        with open(backing, "rb") as src, open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        new_fd = os.open(copy, os.O_RDONLY)
        try:
            with open(f"/dev/{loop}", "rb") as dev:
                fcntl.ioctl(dev.fileno(), LOOP_CHANGE_FD, new_fd)
        finally:
            os.close(new_fd)
        moved.append(loop)
    return moved


class _ResetFailed(Exception):
    def __init__(self, reason: str, err: str, **fields: str) -> None:
        super().__init__(err)
        self.reason = reason
        self.fields = fields


def _unmount(disk: str) -> list[tuple[str, str]]:
    """Unmount every filesystem of ``disk``; returns (device, mountpoint) pairs to remount later."""
    mounted = rw_mounts(disk_devices(disk))
    os.sync()
    for _src, mp in reversed(mounted):
        cp = sysfs.run(["umount", mp], timeout=15)
        if cp.returncode != 0:
            raise _ResetFailed("umount_failed", sysfs.out_text(cp), mountpoint=mp)
    return mounted


def _rebind(disk: Disk) -> tuple[str, int, int]:
    """Unbind the disk's virtio device from virtio_blk and bind it again: (new disk name, unbind ms, bind ms)."""
    drv = sysfs.VIRTIO_BUS / "drivers" / "virtio_blk"
    t0 = time.monotonic()
    (drv / "unbind").write_text(disk.dev)
    if not sysfs.wait_for(Path("/sys/block") / disk.name, exists=False, timeout=10):
        raise _ResetFailed("unbind_timeout", f"/sys/block/{disk.name} still exists 10 s after unbind")
    unbind_ms = int((time.monotonic() - t0) * 1000)
    t0 = time.monotonic()
    (drv / "bind").write_text(disk.dev)
    block_dir = sysfs.VIRTIO_BUS / "devices" / disk.dev / "block"
    if not sysfs.wait_for(block_dir, exists=True, timeout=10):
        raise _ResetFailed("rebind_timeout", f"{disk.dev} has no block device 10 s after bind")
    new_name = sorted(os.listdir(block_dir))[0]
    if not sysfs.wait_for(Path("/dev") / new_name, exists=True, timeout=5):
        raise _ResetFailed("devnode_missing", f"/dev/{new_name} did not appear after rebind")
    return new_name, unbind_ms, int((time.monotonic() - t0) * 1000)


def _remount(mounted: list[tuple[str, str]], old: str, new: str) -> None:
    """Mount each (device, mountpoint) again, the device renamed from disk ``old`` to disk ``new``."""
    for src, mp in mounted:
        dev = f"/dev/{new}{src[len(f'/dev/{old}') :]}"
        sysfs.wait_for(Path(dev), exists=True, timeout=5)
        cp = sysfs.run(["mount", "-o", "rw", dev, mp], timeout=15)
        if cp.returncode != 0:
            raise _ResetFailed("remount_failed", sysfs.out_text(cp), mountpoint=mp)


def check_reset(rep: Reporter, cfg: Config, state: BlkState) -> None:
    """Unmount, unbind the virtio device from virtio_blk (the driver resets the device on remove), bind it
    again (probe resets and re-negotiates), remount and do I/O again."""
    name = "virtio-blk-reset"
    if not cfg.has("test-blk-reset"):
        rep.skip_flag_not_set(name)
        return
    disk = state.disk
    if disk is None:
        rep.fail(name, "no_disk", err="virtio-blk did not find a usable disk")
        return
    try:
        mounted = _unmount(disk.name)
        move_loops_to_ram(disk.name)
        irq_before = irq.read_device_irqs(disk.dev).total
        new_name, unbind_ms, bind_ms = _rebind(disk)
        _remount(mounted, disk.name, new_name)
    except _ResetFailed as exc:
        rep.fail(name, exc.reason, err=str(exc), **exc.fields)
        return
    new_disk = Disk(new_name, disk.dev, disk.root, disk.mounted_by_us)
    state.disk = new_disk
    figures = io_roundtrip(new_disk, 1024 * 1024)
    irq_after = irq.read_device_irqs(disk.dev).total
    rep.pass_(
        name,
        performed=1,
        disk_before=disk.name,
        disk_after=new_name,
        unbind_ms=unbind_ms,
        bind_ms=bind_ms,
        io_bytes=figures["write_bytes"],
        irqs_before=irq_before,
        irqs_after=irq_after,
    )


def run(rep: Reporter, cfg: Config) -> None:
    state = BlkState()
    for check, name in (
        (check_io, "virtio-blk"),
        (check_msix, "virtio-blk-msix"),
        (check_counters, "virtio-blk-counters"),
        (check_resize, "virtio-blk-resize"),
        (check_reset, "virtio-blk-reset"),
    ):
        with rep.group(name):
            check(rep, cfg, state)
